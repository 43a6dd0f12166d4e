"""CPU time of the server's request decoder (`protocol.decode_infer`) for a one-row JSON infer
of an export, its row taken from the export's reference sample: against the served model's
signature (`ServedModel.inputs`, each entry's checks made once at load: `protocol.Signature`)
and against the same entries as a plain dict (each request works its checks out again, a
seq2seq source's `artifact.Framing` included: what the server did before).

    python scripts/bench_infer_decode.py --model=EXPORT_DIR [--calls=5000] [--rounds=11] [--nested]

`--nested`: the row's values nested as its shape (`row.tolist()`), not flat.

Prints best and median microseconds per call of each, the rounds interleaved.
"""

from __future__ import annotations

import json
import statistics
import time

from absl import flags

from ann import cli

flags.DEFINE_string("model", None, "An export directory (ann export --out).", required=True)
flags.DEFINE_integer("calls", 5000, "Calls per round.", lower_bound=1)
flags.DEFINE_integer("rounds", 11, "Rounds, each signature once per round.", lower_bound=1)
flags.DEFINE_bool("nested", False, "Send the values nested as the input's shape, not flat.")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    del argv
    from ann import artifact
    from ann.serve import protocol
    from ann.serve.dataplane import ServedModel

    model = artifact.load(FLAGS.model)
    sample = artifact.load_reference(FLAGS.model, model.manifest)
    if sample is None:
        raise SystemExit(f"{FLAGS.model} has no reference sample to take a row from")
    served = ServedModel(model.name, "1", model, FLAGS.model)
    inputs = []
    for name in model.inputs:
        row = sample["inputs"][name][:1]
        datatype = protocol.DATATYPES[row.dtype.name]
        inputs.append(
            {"name": name, "shape": list(row.shape), "datatype": datatype,
             "data": row.tolist() if FLAGS.nested else row.ravel().tolist()}
        )  # fmt: skip
    body = json.dumps({"inputs": inputs}).encode()
    signatures = {
        "served (ServedModel.inputs)": served.inputs,
        "plain dict (per request)": dict(served.inputs),
    }
    for signature in signatures.values():  # each correct, and warm
        protocol.decode_infer(body, signature, model.outputs, 64)
    times: dict[str, list[float]] = {key: [] for key in signatures}
    for _ in range(FLAGS.rounds):
        for key, signature in signatures.items():
            start = time.process_time()
            for _ in range(FLAGS.calls):
                protocol.decode_infer(body, signature, model.outputs, 64)
            times[key].append((time.process_time() - start) / FLAGS.calls * 1e6)
    layout = "nested" if FLAGS.nested else "flat"
    print(
        f"{model.name}: one-row JSON infer ({len(body)} B, {layout}), CPU us per decode_infer call"
    )
    for key, values in times.items():
        print(f"  {key}: best {min(values):.2f}, median {statistics.median(values):.2f}")


if __name__ == "__main__":
    cli.run(main)
