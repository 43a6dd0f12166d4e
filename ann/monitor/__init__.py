"""Watching a served model: is today's traffic still the traffic it was trained on?

Modules: `features` (inputs -> one float64 column per feature, the same for the export's
reference sample and the server's traffic), `drift` (Evidently's per-feature drift tests, output
drift and a multivariate MMD test against an export's reference sample), `request_log` (reading
the server's request log), `report` and `__main__` (`ann monitor drift`: the tests on a request
log file, report.json, PNGs and index.html).
"""

# The per-feature drift tests `ann monitor drift --method` takes (ann/monitor/drift.py); here, so
# that the command's flags are defined without importing the tests (SciPy, JAX).
METHODS = ("auto", "psi", "ks", "wasserstein", "jensenshannon")
