"""ann's own lines on stderr: `error:`, `warning:` and `note:`, each with this process's name in
a multi-process run (`name_process`). Imports nothing of ann, so that any module can say a
warning (`ann.train.writers`, which `ann.config` reads through) without importing `ann.cli`,
which imports `ann.config`. `ann.cli` passes these on (`cli.warn`, `cli.note`)."""

from __future__ import annotations

import sys

# "process 1 of 2: " in a multi-process run (`name_process`), before each `error:` and
# `warning:` line's message: every process writes its own, often to one merged log.
_process = ""


def name_process(index: int, count: int) -> None:
    """Names this process (`index` of `count`, from 0) in its `error:` and `warning:` lines
    from here on, when `count` > 1."""
    global _process
    _process = f"process {index} of {count}: " if count > 1 else ""


def process_name() -> str:
    """ "process 1 of 2: " in a multi-process run (`name_process`), else ""."""
    return _process


def note(message: str) -> None:
    """What a user should know that is not wrong: the plain line `note: MESSAGE` on stderr,
    flushed at once, as `warn`'s."""
    print(f"note: {_process}{message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A user-facing warning: the plain line `warning: MESSAGE` on stderr, flushed at once, as
    ann's `note:` and `error:` lines (not absl's `W1202 12:00:00.000 ... ]` log format)."""
    print(f"warning: {_process}{message}", file=sys.stderr, flush=True)


def bytes_text(n: float) -> str:
    """`n` bytes as a person reads them: `6.3 MiB`, in GiB from one GiB, in KiB below one MiB
    (`20.5 KiB`: a small model's weights read "0.0 MiB"), in bytes below one KiB; binary units
    (IEC 80000-13)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def flops_text(n: float) -> str:
    """`n` floating-point operations with an SI prefix, 3 significant digits: `0.885 GFLOP` of
    the digits CNN's step as `885 MFLOP`, a tiny MLP's `65.3 kFLOP` (it read `6.53e-05
    GFLOP`)."""
    for unit, size in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 1e3:.3g} kFLOP" if n >= 1e3 else f"{n:.0f} FLOP"
