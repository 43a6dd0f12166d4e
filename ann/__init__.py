"""ann: train a Flax NNX network from a config, sharded and checkpointed, on CPU, GPU or TPU."""

__version__ = "0.1.0"
