"""Metric writers (TensorBoard, JSON lines, console)."""
