"""The PyTorch rows of `scripts/bench_peers.py`, run by that script in a PyTorch venv.

    /work/peers/bin/python scripts/torch_peer.py --data=BATCHES.npz --spec='{...}'

Needs only PyTorch and NumPy (no ann, no absl): `bench_peers.py` writes the batches (NHWC float32
inputs, already standardized, and int labels) and a JSON spec (model sizes, optimizer, timing),
and reads one JSON line back: ms per step for PyTorch eager, `torch.compile` of the model, and
`torch.compile` of the model and of the optimizer step. Same model as ann's CNN: 3x3 SAME convs,
ReLU, 2x2 max pool, dense, ReLU, dropout, head; AdamW at a constant learning rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

try:
    import torch
    from torch import nn
except ImportError:  # run with ann's python, not the PyTorch venv's: say so, not a traceback
    sys.exit(
        "error: scripts/torch_peer.py needs PyTorch; bench_peers.py runs it with --torch_python "
        "(a venv with torch and numpy)"
    )


def make_model(spec: dict) -> nn.Module:
    """The CNN in PyTorch's NCHW layout."""
    channels, height, width = spec["channels"], spec["height"], spec["width"]
    c1, c2 = spec["features"]
    return nn.Sequential(
        nn.Conv2d(channels, c1, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(height // 2 * (width // 2) * c2, spec["dense"]),
        nn.ReLU(),
        nn.Dropout(spec["dropout"]),
        nn.Linear(spec["dense"], spec["classes"]),
    )


def time_variant(spec: dict, xs: list, ys: list, compile_model: bool, compile_opt: bool) -> float:
    """Median ms per step over rounds, after warm-up (which includes compiling)."""
    torch.manual_seed(0)
    model = make_model(spec)
    opt = torch.optim.AdamW(
        model.parameters(), lr=spec["learning_rate"], weight_decay=spec["weight_decay"]
    )
    forward = torch.compile(model) if compile_model else model
    opt_step = torch.compile(opt.step) if compile_opt else opt.step
    loss_fn = nn.CrossEntropyLoss()

    def step(i):
        j = i % len(xs)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(forward(xs[j]), ys[j])
        loss.backward()
        opt_step()
        return loss

    for i in range(spec["warmup"]):
        step(i)
    rounds = []
    for r in range(spec["rounds"]):
        start = time.perf_counter()
        for i in range(spec["steps"]):
            loss = step(r * spec["steps"] + i)
        loss.item()
        rounds.append((time.perf_counter() - start) * 1e3 / spec["steps"])
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="npz with x [batches, n, h, w, c], y")
    parser.add_argument("--spec", required=True, help="JSON: sizes, optimizer, timing")
    args = parser.parse_args()
    spec = json.loads(args.spec)
    torch.set_num_threads(spec["threads"])
    arrays = np.load(args.data)
    xs = [torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))) for x in arrays["x"]]
    ys = [torch.from_numpy(y.astype(np.int64)) for y in arrays["y"]]
    out = {"version": torch.__version__, "threads": torch.get_num_threads()}
    variants = {"eager": (False, False), "compile": (True, False), "compile_all": (True, True)}
    for name, (cm, co) in variants.items():
        try:
            out[name] = time_variant(spec, xs, ys, cm, co)
        except Exception as e:  # noqa: BLE001 - a failed variant is reported, not fatal
            out[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
