"""Cluster launchers for a grid sweep: a SLURM array job or a Kubernetes indexed Job.

Index i runs trial i's command (the one in its command.sh, in the sweep's own interpreter by its
path, so a node's shell needs no virtual environment activated; a pod's with the paths it has,
`pod_trials`, and the image's `ann`; in a sweep of more trials than one SLURM array holds, task
i of the array job given ANN_ARRAY_OFFSET=K runs trial K + i), in the directory the sweep was
defined from (a pod: the image's project), and leaves what the local launcher leaves:
stdout.log, stderr.log and a trial.json with the exit status, attempts and wall time over them.
So `ann sweep --summarize=DIR` reads a cluster sweep like a local one, and resubmitting the same
script resumes unfinished trials (`ann.main` resumes from each workdir) and skips finished ones.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import os
import re
import shlex

from ann import atomic, cli
from ann.sweep.space import SweepError
from ann.sweep.trials import (
    DATA_DIR_ENV,
    HEARTBEAT,
    HEARTBEAT_SECONDS,
    SIGNS_OF_LIFE,
    Trial,
    export_pythonpath,
    pythonpath,
)
from ann.train import run_status

# Runs trial $INDEX: its command, its logs, and a trial.json like the local launcher's. A
# resubmitted array runs every index: a finished trial is skipped, its record kept (its rerun
# wrote a trial.json of 2 seconds and nothing else); a resumed one adds an attempt and its
# time to the record, as the local launcher does. The attempt is recorded as it starts, so one
# killed whole (an OOM-killed pod, a job past its time limit: the record's end never written)
# still counts, its time credited when the next attempt starts. While the attempt runs, a
# background loop touches its `heartbeat` file every `HEARTBEAT_SECONDS` (recorded in trial.json
# as `heartbeat_seconds`), dying with it: a trial whose attempt has no recorded end and whose
# heartbeat stopped reads `lost` (`ann.sweep.trials.status`), not `running`, until resubmitted.
# The record is kept by the node's `python3` without importing ann (`trials.unrecorded_seconds`
# is written out again below): the trial runs the sweep's own interpreter by its path (SLURM,
# on the shared file system) or the image's `ann` (a pod), and a trial failing because that
# interpreter is missing or cannot import ann must still get its record; a test holds the two
# estimates equal.
_RUN_TRIAL = """\
record_trial() {{  # DIR start|end [RC]: trial.json, as the local launcher keeps it
  python3 - "$@" >"$1/trial.json.tmp" <<'RECORD'
import json, os, sys, time
path, what = sys.argv[1], sys.argv[2]
try:
    with open(os.path.join(path, "trial.json")) as f:
        record = json.load(f)
except (OSError, ValueError):
    record = {{}}
now, wall = time.time(), record.get("wall_seconds", 0)
start = record.get("started_at")
if what == "start":
    # An attempt that never recorded its end (its pod or job killed whole, this function with
    # it) ran to its last write (ann.sweep.trials.unrecorded_seconds).
    if isinstance(start, (int, float)) and record.get("ended") is None:
        times = [os.path.getmtime(os.path.join(path, n)) for n in {signs}
                 if os.path.exists(os.path.join(path, n))]
        wall += max(0.0, max(times, default=start) - start)
    record.update(launcher="{launcher}", attempts=record.get("attempts", 0) + 1,
                  started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                  started_at=now, ended=None, returncode=None,
                  heartbeat_seconds={beat})
else:
    wall += now - start if isinstance(start, (int, float)) else 0
    record.update(returncode=int(sys.argv[3]),
                  ended=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)))
record["wall_seconds"] = round(wall, 2)
print(json.dumps(record, indent=2, sort_keys=True))
RECORD
  [ -s "$1/trial.json.tmp" ] && mv "$1/trial.json.tmp" "$1/trial.json"  # not if it failed
}}

# A SIGTERM (a pod's preemption, a job's time limit) is passed on to the trial, which saves and
# exits 143; this shell waits for it and records that. (A pod's shell is its PID 1, which the
# kernel spares every signal it has no handler for: the kubelet's SIGTERM was dropped, and ann
# trained on to the SIGKILL.) A Ctrl-C reaches the trial from the terminal itself.
TRIAL="" STOP=""
on_term() {{
  if [ -n "$TRIAL" ]; then kill -TERM "$TRIAL" 2>/dev/null; else STOP=TERM; fi
}}
trap on_term TERM
trap : INT

run_trial() {{
  local dir=$1; shift
  mkdir -p "$dir"
  if grep -Eqs '"status": *"({finished})"' "$dir/run_status.json"; then
    echo "trial $INDEX ($dir) is finished: nothing to run" >&2
    return 0
  fi
  local rc=143  # (stopped before it started)
  record_trial "$dir" start  # (before the first beat: it reads the last attempt's)
  touch "$dir/{heartbeat}"
  (while sleep {beat}; do touch "$dir/{heartbeat}"; done) >/dev/null 2>&1 &
  local beating=$!
  if [ -z "$STOP" ]; then
    # In the background, so that the shell can pass a SIGTERM on (`trap - INT`: a background
    # job would ignore Ctrl-C).
    (trap - INT; exec "$@") >>"$dir/stdout.log" 2>>"$dir/stderr.log" &
    TRIAL=$!
    [ -z "$STOP" ] || kill -TERM "$TRIAL" 2>/dev/null  # one that came as it started
    wait "$TRIAL"; rc=$?
    while kill -0 "$TRIAL" 2>/dev/null; do wait "$TRIAL"; rc=$?; done  # a signal cut it short
    if [ "$rc" -gt 128 ]; then  # a signal may have cut the last wait short as the trial ended
      wait "$TRIAL" 2>/dev/null
      local again=$?
      [ "$again" -eq 127 ] || rc=$again  # its own status, which bash keeps (127: rc is it)
    fi
    TRIAL=""
  fi
  kill "$beating" 2>/dev/null
  record_trial "$dir" end "$rc"
  return "$rc"
}}

case "$INDEX" in
{cases}
  *) echo "no trial $INDEX in this sweep (0-{last})" >&2; exit 2 ;;
esac
"""


def _cases(trials: list[Trial], launcher: str) -> str:
    lines = [
        f"  {i}) run_trial {shlex.quote(t.workdir)} {t.command(image=launcher == 'kubernetes')} ;;"
        for i, t in enumerate(trials)
    ]
    finished = "|".join(("done", *run_status.FINISHED_EARLY))
    return _RUN_TRIAL.format(
        launcher=launcher,
        cases="\n".join(lines),
        last=len(trials) - 1,
        finished=finished,
        signs=repr(SIGNS_OF_LIFE),
        beat=HEARTBEAT_SECONDS,
        heartbeat=HEARTBEAT,
    )


def _job_name(sweep_dir: str) -> str:
    base = os.path.basename(os.path.normpath(sweep_dir)).lower()
    return ("ann-" + re.sub(r"[^a-z0-9-]+", "-", base)).strip("-")[:63]


def _output_pattern(directory: str) -> str:
    """The `#SBATCH --output` value of each array task's log in `directory` (`slurm-%A_%a.out`,
    job and task id): a `%` of the directory doubled (sbatch's filename pattern reads `%%` as
    a `%`), the whole double-quoted with `\\` and `"` escaped where the directory holds
    whitespace, a quote, a backslash or a `#` (sbatch's directive parser, src/sbatch/opt.c
    `_get_argument`: quotes group, a backslash escapes, an unquoted `#` begins a comment)."""
    value = os.path.join(directory.replace("%", "%%"), "slurm-%A_%a.out")
    if not re.search(r"[\s\"'\\#]", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# SLURM's default MaxArraySize (slurm.conf) is 1001: array indices 0 to 1000, and `sbatch`
# refuses a larger array ("Invalid job array specification"). A sweep of more trials is
# submitted by `SLURM_SUBMIT` as array jobs of `SLURM_CHUNK` tasks, task i of the one given
# ANN_ARRAY_OFFSET=K running trial K + i.
SLURM_MAX_ARRAY_SIZE = 1001
SLURM_CHUNK = 1000
SLURM_SCRIPT = "sweep.sbatch"
SLURM_SUBMIT = "submit.sh"
K8S_JOB = "sweep-job.yaml"
# SLURM's default max_script_size (SchedulerParameters): sbatch refuses a larger script.
SLURM_MAX_SCRIPT_BYTES = 4 * 1024 * 1024


def slurm_chunked(trials: list[Trial]) -> bool:
    """Whether the trials are more than one array job holds under SLURM's default limit."""
    return len(trials) > SLURM_MAX_ARRAY_SIZE


def slurm(
    trials: list[Trial], sweep_dir: str, cwd: str, parallel: int, cpus: int, memory: str
) -> str:
    """An sbatch script: `sbatch SWEEP_DIR/sweep.sbatch` runs one array task per trial. Over
    `SLURM_MAX_ARRAY_SIZE` trials, array task i runs trial $ANN_ARRAY_OFFSET + i, and the script
    is submitted by `slurm_submit`'s (submitted alone, its one task says so and fails)."""
    chunked = slurm_chunked(trials)
    size = 1 if chunked else len(trials)
    # 0: as many as SLURM allows; at most the trials (it wrote `--array=0-1%99999999999`).
    throttle = f"%{min(parallel, size)}" if parallel > 0 and not chunked else ""
    submit = os.path.join(sweep_dir, SLURM_SUBMIT)
    index = [
        'INDEX="${SLURM_ARRAY_TASK_ID:?run this with sbatch (or set SLURM_ARRAY_TASK_ID)}"',
    ]
    if chunked:
        index = [
            'TASK="${SLURM_ARRAY_TASK_ID:?run this with sbatch (or set SLURM_ARRAY_TASK_ID)}"',
            f'OFFSET="${{ANN_ARRAY_OFFSET:?this sweep has {len(trials)} trials, more than one '
            f"SLURM array holds by default (MaxArraySize 1001): submit it with bash {submit}, "
            'which sets ANN_ARRAY_OFFSET for each array job of at most 1000 tasks}"',
            "INDEX=$((TASK + OFFSET))",
        ]
    header = [
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name={_job_name(sweep_dir)}",
        f"#SBATCH --array=0-{size - 1}{throttle}",
        f"#SBATCH --cpus-per-task={cpus}",
        f"#SBATCH --mem={memory}",
        f"#SBATCH --signal=B:TERM@{GRACE_SECONDS}",
        # Absolute: sbatch reads a relative one from where it is submitted, not from `cwd`.
        f"#SBATCH --output={_output_pattern(os.path.join(cwd, sweep_dir))}",
        *(
            [
                f"# One array task per trial, submitted by bash {submit}: {len(trials)} trials,",
                f"# in array jobs of at most {SLURM_CHUNK} tasks (SLURM's default MaxArraySize is "
                "1001), task i",
                "# running trial $ANN_ARRAY_OFFSET + i. Run it again to resume the unfinished "
                "ones.",
            ]
            if chunked
            else ["# One array task per trial; resubmit to resume the unfinished ones."]
        ),
        "set -uo pipefail",
        f"cd {shlex.quote(cwd)}",
        *export_pythonpath(pythonpath(cwd)).splitlines(),  # as command.sh: a user's modules
        # XLA sizes its thread pool from the cores SLURM binds; BLAS needs telling.
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        'export OPENBLAS_NUM_THREADS="$OMP_NUM_THREADS" MKL_NUM_THREADS="$OMP_NUM_THREADS"',
        *index,
        "",
    ]
    return "\n".join(header) + _cases(trials, "slurm")


def slurm_submit(trials: list[Trial], sweep_dir: str, cwd: str, parallel: int) -> str:
    """The script that submits `slurm`'s for more trials than one array job holds by default:
    `sbatch` once per `SLURM_CHUNK` trials (ANN_ARRAY_CHUNK in its environment for another
    size), each array job after the one before (`--dependency=afterany`) where `parallel`
    caps the trials at a time, so that cap holds over the whole sweep."""
    cap = min(parallel, SLURM_CHUNK) if parallel > 0 else 0
    throttle = f"%{cap}" if cap else ""
    after = (
        "Each array job starts once the one before it has ended (--dependency=afterany),\n"
        f"# so at most {cap} trials run at a time."
        if cap
        else "The array jobs run side by side (no --parallel was given)."
    )
    return f"""\
#!/usr/bin/env bash
# Submits the {len(trials)} trials of the sweep in {sweep_dir} as SLURM array jobs of at
# most {SLURM_CHUNK} tasks: SLURM's default MaxArraySize, 1001 (array indices 0-1000),
# refuses one array of them all. Task i of the array job given ANN_ARRAY_OFFSET=K runs
# trial K + i. {after}
# A cluster whose limit differs (scontrol show config | grep MaxArraySize): run this with
# ANN_ARRAY_CHUNK=N, N at most that limit. Run this again to resume the unfinished trials
# (finished ones are skipped, their records kept).
set -euo pipefail
cd {shlex.quote(cwd)}
trials={len(trials)}
chunk="${{ANN_ARRAY_CHUNK:-{SLURM_CHUNK}}}"
if [[ ! "$chunk" =~ ^[1-9][0-9]{{0,8}}$ ]]; then  # 0 submitted forever, abc was unbound
  echo "error: ANN_ARRAY_CHUNK=$chunk is not a positive whole number of trials per array job;" \
    "set it to at most your cluster's MaxArraySize, e.g. ANN_ARRAY_CHUNK=1000" >&2
  exit 2
fi
after=""
for ((first = 0; first < trials; first += chunk)); do
  last=$(( (trials - first < chunk ? trials - first : chunk) - 1 ))
  job=$(sbatch --parsable ${{after:+"--dependency=afterany:$after"}} --array="0-$last{throttle}" \\
    --export="ALL,ANN_ARRAY_OFFSET=$first" {shlex.quote(os.path.join(sweep_dir, SLURM_SCRIPT))})
  job="${{job%%;*}}"  # --parsable: JOBID[;CLUSTER]
  echo "submitted trials $first-$((first + last)) of $trials: array job $job"
{'  after="$job"' + chr(10) if cap else ""}done
"""


def _mount(sweep_dir: str, root: str) -> str:
    """Where a pod has the sweep workdir: the PVC, at its path (a relative one from `root`)."""
    return os.path.normpath(os.path.join(root, sweep_dir))


def _in_pod(path: str, trial: Trial, root: str) -> tuple[str | None, bool]:
    """(where a pod has this machine's `path`, relative to the trial's cwd, or None where no pod
    has it; whether it is on the PVC): under the sweep workdir, on the PVC; else under the
    project (the cwd), relative, as the pod starts in the image's copy at `root`."""
    here = os.path.normpath(os.path.join(trial.cwd, path))
    sweep = os.path.normpath(os.path.join(trial.cwd, trial.sweep_dir))
    cwd = os.path.normpath(trial.cwd)
    if os.path.commonpath([here, sweep]) == sweep:
        return os.path.join(_mount(trial.sweep_dir, root), os.path.relpath(here, sweep)), True
    if os.path.commonpath([here, cwd]) == cwd:
        return os.path.relpath(here, cwd), False
    return None, False


def pod_trials(trials: list[Trial], root: str) -> list[Trial]:
    """`trials` as a pod runs them: the paths their commands need as the pod has them (the
    project at `root`, the sweep workdir on the PVC), and no data directory of this machine
    (`env TFDS_DATA_DIR=DIR`) outside the PVC: the pods read the image's $TFDS_DATA_DIR. A
    SweepError for a --config or data.data_dir no pod has (this machine's, outside both)."""
    out, dropped = [], ""
    for trial in trials:
        path, colon, arg = trial.config.partition(":")
        config, _ = _in_pod(path, trial, root)
        if config is None:
            raise SweepError(
                f"--emit=k8s: --config={trial.config} is outside {trial.cwd}, the project the "
                f"image holds at --image_root={root}, so no pod has it; copy it into the project "
                f"before the image is built, e.g. cp {path} {os.path.join(trial.cwd, 'configs')}/ "
                f"and --config=configs/{os.path.basename(path)}"
            )
        data_dir = trial.values().get("data.data_dir", "")
        if data_dir:  # given: the pod reads it where it has it
            data_dir, _ = _in_pod(data_dir, trial, root)
            if data_dir is None:
                raise SweepError(
                    f"--emit=k8s: trial {trial.name} reads data.data_dir="
                    f"{trial.values()['data.data_dir']}, a directory of this machine no pod has; "
                    "give one under the sweep workdir (the PVC) or the project, or "
                    '--config.data.data_dir="" for the image\'s $TFDS_DATA_DIR'
                )
        env = dict(trial.env)
        if DATA_DIR_ENV in env:
            pod_dir, on_pvc = _in_pod(env[DATA_DIR_ENV], trial, root)
            if on_pvc:
                env[DATA_DIR_ENV] = pod_dir
            else:
                dropped = env.pop(DATA_DIR_ENV)
        out.append(
            dataclasses.replace(trial, config=config + colon + arg, data_dir=data_dir, env=env)
        )
    if dropped:
        cli.note(
            f"the pods read their data from the image's $TFDS_DATA_DIR (ann's offline sets are "
            f"built there), not this machine's {dropped}, which they do not have; a data "
            "directory under the sweep workdir (the PVC) is passed to them"
        )
    return out


def pod_pythonpath(trial: Trial, root: str) -> list[str]:
    """The sweep's `$PYTHONPATH` (`trials.pythonpath`) as a pod has it: entries under the
    project from the image's copy at `root`, entries under the sweep workdir on the PVC. An
    entry of this machine outside both is left out with a `note:` (no pod has it: a module the
    trial needs from there fails it with "No module named ...")."""
    entries, missing = [], []
    for entry in pythonpath(trial.cwd):
        there, _ = _in_pod(entry, trial, root)
        if there is None:
            missing.append(entry)
        else:
            entries.append(os.path.normpath(os.path.join(root, there)))
    if missing:
        cli.note(
            f"the pods' PYTHONPATH leaves out {os.pathsep.join(missing)}: outside {trial.cwd}, "
            f"the project the image holds at --image_root={root}, so no pod has it; put the "
            "modules the trials import under the project"
        )
    return entries


# A pod runs its script as one argument (`bash -c SCRIPT`), and Linux refuses an argument over
# 128 KiB (MAX_ARG_STRLEN: the container fails to start, "argument list too long"); `kubectl
# apply` also copies the manifest into an annotation of at most 256 KiB. Every trial's command
# is in the script (about 270 bytes each), so a Job of more than about 400 trials failed. A
# larger script goes gzipped into a ConfigMap beside the Job (at most 1 MiB: tens of thousands
# of trials, at about 13 bytes each gzipped), which the pods mount and run, applied with
# `kubectl apply --server-side` (no annotation).
K8S_INLINE_BYTES = 100_000
# The time a stopped trial has to save a checkpoint before it exits 143: a pod's grace period
# (Kubernetes' default is 30 s), as scripts/cluster/k8s_train_job.yaml's, and how long before
# a SLURM array task's time limit its shell is sent SIGTERM, which it passes on (`--signal=B:`,
# as scripts/cluster/slurm_train.sbatch's; without it a trial had SLURM's KillWait, 30 s).
GRACE_SECONDS = 120
K8S_CONFIGMAP_BYTES = 1_000_000
K8S_SCRIPTS = "/ann-trials"


def in_configmap(path: str) -> bool:
    """Whether the manifest at `path` holds its trials in a ConfigMap (`kubernetes`)."""
    with open(path) as f:
        return "\nkind: ConfigMap\n" in f.read()


def apply_command(path: str) -> str:
    """How to submit the manifest at `path`: server-side where it holds a ConfigMap, whose
    size client-side apply's annotation (256 KiB) may not hold."""
    return f"kubectl apply {'--server-side ' if in_configmap(path) else ''}-f {path}"


def _packed(script: str, scripts: str, count: int) -> tuple[str, str] | None:
    """For a pod script over `K8S_INLINE_BYTES`: (the ConfigMap named `scripts` holding it
    gzipped, as YAML ending in its document separator; the short script a pod runs instead,
    which reads it from `K8S_SCRIPTS`), None for one that fits inline. A SweepError where it
    is over `K8S_CONFIGMAP_BYTES` even gzipped."""
    if len(script.encode()) <= K8S_INLINE_BYTES:
        return None
    packed = gzip.compress(script.encode(), mtime=0)
    if len(packed) > K8S_CONFIGMAP_BYTES:
        raise SweepError(
            f"--emit=k8s: the {count} trials' commands take {len(packed)} bytes "
            f"gzipped, more than a ConfigMap holds (1 MiB); split get_sweep into sweeps "
            "of fewer trials, each with its own --workdir"
        )
    configmap = (
        f"# The trials' script, gzipped: one argument of over 128 KiB fails a container's "
        f"start.\n# Read it: kubectl get configmap {scripts} -o jsonpath="
        "'{.binaryData.trials\\.sh\\.gz}' | base64 -d | gunzip\n"
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {scripts}\nbinaryData:\n"
        f"  trials.sh.gz: {base64.b64encode(packed).decode()}\n---\n"
    )
    run = (
        "script=$(python3 -c 'import gzip, sys; sys.stdout.buffer.write(gzip.open(sys.argv[1]"
        f").read())' {K8S_SCRIPTS}/trials.sh.gz) || exit 2\n"
        'eval "$script"\n'
    )
    return configmap, run


def kubernetes(
    trials: list[Trial],
    sweep_dir: str,
    parallel: int,
    cpus: int,
    memory: str,
    image: str,
    pvc: str,
    root: str,
) -> str:
    """An indexed Job: `kubectl apply -f SWEEP_DIR/sweep-job.yaml`, one index per trial.

    The image holds the project at `root` (its working directory, where the commands' relative
    paths start); the sweep workdir is a PersistentVolumeClaim mounted at the same path, so
    every pod writes its trial where --summarize looks. The commands are `pod_trials`'. A
    script over `K8S_INLINE_BYTES` goes gzipped into a ConfigMap before the Job (`kubectl
    apply --server-side`); a SweepError where that is over `K8S_CONFIGMAP_BYTES`."""
    mount = _mount(sweep_dir, root)
    pods = pod_trials(trials, root)
    script = (
        "set -uo pipefail\n"
        + export_pythonpath(pod_pythonpath(trials[0], root))
        + 'INDEX="$JOB_COMPLETION_INDEX"\n'
        + _cases(pods, "kubernetes")
    )
    on_pvc = next((t.env[DATA_DIR_ENV] for t in pods if DATA_DIR_ENV in t.env), None)
    data = (
        f"{on_pvc}, on the PVC"
        if on_pvc
        else "the image's $TFDS_DATA_DIR (ann's offline sets are built there), not this machine's"
    )
    name = _job_name(sweep_dir)
    scripts = f"{name}-trials"[:63]
    packed = _packed(script, scripts, len(trials))
    configmap, volume, mounted, apply = "", "", "", "kubectl apply"
    if packed is not None:
        configmap, script = packed
        mounted = f"\n            - name: trials\n              mountPath: {K8S_SCRIPTS}"
        volume = f"\n        - name: trials\n          configMap:\n            name: {scripts}"
        apply = "kubectl apply --server-side"
    body = "\n".join("              " + line if line else "" for line in script.splitlines())
    return f"""\
# Kubernetes indexed Job: one index per trial of the sweep in {sweep_dir}.
#   {apply} -f {os.path.join(sweep_dir, K8S_JOB)}
# The image holds the project at {root}, where the trials' relative paths start; the sweep
# workdir is the PVC {pvc}, mounted at {mount}.
# A trial whose data.data_dir is "" reads {data}.
# Reapplying (after deleting the Job) resumes unfinished trials.
{configmap}apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  completionMode: Indexed
  completions: {len(trials)}
  parallelism: {min(parallel, len(trials)) if parallel > 0 else len(trials)}
  # A failing trial fails its own index (retried once: it resumes), not the others'
  # (Kubernetes >= 1.29).
  backoffLimitPerIndex: 1
  # A preempted trial saves and exits 143 (saved, not finished): recreated, not counted.
  podFailurePolicy:
    rules:
      - action: Ignore
        onExitCodes: {{containerName: trial, operator: In, values: [143]}}
      - action: Ignore
        onPodConditions: [{{type: DisruptionTarget}}]
  template:
    spec:
      restartPolicy: Never
      # Between the SIGTERM and the SIGKILL: time for the checkpoint the SIGTERM asks for.
      terminationGracePeriodSeconds: {GRACE_SECONDS}
      containers:
        - name: trial
          image: {image}
          workingDir: {root}
          env:
            - name: OMP_NUM_THREADS
              value: "{cpus}"
            - name: OPENBLAS_NUM_THREADS
              value: "{cpus}"
          resources:
            requests: {{cpu: "{cpus}", memory: "{memory}"}}
            limits: {{cpu: "{cpus}", memory: "{memory}"}}
          volumeMounts:
            - name: sweep
              mountPath: {mount}{mounted}
          command:
            - bash
            - -c
            - |
{body}
      volumes:
        - name: sweep
          persistentVolumeClaim:
            claimName: {pvc}{volume}
"""


def write(kind: str, trials: list[Trial], sweep_dir: str, **options) -> str:
    """Writes the launcher file into the sweep workdir; returns its path. Its refusal (a path
    no pod has) comes before anything is made. A SLURM sweep of more trials than one array
    holds (`slurm_chunked`) also gets `SLURM_SUBMIT`, beside it, which submits it (an older
    one is removed where one array holds them)."""
    if kind == "slurm":
        path, text = os.path.join(sweep_dir, SLURM_SCRIPT), slurm(trials, sweep_dir, **options)
        if (size := len(text.encode())) > SLURM_MAX_SCRIPT_BYTES:
            cli.warn(
                f"{path} is {size / 2**20:.1f} MiB ({len(trials)} trials' commands), over "
                "SLURM's default max_script_size, 4 MiB (SchedulerParameters), which sbatch "
                "refuses; split get_sweep into sweeps of fewer trials, each with its own "
                "--workdir, unless your cluster's limit is higher"
            )
        submit = os.path.join(sweep_dir, SLURM_SUBMIT)
        if slurm_chunked(trials):
            cwd, parallel = options["cwd"], options["parallel"]
            os.makedirs(sweep_dir, exist_ok=True)
            atomic.write_text(submit, slurm_submit(trials, sweep_dir, cwd, parallel))
            os.chmod(submit, 0o755)
        elif os.path.exists(submit):
            os.remove(submit)
    else:
        path, text = (
            os.path.join(sweep_dir, K8S_JOB),
            kubernetes(trials, sweep_dir, **options),
        )
    os.makedirs(sweep_dir, exist_ok=True)
    atomic.write_text(path, text)
    # The other launcher's file of an earlier emit runs the same trials: submitted beside this
    # one, two jobs would train them at once into the same workdirs.
    other, other_kind = (K8S_JOB, "k8s") if kind == "slurm" else (SLURM_SCRIPT, "slurm")
    if os.path.exists(stale := os.path.join(sweep_dir, other)):
        cli.warn(
            f"{stale}, from an earlier --emit={other_kind}, is still there and runs the same "
            "trials: submit only one of the two (or delete it)"
        )
    return path
