"""ann: train a Flax NNX network from a config, sharded and checkpointed, on CPU, GPU or TPU.

The command line is `ann JOB` (`ann --help`). From Python (README, "From Python"), import the
module of each job; `import ann` itself loads none of them, nor JAX:

- `ann.train.loop.train_and_evaluate(config, workdir)`: train (resumes), a `Result`;
  `ann.config.base()` is a config with every key's default;
- `ann.export.export(workdir, out)`: an export of the run's best step, its manifest;
- `ann.artifact.load(export_dir)`: a callable `Model`, dict of arrays in and out;
- `ann.report.write.write_report(ann.report.collect.from_workdir(workdir), splits, out)`;
- `ann.registry.Registry(root)` (`register`, `versions`, ...), `ann.registry.resolve(uri)`;
- `ann.monitor.drift.Reference.from_model(model).detect(inputs, outputs)`: drift;
- `ann.data.load(name, split)`: a data set's split (`.rows(indices)`).
"""

__version__ = "0.1.0"
