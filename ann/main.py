"""Train and evaluate from a config file (`ann train`, or `python -m ann.main`).

    ann train --config=configs/digits_cnn.py --workdir=runs/digits_cnn
    ann train --config=configs/digits_cnn.py --workdir=runs/lr --config.optimizer.learning_rate=0.01

Running the same command again resumes from the workdir's latest checkpoint.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
from types import FrameType

if __name__ == "__main__":  # `ann train`: no garbage collection from here to the first step
    gc.disable()  # (the imports in main are most of a warm start; ann/train/startup.py)

from absl import flags, logging
from ml_collections import config_flags

from ann import arguments, cli
from ann import config as config_lib
from ann.train import run_status
from ann.train.run_status import STOPPED_STARTING, TERMINATED_STARTING, stopped_starting

FLAGS = flags.FLAGS
cli.define_config("Config file (configs/NAME.py[:ARG]).")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and config.json.")
flags.DEFINE_string("coordinator_address", "", "Multi-process: HOST:PORT of process 0.")
# A multi-process run's processes, at most (a TPU v5p pod slice of 6,144 chips has 1,536 hosts).
MAX_PROCESSES = 1 << 16
cli.define_bounded(
    "num_processes",
    0,
    "Multi-process: how many processes in all.",
    0,
    MAX_PROCESSES,
    "0: one process",
)
cli.define_bounded(
    "process_id",
    -1,
    "Multi-process: this process's index, below --num_processes.",
    -1,
    MAX_PROCESSES - 1,
    "this process's index from 0; -1: one process",
)
cli.EXAMPLES["process_id"] = 0  # its default, -1, is no process's index
flags.DEFINE_enum(
    "distributed",
    "off",
    ["off", "auto"],
    "auto: join the cluster's processes "
    "from its environment (SLURM, Kubernetes, TPU VMs), as JAX detects them.",
)
cli.define_bounded(
    "distributed_timeout",
    300,
    "Time to wait for peers (start-up and heartbeats) before ending with an error.",
    1,
    86_400,
    "seconds",
)
flags.mark_flags_as_required(["config", "workdir"])


def check_processes(num_processes: int, process_id: int) -> None:
    """FlagError where `--process_id` is outside `--num_processes`' range, 0..N-1, named as a
    range is (it said "needs all of --coordinator_address..." for `--num_processes=2
    --process_id=5`, the coordinator's absence before the index's range)."""
    if num_processes >= 1 and process_id >= num_processes:
        among = f"this process's index among --num_processes={num_processes}"
        what = arguments.expected(int, 0, num_processes - 1, among)
        raise cli.FlagError(arguments.refusal(f"--process_id={process_id}", what, "process_id", 0))


def main(argv: list[str]) -> None:
    cli.check_no_arguments(argv[1:])
    check_processes(FLAGS.num_processes, FLAGS.process_id)
    auto = FLAGS.distributed == "auto"
    if fault := arguments.process_flags_fault(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, auto
    ):  # before JAX is imported: it took 3 s to say
        raise cli.FlagError(fault)
    # JAX and the training code are imported once the flags and the config's keys are checked:
    # `--help` and a mistyped flag or key answer without them (0.3 s instead of 3 s).
    unchanged = cli.unchanged_overrides(FLAGS)
    cli.drop_switched_model_keys(FLAGS)
    try:
        config_lib.validate(FLAGS.config, num_devices=None, unchanged=unchanged)
    except config_lib.ConfigError:  # a run length below the step reached: the first to fix
        config_lib.check_reached_length(FLAGS.config, FLAGS.workdir, unchanged, config_flag())
        raise  # worded for the config file where it set the key (`cli.run`)
    cli.check_out("workdir", FLAGS.workdir, may_hold="a training run")  # (ann.train.workdir)
    main_thread = threading.current_thread() is threading.main_thread()  # (handlers need it)
    previous = signal.signal(signal.SIGTERM, _terminated_while_starting) if main_thread else None
    try:
        result = _train(unchanged)
        cli.ignore_interrupts()  # the run has ended and recorded how: its line follows
    except cli.Terminated:
        line = stopped_starting(TERMINATED_STARTING, FLAGS.workdir, _total_steps())
        _record_start_end("interrupted", line)
        cli.interrupted(line, skip_teardown=True, status=cli.EXIT_TERMINATED)
    except KeyboardInterrupt as e:
        # Once training began, the loop names the step and what a rerun resumes from; before,
        # nothing is saved, and the teardown could crash on XLA's unfinished start-up work.
        line = str(e) or stopped_starting(STOPPED_STARTING, FLAGS.workdir, _total_steps())
        if not str(e):
            _record_start_end("interrupted", line)
        cli.interrupted(line, skip_teardown=not str(e))
    except Exception as e:
        from ann import parallel

        if (lost := parallel.peer_lost(e)) is not None:  # recorded `failed` by the loop
            cli.fail_without_teardown(lost)
        message = out_of_memory(e)
        if message is None:
            refusals = (config_lib.ConfigError, cli.FlagError, *cli.error_classes(ERRORS))
            if not isinstance(e, refusals):  # a bug (its traceback follows); refusals record none
                _record_start_end("failed", f"{type(e).__name__}: {str(e) or type(e).__name__}")
            raise
        raise config_lib.ConfigError(message) from e
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if result.interrupted:  # (a Ctrl-C's stop, saved, raised KeyboardInterrupt with its line)
        from ann.train.loop import interrupted_line
        from ann.train.preemption import TERMINATED

        # A hook's own stop was logged in interrupted_line's words at its save.
        if result.interruption in TERMINATED:  # a hook's own stop exits 0
            # Saved, not finished: a scheduler reading 0 counted the run (a Kubernetes Job's
            # index, SLURM's afterok) as complete. 143 is what a SIGTERM's end reads as.
            line = interrupted_line(result.step, result.step, result.interruption)
            cli.interrupted(line, status=cli.EXIT_TERMINATED)  # as Ctrl-C's, no `warning:`
        return
    import jax

    if jax.process_index() == 0:  # one summary per run, as one console log (process 0's)
        print(
            cli.run_summary(
                result.step, result.eval_metrics, result.best_eval_metrics, result.stop_reason
            )
        )


def out_of_memory(error: BaseException) -> str | None:
    """One line for XLA's out-of-memory error (a model or batch too large for the device: "Out
    of memory allocating N bytes", RESOURCE_EXHAUSTED), naming what to lower
    (`cli.out_of_memory`); None for any other error (a bug keeps its traceback)."""
    return cli.out_of_memory(
        error,
        "the run",
        "lower batch_size or the model's sizes (the workdir's parameters.tsv lists every "
        "parameter array), or split it over devices (config.mesh, config.sharding_rules)",
    )


def _record_start_end(status: str, message: str) -> None:
    """run_status.json for a start that ended before the first step (`status`: "interrupted"
    with ann train's line, or "failed" with a bug's error; a refusal records nothing, as the
    loop's doesn't), where the workdir holds an earlier process's record: it stayed, naming
    that process and how it ended (`run_status.replace_earlier` says which records are kept).
    Process 0's: a multi-process run's other processes, and one that `--distributed=auto`
    numbers (not known without JAX), leave it."""
    if FLAGS.distributed == "auto" or (FLAGS.num_processes > 1 and FLAGS.process_id != 0):
        return
    try:
        run_status.replace_earlier(FLAGS.workdir, status, message, _total_steps())
    except OSError as e:  # the start's own line (or error) still follows
        logging.error("could not record the start's end in run_status.json: %s", e)


def _total_steps() -> int | None:
    """This start's total_steps (None: num_epochs decides it)."""
    return FLAGS.config.get("total_steps") or None


def _terminated_while_starting(signum: int, frame: FrameType | None) -> None:
    """SIGTERM's handler until the loop installs its own: it killed the process silently
    (exit -15, a half-made workdir) where Ctrl-C said where things stood. Once the loop has
    begun, its own handling has run (ann/train/preemption.py) and the run is ending: ignored.
    The first is noted (`cli.note_terminated`), then raised, so that one dropped on the way (by
    code that catches BaseException, or in a finalizer) is raised again at the start's next
    safe point (`cli.check_terminated`); inside a module's import it is only noted, and raised
    at that point. Later ones are ignored, so that they cannot cut the stopped start's cleanup
    short."""
    del signum
    # Not imported here: a SIGTERM in the first second lands inside `import jax`, and importing
    # ann.train.preemption (which imports jax) there raised "cannot import name 'typeof' from
    # partially initialized module 'jax._src.core'" (exit 1, a traceback). Not imported yet,
    # the loop has not begun either.
    # A module part-way through its import (its `starting` not yet defined) has not begun the
    # loop either.
    starting = getattr(sys.modules.get("ann.train.preemption"), "starting", lambda: True)
    if starting() and cli.note_terminated():
        if cli.importing(frame):
            # Raised inside a module's import (jaxlib's C extensions), the process crashed at
            # exit (a segmentation fault, or an abort: "Fatal Python error"); noted, it is
            # raised at the start's next safe point (`cli.check_terminated`), after the imports.
            return
        raise cli.Terminated  # a stop, as Ctrl-C's is


def _train(unchanged: set[str]):
    """Joins the processes (multi-process), builds the experiment and trains: a Result.
    `unchanged`: the overrides that change nothing (`cli.unchanged_overrides`)."""
    import jax

    from ann import parallel
    from ann.sweep import pruning
    from ann.train import build, launcher, startup
    from ann.train.loop import train_and_evaluate

    cli.check_terminated()  # a SIGTERM that came during these imports (`cli.importing`)
    launcher.stop_with_launcher()  # started by launch_local.sh or a sweep: stop if it dies
    parallel.initialize_distributed(
        FLAGS.coordinator_address,
        FLAGS.num_processes,
        FLAGS.process_id,
        auto=FLAGS.distributed == "auto",
        timeout_seconds=FLAGS.distributed_timeout,
        config=FLAGS.config,  # every process's must be the same (refused before anything)
        config_flag=config_flag(),  # named first where the processes' differ
    )
    if jax.process_index() > 0:  # one console log per run (process 0's); warnings from all
        logging.set_verbosity(logging.WARNING)
    cli.name_process(jax.process_index(), jax.process_count())
    config = FLAGS.config
    experiment = build.make_experiment(config)
    config_lib.check_task_keys_apply(config, experiment, unchanged)
    # A sweep's trial reports its evals to the study (Optuna is imported only then).
    listeners = pruning.listeners_from_env(config)
    gc.enable()  # train_and_evaluate pauses it again over its own start-up (startup.Clock)
    return train_and_evaluate(
        config,
        FLAGS.workdir,
        experiment,
        eval_listeners=listeners,
        started=startup.process_start(),
        config_flag=config_flag(),
    )


def config_flag() -> str:
    """The --config argument as given: the file and its `:ARG` variant
    ("configs/digits_cnn.py:writers"), recorded with the run (config.json)."""
    return config_flags.get_config_filename(FLAGS["config"])


ERRORS = (  # by name: main imports their modules (JAX, Orbax) after the flags are read
    "ann.train.checkpoint:CheckpointError",
    "ann.train.loop:NonFiniteLossError",
    "ann.train.writers:MetricsFileError",
)


def run() -> None:
    # A user mistake (ConfigError, a damaged checkpoint) or a diverged run: one clear line, no
    # stack trace from deep in JAX.
    cli.run(main, errors=ERRORS)


if __name__ == "__main__":
    run()
