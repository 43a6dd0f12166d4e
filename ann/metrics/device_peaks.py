"""Peak dense matrix throughput of common accelerators, for model FLOPs utilization (MFU).

Numbers are the vendors' dense bf16 figures per chip (no sparsity), the convention MFU reports
use. CPUs have no entry: MFU is then not reported.
"""

from __future__ import annotations

# (substring of jax's device_kind, lower-case) -> peak bf16 FLOP/s per device
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("h200", 989e12),
    ("h100", 989e12),
    ("gh200", 989e12),
    ("b200", 2250e12),
    ("a100", 312e12),
    ("a10g", 125e12),
    ("l4", 121e12),
    ("v100", 125e12),
    ("tpu v6", 918e12),
    ("tpu v5p", 459e12),
    ("tpu v5 lite", 197e12),
    ("tpu v5e", 197e12),
    ("tpu v4", 275e12),
    ("tpu v3", 123e12),
)


def peak_flops(device_kind: str) -> float | None:
    """Peak FLOP/s of one device of this kind, or None when unknown (e.g. CPU)."""
    kind = device_kind.lower()
    for name, peak in PEAK_BF16_FLOPS:
        if name in kind:
            return peak
    return None
