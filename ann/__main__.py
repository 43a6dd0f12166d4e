"""`ann JOB [flags]`: one command for every job (the `ann` console script; `python -m ann` too).

`ann JOB ...` runs exactly what `python -m MODULE ...` runs (the module as `__main__`, through
`ann.cli.run`'s one error wrapper), so the two spellings cannot drift apart. Only the chosen
job's module is imported: `ann --help` starts in a fraction of a second, without JAX.

Exit status: 0 done (and `--help`); 1 a mistake, one `error: ...` line on stderr (a bad flag,
config or file; an unknown job) or a failed run; 130 a job interrupted by Ctrl-C (one line,
`ann train` saved at the step it names); 141 the reader of the output went away (`ann registry
list | head`).
"""

from __future__ import annotations

import runpy
import signal
import sys
import textwrap

# job -> (the module `python -m` runs, one line for `ann --help`).
JOBS: dict[str, tuple[str, str]] = {
    "train": ("ann.main", "train and evaluate a model from a config file (resumes a workdir)"),
    "export": ("ann.export", "export a trained run: jax.export graph, safetensors, manifest"),
    "generate": ("ann.generate", "sample text or decode sequences from a trained token model"),
    "registry": ("ann.registry", "register exports; list, resolve, alias and tag versions"),
    "serve": ("ann.serve", "serve exported or registered models over HTTP (v2 protocol)"),
    "sweep": ("ann.sweep", "run a config's sweep (grid or TPE) or write cluster scripts"),
    "report": ("ann.report", "judge a run or export: metrics, pictures, report.json, index.html"),
    "transfer": ("ann.transfer", "list which parameters a config loads, trains, freezes"),
    "observability": (
        "ann.observability",
        "render Prometheus SLO rules and alerts and the Grafana dashboard",
    ),
    "monitor": (
        "ann.monitor",
        "drift and realized performance from request logs; late labels to a server",
    ),
}

USAGE = "usage: ann JOB [flags]   (ann JOB --help: the job's flags)"


def describe() -> str:
    """`ann --help`: the usage line and every job with its line."""
    width = max(map(len, JOBS))
    lines = [f"  {job:<{width}}  {text}" for job, (_, text) in JOBS.items()]
    same = ", ".join(f"{job}: {mod}" for job, (mod, _) in JOBS.items())
    tail = textwrap.wrap(f"`ann JOB` runs what `python -m MODULE` runs ({same}).", 96)
    return "\n".join([USAGE, "", "jobs:", *lines, "", *tail])


def main(argv: list[str] | None = None) -> None:
    """Runs `ann JOB ARGS...` (`argv` defaults to sys.argv): the job's module as `__main__`
    with `sys.argv` = [module, *ARGS]. Exits 0 after `--help`, 1 with one line for no job or
    an unknown one."""
    argv = sys.argv if argv is None else argv
    job = argv[1] if len(argv) > 1 else ""
    if job in ("-h", "--help", "-help", "help"):
        try:
            print(describe(), flush=True)
        except BrokenPipeError:  # `ann --help | head -3`
            from ann.cli import reader_gone

            reader_gone()
        return
    if job not in JOBS:
        from ann.config import did_you_mean

        what = f"unknown job {job!r}{did_you_mean(job, list(JOBS))}" if job else "no job given"
        print(f"error: {what}; jobs: {', '.join(JOBS)} (ann --help)", file=sys.stderr)
        sys.exit(1)
    module = JOBS[job][0]
    sys.argv = [f"ann {job}", *argv[2:]]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except KeyboardInterrupt:  # before the job's cli.run took over (importing its module)
        # What ann.cli.interrupted does, without importing it: the Ctrl-C may have stopped that
        # very import halfway, and importing it again then raised (a trial's 52-line traceback
        # ending in "partially initialized module 'yaml'", exit 1).
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        print("interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
