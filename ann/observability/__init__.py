"""Observability as code: Prometheus recording rules and SLO burn-rate alerts (`rules.py`) and
the Grafana dashboard (`dashboard.py`) of served models, written by `ann observability render`
(`__main__.py`)."""
