"""Metrics: classification, retrieval and device peak numbers, computed from arrays."""
