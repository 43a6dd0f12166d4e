"""Training: building a run (build), state, step functions, optimizers, freezing, hooks, the
workdir (check and lock), resume records, transfer learning, and the loop."""
