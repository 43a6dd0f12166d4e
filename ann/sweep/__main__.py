"""Run a sweep of a config file's `get_sweep(h)`, locally or on a cluster.

    ann sweep --config=configs/digits_mlp.py --workdir=runs/sweep1 [--parallel=2]
    ann sweep --config=configs/digits_mlp.py --workdir=runs/tpe1 --search=tpe \\
        --trials=20 --metric=val/accuracy --mode=max
    ann sweep --config=configs/digits_mlp.py --workdir=runs/sweep1 --emit=slurm
    ann sweep --summarize=runs/sweep1

`--config.KEY=VALUE` fixes a key for every trial. Running the same command again resumes.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import sys

from absl import flags
from ml_collections import config_flags

from ann import atomic, cli
from ann import config as config_lib
from ann.config import NOT_A_METRIC_OF_THIS_RUN, check_mode, check_selection_metric
from ann.sweep import definition as definition_lib
from ann.sweep import emit, fail_fast, grid, results, search
from ann.sweep.space import SweepError
from ann.sweep.trials import DATA_DIR_ENV, Trial, n_of

FLAGS = flags.FLAGS
cli.define_config("Config file with get_sweep(h): NAME.py[:ARG].")
flags.DEFINE_string("workdir", None, "Sweep directory: one workdir per trial, results, study.")
cli.NEEDED_UNLESS["workdir"] = ("summarize",)  # (not absl-required: --summarize=DIR alone runs)
# Bounds of the resource flags (README, Sweeps): more trials at a time than MAX_PARALLEL, or a
# trial asking for more cores or memory than these, is a typo, not a node (SLURM's --mem and a
# pod's memory request are one node's; the largest common nodes hold a few TiB).
MAX_PARALLEL = 1024
MAX_CPUS = 1024
MAX_MEMORY_GB = 4096
cli.define_bounded(
    "parallel",
    1,
    "Trials at a time, each pinned to its own share of cores; more than the trials are as many "
    "as the trials. With --emit, the cluster's cap (SLURM's %N, the Job's parallelism) only "
    "when given: without it, every trial may run at once.",
    1,
    MAX_PARALLEL,
)
flags.DEFINE_enum(
    "search",
    "grid",
    ["grid", "tpe"],
    "grid: every trial of get_sweep (with its random draws); tpe: Optuna's TPE over its space.",
)
cli.define_bounded(
    "trials",
    20,
    "--search=tpe: trials in the study, pruned and failed included.",
    1,
    100_000,
)
flags.DEFINE_string(
    "metric",
    None,
    "Validation metric (val/...) to rank and optimize (default: the config's best_metric); "
    "test metrics (eval/...) are reported beside it, never optimized.",
)
flags.DEFINE_enum(
    "mode",
    None,
    ["max", "min"],
    "Whether --metric is better higher or lower (default: the config's best_mode).",
)
cli.define_bounded("seed", 0, "--search=tpe: sampler seed.", 0, 2**32 - 1)
cli.define_bounded(
    "startup_trials",
    5,
    "--search=tpe: random trials before TPE models the space; also finished trials before the "
    "pruner prunes.",
    0,
    100_000,
)
flags.DEFINE_enum(
    "pruner",
    "median",
    ["median", "none"],
    "--search=tpe: prune trials whose "
    "eval is worse than the median of finished trials at the same step.",
)
cli.define_bounded(
    "prune_warmup_steps",
    0,
    "--search=tpe: no pruning before this train step.",
    0,
    10**9,
)
flags.DEFINE_bool("retry_failed", False, "Rerun trials that failed before (default: keep them).")
cli.define_bounded(
    "fail_fast",
    fail_fast.DEFAULT,
    "Stop the sweep (its running trials saved, what ran kept) once the first N trials to end "
    "all failed with the same error and none finished: every trial would.",
    0,
    100_000,
    "0 runs them all",
)
flags.DEFINE_bool(
    "dry_run",
    False,
    "Print the trials' commands, each standing alone as its command.sh (`cd DIR && env "
    "PYTHONPATH=... PYTHON -P -m ann train ...`, this Python); run nothing.",
)
flags.DEFINE_string("summarize", None, "Rewrite and print the results of this sweep workdir.")
flags.DEFINE_enum(
    "emit",
    None,
    ["slurm", "k8s"],
    "Write a cluster job for the trials instead "
    "of running them: a SLURM array script or a Kubernetes indexed Job.",
)
cli.define_bounded("cluster_cpus", 4, "--emit: cores per trial.", 1, MAX_CPUS)
cli.define_bounded(
    "cluster_memory_gb", 8, "--emit: memory per trial (one node's).", 1, MAX_MEMORY_GB, "GiB"
)
flags.DEFINE_string(
    "image",
    "",
    "--emit=k8s (required there): the container image the pods run, with ann on its PATH and "
    "the project at --image_root, e.g. registry.example.com/ann:1.0.",
)
flags.DEFINE_string("image_root", "/app", "--emit=k8s: the project's directory in the image.")
flags.DEFINE_string("pvc", "ann-runs", "--emit=k8s: PersistentVolumeClaim for the sweep workdir.")


def _lock(sweep_dir: str):
    """One sweep process per workdir: a second would run the same trials twice. The lock file
    holds the holder's host and pid, which a refused sweep names, as a refused run does
    (`ann.train.workdir.lock`; it said only "another sweep")."""
    os.makedirs(sweep_dir, exist_ok=True)
    handle = open(os.path.join(sweep_dir, ".lock"), "a+")  # "w" emptied the holder's words
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read(200).strip()
        handle.close()
        raise SweepError(
            f"another sweep is running in {sweep_dir}"
            + (f" ({holder})" if holder else "")
            + "; wait for it or use another --workdir"
        ) from None
    handle.truncate(0)
    handle.write(f"host {socket.gethostname()} pid {os.getpid()}\n")
    handle.flush()
    return handle


RESULT_FILES = ("results.csv", "results.md", "results.png")


def _print_results(workdir: str, text: str) -> None:
    """The table, then the files written (results.png only once a trial is scored)."""
    print(text, end="")
    files = [f for f in RESULT_FILES if os.path.exists(os.path.join(workdir, f))]
    print(f"({', '.join(files[:-1])} and {files[-1]} in {workdir})")


def sweep(argv: list[str]) -> None:
    """`ann sweep`: summarize a sweep, or load its definition and emit, list or run it."""
    cli.check_no_arguments(argv[1:])
    check_flags_read()
    if FLAGS.summarize:
        _print_results(FLAGS.summarize, results.write(FLAGS.summarize))
        return
    if FLAGS["config"].value is None or FLAGS.workdir is None:
        raise SweepError("give --config=configs/NAME.py and --workdir=DIR (or --summarize=DIR)")
    # A sweep whose sweep.json was deleted, or is no file, holds its trials (runs): refused
    # as "holds runs", where `check_same_sweep` says how to resume it.
    lost = results.lost_sweep_file(FLAGS.workdir) or results.not_a_file(FLAGS.workdir)
    if lost is None:
        cli.check_out("workdir", FLAGS.workdir, may_hold="a sweep")  # a file, a run: nothing made
    check_cluster_flags()
    if (FLAGS.metric or "").startswith("eval"):  # before loading the definition, which imports JAX:
        # an eval/NAME's fix, val/NAME, is the same metric of the validation split. Another
        # split's or a bare name's is found among the metrics the trials compute (`objective`).
        check_selection_metric("--metric", FLAGS.metric, mode=_mode_given())
    fixed = config_flags.get_override_values(FLAGS["config"])
    check_fixed_objective(fixed)
    config = config_flags.get_config_filename(FLAGS["config"])
    definition = definition_lib.load(config, fixed)
    metric, mode = objective(definition)
    keep_best_by(definition, metric, mode)
    results.check_same_sweep(
        FLAGS.workdir, FLAGS.search, definition.fixed, (metric, mode), config=config
    )
    if FLAGS.emit or FLAGS.dry_run:
        emit_grid(definition, metric, mode)
    else:
        run_here(definition, metric, mode)


TPE_FLAGS = ("trials", "seed", "startup_trials", "pruner", "prune_warmup_steps")
_SWEEP_FLAGS = ("config", "workdir", "search", "metric", "mode", "parallel", "dry_run", "emit",
                "fail_fast")  # fmt: skip


def check_flags_read() -> None:
    """A SweepError for a flag that nothing reads with the others given: a grid's --trials (or
    another --search=tpe flag), a TPE study's --retry_failed, anything beside --summarize. Each
    was accepted and ignored, a setting the user believed in."""
    if FLAGS.summarize:
        given = [f"--{n}" for n in (*_SWEEP_FLAGS, *TPE_FLAGS, "retry_failed")
                 if FLAGS[n].present]  # fmt: skip
        if given:
            raise SweepError(
                f"--summarize rewrites the results of a sweep that ran; it reads no "
                f"{', '.join(given)}: drop {'them' if len(given) > 1 else 'it'}"
            )
        return
    if FLAGS["fail_fast"].present and (FLAGS.emit or FLAGS.dry_run):
        given = f"--emit={FLAGS.emit}" if FLAGS.emit else "--dry_run"
        raise SweepError(
            f"--fail_fast stops a sweep run here; {given} runs none (a cluster's trials run "
            "apart): drop --fail_fast"
        )
    search = "tpe" if FLAGS.search == "grid" else "grid"
    only = TPE_FLAGS if FLAGS.search == "grid" else ("retry_failed",)
    for name in only:
        if FLAGS[name].present:
            raise SweepError(
                f"--{name} is read only with --search={search}; drop it, or add --search={search}"
            )


# Flags that only --emit reads, and the --emit they need (None: either).
CLUSTER_FLAGS = {
    "cluster_cpus": None, "cluster_memory_gb": None, "image": "k8s", "image_root": "k8s",
    "pvc": "k8s",
}  # fmt: skip
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # Kubernetes' name of a claim


def check_cluster_flags() -> None:
    """A SweepError for a cluster flag given where nothing reads it (without --emit, a local
    sweep ran with --image=foo ignored), or a value Kubernetes would refuse at `kubectl apply`
    (a claim name that is not a DNS label, a relative path in the image), or --emit=k8s
    without the --image its pods run."""
    for name, needs in CLUSTER_FLAGS.items():
        if FLAGS[name].present and (not FLAGS.emit or (needs and FLAGS.emit != needs)):
            where = f"--emit={needs}" if needs else "--emit=slurm or --emit=k8s"
            raise SweepError(
                f"--{name}={FLAGS[name].value} is read only with {where}; add it, or drop "
                f"--{name} to run the sweep here"
            )
    if FLAGS.emit == "k8s" and not (len(FLAGS.pvc) <= 63 and _DNS_LABEL.match(FLAGS.pvc)):
        raise SweepError(
            f"--pvc={FLAGS.pvc!r} is not a PersistentVolumeClaim name: lowercase letters, digits "
            "and '-', starting and ending with a letter or digit, e.g. --pvc=ann-runs"
        )
    if FLAGS.emit == "k8s" and not FLAGS.image_root.startswith("/"):
        raise SweepError(
            f"--image_root={FLAGS.image_root} must be an absolute path in the image (Kubernetes "
            "refuses a relative workingDir or mountPath), e.g. --image_root=/app"
        )
    if FLAGS.emit == "k8s" and not FLAGS.image.strip():
        # It was `ann:latest`: Docker Hub's library/ann, someone else's image or none.
        raise SweepError(
            "--emit=k8s needs --image, the container image the pods run (ann on its PATH, the "
            "project at --image_root), e.g. --image=registry.example.com/ann:1.0"
        )


def _mode_given() -> tuple[str, str] | None:
    """("--mode", its value) where --mode was given, for a metric's fix to name a mode that
    runs against it (`check_selection_metric`); None otherwise."""
    return ("--mode", FLAGS.mode) if FLAGS.mode else None


def objective(definition: definition_lib.Definition) -> tuple[str, str]:
    """(metric, mode) the trials are ranked by: the flags', else the config's best_metric and
    best_mode. A SweepError for a test metric, or a --metric other than best_metric without
    its --mode."""
    metric = FLAGS.metric or definition.base.best_metric
    # Its fix names a metric the trials compute (it said "use 'val/nope'" of --metric=nope),
    # asked only on a refusal: a shipped experiment's list, else found as a dry run finds them.
    check_selection_metric(
        "--metric" if FLAGS.metric else "the config's best_metric",
        metric,
        lambda: (
            config_lib.logged_validation_metrics(definition.base) or validation_metrics(definition)
        ),
        _mode_given() if FLAGS.metric else ("best_mode", definition.base.best_mode),
    )
    # A typo of a metric the experiment logs, from the config alone (with or without --mode);
    # any name it does not log where no trial sweeps what decides the metrics (the experiment,
    # its task.*): it was refused as each trial's best_metric, "change get_sweep" (trial 47d).
    if FLAGS.metric:
        # (Without --mode, a name close to none is said below, with the mode it needs.)
        decides = any(k == "experiment" or k.startswith("task.") for k in definition.node.keys())
        try:
            config_lib.check_logged_metric(
                f"--metric={metric}", metric, definition.base, near_only=decides or not FLAGS.mode
            )
        except config_lib.ConfigError as e:
            if "did you mean" in str(e):
                raise  # a typo: the name meant is the fix
            best = definition.base.best_metric
            raise SweepError(
                f"{e}; or drop --metric to rank by the config's best_metric, {best}"
            ) from None
    # The config's best_mode is its best_metric's: it holds for a --metric that names it too.
    mode = FLAGS.mode or (
        definition.base.best_mode if metric == definition.base.best_metric else None
    )
    if mode is None:
        best = definition.base.best_metric
        # A metric the trials do not compute is the first fault: it was said only once --mode
        # was given (`--metric=val/nope` was asked for its mode). Found as a dry run finds it
        # (seconds), only on this refusal: a sweep given its --mode pays nothing more here.
        if (computed := validation_metrics(definition)) is not None and metric not in computed:
            raise SweepError(
                f"--metric={metric} {NOT_A_METRIC_OF_THIS_RUN}"
                f"{config_lib.meant_metric(metric, computed)}; choose one of "
                f"{', '.join(computed)} and give its --mode=max or --mode=min (whether higher "
                f"is better), or drop --metric to rank by the config's best_metric, {best}"
            )
        implied = config_lib.implied_mode(metric)
        add = (
            f"--mode={implied} ({metric} is better {'lower' if implied == 'min' else 'higher'})"
            if implied
            else "--mode=max or --mode=min (whether higher is better)"
        )
        raise SweepError(
            f"--metric={metric} is given without --mode: add {add}, or drop --metric to rank "
            f"by the config's best_metric, {best}"
            + config_lib.did_you_mean(metric, [best], "--metric=")
        )
    if FLAGS.mode:  # ranked by the worst trial: the config's own mode is checked with it
        check_mode("--metric", metric, "--mode", mode, "--mode")
    return metric, mode


def validation_metrics(definition: definition_lib.Definition) -> list[str] | None:
    """The sorted `val/` metrics the sweep's trials compute, found as `check_metric_computed`
    finds them (the config with the sweep's fixed keys, its model initialized and one
    validation batch scored, from the directory the trials read: seconds), or None where the
    config cannot be built to say (the trials' start will name why)."""
    from ann.train import loop  # JAX and the model: only on the refusal that needs it

    definition_lib.settle_data_dir(definition, FLAGS.workdir)  # reads sweep.json, writes nothing
    config = definition.base.copy_and_resolve_references()
    config.data.data_dir = definition.data_dir
    cli.progress("checking which validation metrics the trials compute (one batch scored)")
    try:
        names = loop.validation_names(config)
    except config_lib.ConfigError:
        return None
    return sorted(n for n in names if n.startswith(config_lib.SELECTION_PREFIX))


def check_fixed_objective(fixed: dict) -> None:
    """Before the definition is loaded (and its config checked): a `--config.best_metric` or
    `--config.best_mode` fixed on the command line must be the sweep's `--metric`/`--mode`
    (SweepError otherwise: one was refused, the other silently replaced), and a best_metric
    given with them takes the sweep's mode (it was checked against the config's own, and a
    `--metric=val/loss --mode=min --config.best_metric=val/loss` refused as keeping the worst)."""
    if not (FLAGS.metric and FLAGS.mode):
        return  # the objective is the config's own best_metric and mode (`objective`)
    for key, flag, value in (("best_metric", "metric", FLAGS.metric),
                             ("best_mode", "mode", FLAGS.mode)):  # fmt: skip
        given = fixed.get(key)
        if given is not None and given != value:
            raise SweepError(
                f"--config.{key}={given} keeps each trial's best checkpoint by another "
                f"{flag} than the sweep ranks by (--{flag}={value}); drop one of them"
            )
    if "best_metric" in fixed:
        fixed.setdefault("best_mode", FLAGS.mode)


def keep_best_by(definition: definition_lib.Definition, metric: str, mode: str) -> None:
    """Makes the trials keep their best checkpoint by the sweep's metric: ranked by val/loss,
    a trial kept the step of its config's best_metric (val/accuracy), which export and report
    then took while results.md named another step (a conflicting fixed override was refused
    by `check_fixed_objective`)."""
    base = definition.base
    if (base.best_metric, base.best_mode) != (metric, mode):
        definition.fixed.update(best_metric=metric, best_mode=mode)
        base.best_metric, base.best_mode = metric, mode


def emit_grid(definition: definition_lib.Definition, metric: str, mode: str) -> None:
    """--dry_run: print the grid's trial commands. --emit: write every trial's files and a
    SLURM array or Kubernetes indexed Job that runs them."""
    if FLAGS.search != "grid":
        raise SweepError(
            f"--{'emit' if FLAGS.emit else 'dry_run'} lists a grid's trials; --search=tpe "
            "chooses them as it goes, so run it with the local launcher"
        )
    # The trials read where a run of this sweep reads its data (a resumed one's, sweep.json's),
    # not where this shell's $TFDS_DATA_DIR points: the metric check reads it, the commands name
    # it (`grid.prepare` settles it).
    trials, configs = grid.prepare(definition, FLAGS.workdir)
    # A trial trained under another config: its files would be rewritten, its result kept.
    results.check_trial_configs(FLAGS.workdir, zip(trials, configs))
    check_metric_computed(definition, trials[0])
    if FLAGS.dry_run:
        # Each line as command.sh runs it (`Trial.standalone`): after an `export PYTHONPATH=`
        # line, without their `cd`, the lines pasted into a fresh shell elsewhere failed
        # "--config=parity.py: no such file" (a config path relative to where the sweep ran).
        print("\n".join(t.standalone() for t in trials))
        return
    # --parallel caps concurrent trials on the cluster only when given.
    parallel = FLAGS.parallel if FLAGS["parallel"].present else 0
    common = dict(parallel=parallel, cpus=FLAGS.cluster_cpus)
    # Said, since --help's default (1) is this machine's: a cluster runs all of them at once.
    at_once = (
        f"{min(parallel, len(trials))} at a time"
        if parallel
        else "all at once; --parallel=N runs N at a time"
    )
    # The launcher first: a path no pod has is refused before the trials' files are made.
    if FLAGS.emit == "slurm":
        memory = f"{FLAGS.cluster_memory_gb}G"
        path = emit.write("slurm", trials, FLAGS.workdir, cwd=os.getcwd(), memory=memory, **common)
        wrote = f"wrote {path}: sbatch {path}  ({n_of(len(trials), 'array task')}, {at_once})"
        if emit.slurm_chunked(trials):  # more than SLURM's default MaxArraySize (1001) allows
            submit = os.path.join(FLAGS.workdir, emit.SLURM_SUBMIT)
            jobs = -(-len(trials) // emit.SLURM_CHUNK)
            wrote = (
                f"wrote {path} and {submit}: bash {submit}  ({len(trials)} array tasks, in "
                f"{jobs} array jobs of at most {emit.SLURM_CHUNK}: SLURM's default "
                f"MaxArraySize, 1001, refuses one array of {len(trials)}; "
                + (f"at most {at_once}" if parallel else "the array jobs side by side")
                + ")"
            )
    else:
        path = emit.write(
            "k8s",
            trials,
            FLAGS.workdir,
            memory=f"{FLAGS.cluster_memory_gb}Gi",
            image=FLAGS.image,
            pvc=FLAGS.pvc,
            root=FLAGS.image_root,
            **common,
        )
        wrote = (
            f"wrote {path}: {emit.apply_command(path)}  "
            f"({n_of(len(trials), 'index', 'indices')}, {at_once})"
        )
    for trial, config_json in zip(trials, configs):
        trial.write_files(config_json)
    results.write_sweep_file(
        FLAGS.workdir, results.sweep_info(definition, "grid", metric, mode, trials)
    )
    print(wrote)
    print(f"then: ann sweep --summarize={FLAGS.workdir}")


def check_metric_computed(definition: definition_lib.Definition, trial: Trial) -> None:
    """A SweepError, worded as a real sweep's first trial would stop it (`results.check_metric`),
    where `trial`'s best_metric (the sweep's --metric) or early_stopping.metric is not a
    validation metric its run computes: --dry_run and --emit run no trial, so a misspelt
    --metric passed them and failed every trial on the cluster. Costs a run's start without
    its train step (seconds: the model initialized, one validation batch scored)."""
    from ann.train import hooks, loop  # JAX and the model: only once the flags are good

    config = definition_lib.checked(definition.config, trial.values())  # its data_dir too
    if DATA_DIR_ENV in trial.env:  # the sweep's data directory (`Definition.reading_data`)
        config.data.data_dir = trial.env[DATA_DIR_ENV]
    cli.progress(
        f"checking that trial {trial.name} computes {config.best_metric} (its data read, one "
        "validation batch scored)"
    )
    try:
        hooks.check_selection_metrics(config, loop.validation_names(config))
    except config_lib.ConfigError as e:
        raise SweepError(f"trial {trial.name}: {e}") from None


def run_here(definition: definition_lib.Definition, metric: str, mode: str) -> None:
    """Runs the grid or the TPE study with the local launcher, holding the workdir's lock,
    and prints the results table. A grid's trials are checked before the workdir is made, so
    a refused one leaves nothing behind; a TPE study chooses its trials as it goes, so the
    trials at its space's ends are checked instead (`search.check_space`)."""
    made = atomic.missing_from(FLAGS.workdir)  # what a failed start removes again
    prepared = None
    if FLAGS.search == "grid":
        prepared = grid.prepare(definition, FLAGS.workdir)
    else:
        search.check_space(definition)
    try:
        lock = _lock(FLAGS.workdir)
    except BaseException:
        atomic.remove_if_left_empty(FLAGS.workdir, made, own=(".lock",))
        raise
    try:
        if FLAGS.search == "tpe":
            text = search.run(
                definition,
                FLAGS.workdir,
                FLAGS.trials,
                metric,
                mode,
                parallel=FLAGS.parallel,
                seed=FLAGS.seed,
                startup_trials=FLAGS.startup_trials,
                pruner=FLAGS.pruner,
                prune_warmup_steps=FLAGS.prune_warmup_steps,
                fail_fast=FLAGS.fail_fast,
            )
        else:
            text = grid.run(
                definition,
                FLAGS.workdir,
                metric,
                mode,
                parallel=FLAGS.parallel,
                retry_failed=FLAGS.retry_failed,
                prepared=prepared,
                fail_fast=FLAGS.fail_fast,
            )
    except BaseException:
        lock.close()
        # A start that failed before its first trial (a full disk under sweep.json): the
        # workdir it made holds only its lock, which read as a sweep's.
        atomic.remove_if_left_empty(FLAGS.workdir, made, own=(".lock",))
        raise
    lock.close()
    _print_results(FLAGS.workdir, text)
    results.check_a_trial_finished(FLAGS.workdir)


def main(argv: list[str]) -> None:
    # A SIGTERM (kill, timeout, docker stop) ended the sweep silently and left its trials'
    # records unended: it stops as Ctrl-C does, trials saving, and exits 143.
    try:
        with cli.sigterm_as_interrupt():
            sweep(argv)
    except cli.Terminated as e:
        print(f"{e}; run the same command to resume", file=sys.stderr)
        sys.exit(cli.EXIT_TERMINATED)
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C); run the same command to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    # A mistake in the sweep (SweepError, ConfigError): one line naming it and the fix. Quiet,
    # as `ann export` and `ann report`: its lines are its own prints, and a dry run's data
    # build wrote absl's `I1205 03:40:32.987024 ... sources.py:203] building data set ...`.
    cli.run(main, errors=(SweepError,), quiet=True)
