"""Task definitions (classification, language modelling, seq2seq, retrieval, forecasting, anomaly
detection, regression). Each module defines one class following `ann.experiment.Experiment`;
`ann.experiment.get` finds them by name (`config.experiment`)."""
