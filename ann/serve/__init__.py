"""Model server: Open Inference Protocol v2 over HTTP, dynamic batching, Prometheus metrics.

`ann serve --model=models:/digits@champion` (see `ann/serve/__main__.py`). Parts, by
responsibility: `settings` (every setting and its default, one flag each), `app` (the route
table and HTTP translation), `dataplane` (the serving logic without HTTP: models, readiness,
infer, the traffic-policy seam), `repository` (loading models: at start, and Triton's repository
extension), `statistics` and `model_config` (Triton's extensions of those names), `errors` (the
one refusal type, with its status), `protocol` (v2 JSON and binary codec), `openapi` (+
`openapi.json`, the static API document),
`batcher` (dynamic batching), `http` (HTTP/1.1 on httptools), `metrics` (Prometheus),
`request_log` (sampled request/response log).
"""
