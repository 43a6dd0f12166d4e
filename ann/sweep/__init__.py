"""Sweeps and hyperparameter search: `ann sweep --config=configs/X.py --workdir=DIR`.

A config file declares its search space in `get_sweep(h)` beside `get_config` (`space.py`).
Each trial is a full `ann train` run in its own workdir (`trials.py`), launched locally
N at a time on disjoint cores (`launch.py`), or by SLURM / Kubernetes (`emit.py`). A grid or
random sweep expands the space; `--search=tpe` asks Optuna (`search.py`), which prunes poor
trials from their evals (`pruning.py`). `results.py` writes the table and the plot.

Importing this package is cheap (no JAX, no Optuna): `ann.main` imports `pruning` from it.
"""
