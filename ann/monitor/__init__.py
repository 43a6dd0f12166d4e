"""Watching a served model: is today's traffic still the traffic it was trained on?

Modules: `features` (inputs -> one float64 column per feature, the same for the export's
reference sample and the server's traffic), `drift` (Evidently's per-feature drift tests, output
drift and a multivariate MMD test against an export's reference sample), `request_log` (reading
the server's request log), `report` and `__main__` (`ann monitor drift`: the tests on a request
log file, report.json, PNGs and index.html), `feedback` (`ann monitor feedback`: late labels
sent to a server), `performance` (`ann monitor performance`: late labels joined to the request
logs of every replica, offline: realized accuracy and calibration per model version).
"""

# The per-feature drift tests `ann monitor drift --method` takes (ann/monitor/drift.py); here, so
# that the command's flags (and `ann serve`'s) are defined without importing the tests (SciPy,
# JAX).
METHODS = ("auto", "psi", "ks", "wasserstein", "jensenshannon")
# Of them, those that judge a distance against a fixed bound, with no sample size in it:
# sampling noise alone crosses the bound in small windows (see MIN_ROWS; README, Drift).
DISTANCE_METHODS = ("psi", "wasserstein", "jensenshannon")
DISTANCE_ROWS = 1_000  # Evidently's size above which (reference and window) distances are used

# The fewest rows of traffic a drift verdict is given on (`ann monitor drift --min_rows`, `ann
# serve --monitor_min_rows`); fewer: the state "too_few_rows", neither detected nor not. 25 is
# the fewest rows at which the chi-square test's rule of an expected count of at least 5 in
# every bin (Cochran 1954, "Some methods for strengthening the common chi-square tests",
# Biometrics 10:417-451; scipy.stats.chisquare's notes: "A typical rule is that all of the
# observed and expected frequencies should be at least 5") can hold for every feature Evidently's
# defaults test as categorical: up to 5 distinct values (chi-square; the two-proportion z-test's
# normal approximation wants the same 5 a side), 5 x 5 = 25 at equal shares (unequal shares need
# more; below 5 expected a cell the p-value is exact: ann/monitor/drift.py). The distance tests
# (Wasserstein, Jensen-Shannon) have no such rule and are noisy in windows of a hundred rows, so
# they judge only windows and references both above 1,000 rows (README, Drift).
MIN_ROWS = 25
# Multiple-testing corrections of the per-feature p-values (`--correction`, `ann serve
# --monitor_correction`): none (Evidently's: each feature at p < 0.05, so about 5% of unmoved
# features are flagged in every window), Bonferroni (Dunn 1961: family-wise error <= 0.05),
# Benjamini-Hochberg (1995) and Benjamini-Yekutieli (2001) false discovery rate; the names are
# statsmodels' `multipletests` methods.
CORRECTIONS = ("none", "bonferroni", "fdr_bh", "fdr_by")
MIN_TEST_ROWS = 2  # the lowest --min_rows: the tests need 2 rows to run at all (MMD's pairs)
# Drift states (`DriftResult.state`, report.json's result.state, /monitor's drift.state).
STATES = ("detected", "not_detected", "too_few_rows")
# The fewest labelled rows a realized accuracy is given on (`ann serve --monitor_min_labels`,
# `ann monitor performance --min_rows`): at 100, a model of true accuracy 0.95 reads below 0.9
# in 1.1% of samples (binomial); at 25, in 13%; at 2, one wrong label of two reads 0.5.
MIN_LABELS = 100
