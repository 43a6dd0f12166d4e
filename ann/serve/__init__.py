"""Model server: Open Inference Protocol v2 over HTTP, dynamic batching, Prometheus metrics.

`python -m ann.serve --model=models:/digits@champion` (see `ann/serve/__main__.py`). Parts:
`app` (routes, errors, lifecycle), `protocol` (v2 JSON codec), `batcher` (dynamic batching),
`metrics` (Prometheus), `request_log` (sampled request/response log).
"""
