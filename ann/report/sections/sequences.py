"""Token tasks' reports. Seq2seq: the exact match of the greedy decoding by target length (and
by task, where the data set has a `task` field). Language modelling: bits per character of the
model's next-character predictions, by the length of the context before it, against the
unigram baseline."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from ann.report import extreme, metric_prefix, metric_text, tied_text
from ann.report.predictions import Predictions
from ann.report.sections import Section, report_setting
from ann.report.task_metrics import answers, target_lengths
from ann.report.task_metrics import seq2seq as seq2seq_metrics

LM_ROWS = 32  # default of config.report.lm_rows: windows whose every character is scored
CONTEXT_BINS = 16  # the bits-by-context curve averages positions in this many bins


def _length_bars(ax, table: list[dict]) -> None:
    x = np.arange(len(table))
    ax.bar(x, [t["exact_match"] for t in table])
    for xi, t in zip(x, table):
        ax.text(xi, t["exact_match"], f"n={t['count']:,}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [str(t["length"]) for t in table], fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.grid(axis="y", alpha=0.3)


def length_figure(table: list[dict], split: str, by_task: dict[str, list[dict]] | None = None):
    """Exact match by target length (`table`), or, given `by_task` (task -> its own table), one
    panel per task: a length of one task only (digit_strings' 4 and 7 are all `add`) read as a
    length every task fails."""
    title = f"Exact match by target length (greedy decoding, {split})"
    if not by_task:
        fig = Figure(figsize=(7.0, 4.0), layout="constrained")
        ax = fig.add_subplot()
        _length_bars(ax, table)
        ax.set_xlabel("target length (tokens before <eos>)")
        ax.set_ylabel("exact match")
        ax.set_title(title, fontsize=10)
        return fig
    width = sum(max(2.2, 0.4 * len(rows) + 1.0) for rows in by_task.values())
    fig = Figure(figsize=(max(7.0, width), 4.0), layout="constrained")
    axes = fig.subplots(
        1, len(by_task), sharey=True, squeeze=False,
        width_ratios=[max(2, len(rows)) for rows in by_task.values()],
    )[0]  # fmt: skip
    for ax, (task, rows) in zip(axes, by_task.items()):
        _length_bars(ax, rows)
        count = sum(r["count"] for r in rows)
        exact = sum(r["exact_match"] * r["count"] for r in rows) / max(count, 1)
        ax.set_title(f"{task}\n{metric_text('exact_match', exact)} of {count:,} rows", fontsize=9)
    axes[0].set_ylabel("exact match")
    fig.supxlabel("target length (tokens before <eos>)", fontsize=10)
    fig.suptitle(title.replace("length (", "length, per task ("), fontsize=10)
    return fig


def _by_length(lengths: np.ndarray, exact: np.ndarray) -> list[dict]:
    """[{length, count, exact_match}] for each distinct length, shortest first."""
    return [
        {
            "length": int(n),
            "count": int((lengths == n).sum()),
            "exact_match": float(exact[lengths == n].mean()),
        }
        for n in np.unique(lengths)
    ]


def seq2seq(preds: Predictions) -> list[Section]:
    """exact_match and decoded_token_accuracy (`task_metrics.seq2seq`), by_length: [{length, count,
    exact_match}]; where the rows have a `task` field, by_task: {task: exact_match} and
    by_task_length: {task: [{length, count, exact_match}]}, each task printed and charted apart
    (the lengths of digit_strings' tasks differ, so by_length mixes them)."""
    target = answers(preds)  # in reading order, as the outputs are
    exact = (np.asarray(preds.outputs["tokens"]) == target).all(-1)
    lengths = target_lengths(preds)
    table = _by_length(lengths, exact)
    metrics = {**seq2seq_metrics(preds, np.arange(len(target))), "by_length": table}
    names = getattr(preds.experiment, "task_names", [])
    notes = []
    cells = [(None, t) for t in table]  # where the lowest exact match is looked for
    by_task_length = None
    if names and "task" in preds.rows:
        task = np.asarray(preds.rows["task"])
        present = [(k, name) for k, name in enumerate(names) if (task == k).any()]
        metrics["by_task"] = {name: float(exact[task == k].mean()) for k, name in present}
        by_task_length = {
            name: _by_length(lengths[task == k], exact[task == k]) for k, name in present
        }
        metrics["by_task_length"] = by_task_length
        notes.append(
            "exact match by task: "
            + ", ".join(
                f"{name} {metric_text('exact_match', metrics['by_task'][name])} "
                f"({int((task == k).sum()):,} rows)"
                for k, name in present
            )
        )
        cells = [(name, t) for name, rows in by_task_length.items() for t in rows]
    (where, worst), tied = extreme(cells, lambda c: c[1]["exact_match"])
    lowest = metric_text("exact_match", worst["exact_match"])
    of = f" for {where}" if where is not None else ""
    return [
        Section(
            title="Exact match by target length",
            metrics=metrics,
            figures={"exact_match_by_length": length_figure(table, preds.split, by_task_length)},
            notes=[
                f"exact match {metrics['exact_match']:.4f}, token accuracy of the greedy "
                f"decoding {metrics['decoded_token_accuracy']:.4f} (training's token_accuracy "
                f"is teacher-forced); lowest {lowest}{of} at length {worst['length']} "
                f"({worst['count']:,} rows){tied_text(tied)}",
                *notes,
            ],
        )
    ]


def character_bits(preds: Predictions, rows: int = LM_ROWS) -> dict[str, np.ndarray]:
    """Every character after the first of the split's first `rows` windows, predicted from the
    characters before it by `preds.predict` (one prefix per character, padded as the data set
    pads). Returns float64 `bits` = -log2 p(character) [chars], `unigram_bits` (the training
    split's character frequencies, the experiment's baseline) and int `context` (characters
    before it) [chars]."""
    exp = preds.experiment
    pad = exp.vocab.pad_id
    windows = np.asarray(preds.rows[exp.key])[:rows]
    prefixes, targets, context = [], [], []
    for window in windows:
        for t in range(1, int((window != pad).sum())):
            prefix = np.full_like(window, pad)
            prefix[:t] = window[:t]
            prefixes.append(prefix)
            targets.append(window[t])
            context.append(t)
    targets = np.asarray(targets, np.int64)
    if not len(targets):
        return {"bits": np.zeros(0), "unigram_bits": np.zeros(0), "context": np.zeros(0, int)}
    probs = np.asarray(preds.predict({exp.key: np.stack(prefixes)})["probabilities"], np.float64)
    p = np.maximum(probs[np.arange(len(targets)), targets], np.finfo(np.float32).tiny)
    return {
        "bits": -np.log2(p),
        "unigram_bits": -np.asarray(exp.unigram_logp, np.float64)[targets] / math.log(2),
        "context": np.asarray(context),
    }


def by_context(context: np.ndarray, bits: np.ndarray) -> list[dict]:
    """Mean bits per char of characters with `context` in each of up to CONTEXT_BINS equal
    ranges: [{context_from, context_to (inclusive), chars, bits_per_char}]."""
    edges = np.unique(np.linspace(context.min(), context.max() + 1, CONTEXT_BINS + 1).astype(int))
    bucket = np.searchsorted(edges[1:-1], context, side="right")
    return [
        {
            "context_from": int(edges[b]),
            "context_to": int(edges[b + 1] - 1),
            "chars": int((bucket == b).sum()),
            "bits_per_char": float(bits[bucket == b].mean()),
        }
        for b in range(len(edges) - 1)
        if (bucket == b).any()
    ]


def context_figure(table: list[dict], unigram: float, split: str, scored: str = "") -> Figure:
    """Bits per char by context (`by_context`'s `table`) against the `unigram` baseline; its
    title names the `split` and which of its rows were `scored` ("first 32 of 1,265 rows":
    the picture alone read as the split's), where not all of them."""
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    centres = [(t["context_from"] + t["context_to"]) / 2 for t in table]
    ax.plot(centres, [t["bits_per_char"] for t in table], marker="o", ms=3, label="model")
    ax.axhline(
        unigram,
        color="grey",
        ls="--",
        label=f"unigram baseline ({metric_text('bits_per_char', unigram)})",
    )
    ax.set_xlabel("characters of context before the predicted one")
    ax.set_ylabel("bits per char")
    ax.set_ylim(0, max(unigram, *(t["bits_per_char"] for t in table)) * 1.1)
    of = f"{split}, {scored}" if scored else split
    ax.set_title(f"Bits per char by context length ({of})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def language_modelling(preds: Predictions) -> list[Section]:
    """bits_per_char and unigram_bits_per_char over the scored characters, rows and chars
    scored, and by_context: [{context_from, context_to, chars, bits_per_char}]; a note and
    bits_per_char None when the report has no model to run (`preds.predict` None)."""
    if preds.predict is None:
        return [
            Section(
                title="Bits per char",
                metrics={"bits_per_char": None},
                notes=["bits per char needs the model (Predictions.predict); none was given"],
            )
        ]
    rows = int(report_setting(preds, "lm_rows", LM_ROWS))
    total = len(preds.rows[preds.experiment.key])  # the split's rows
    scored = character_bits(preds, rows)
    bits, context = scored["bits"], scored["context"]
    unigram = float(scored["unigram_bits"].mean()) if len(bits) else None
    metrics = {
        "bits_per_char": float(bits.mean()) if len(bits) else None,
        "unigram_bits_per_char": unigram,
        "rows": int(min(rows, total)),
        "chars": int(len(bits)),
        "by_context": by_context(context, bits) if len(bits) else [],
    }
    scored_rows = f"first {metrics['rows']:,} of {total:,} rows" if metrics["rows"] < total else ""
    figures = (
        {
            "bits_by_context": context_figure(
                metrics["by_context"], unigram, preds.split, scored_rows
            )
        }
        if len(bits)
        else {}
    )
    return [
        Section(
            title="Bits per char",
            metrics=metrics,
            figures=figures,
            notes=[
                f"bits per char {metrics['bits_per_char']:.4f} against {unigram:.4f} for the "
                f"unigram baseline ({metrics['chars']:,} characters of the first "
                f"{metrics['rows']:,} of {total:,} rows: report.lm_rows, one forward pass per "
                f"character; the run's {metric_prefix(preds.split)}bits_per_char is over every "
                "row)"
            ]
            if len(bits)
            else ["no characters to score"],
        )
    ]
