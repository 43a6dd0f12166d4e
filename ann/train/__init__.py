"""Training: state, step functions, optimizers, hooks, and the loop."""
