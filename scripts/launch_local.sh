#!/usr/bin/env bash
# Starts N processes of one ann run on this machine, for testing multi-process code on CPU:
#   scripts/launch_local.sh N -- --config=configs/digits_cnn.py --workdir=runs/x [flags...]
# Process i gets --process_id=i and a shared --coordinator_address on 127.0.0.1. If one process
# fails, the others are killed at once; the exit status is the first failure's (0 when all
# succeed).
# Set ANN_DEVICES_PER_PROCESS to give each process that many fake CPU devices.
set -u
# N: a whole number of processes, 1 or more (0 ran nothing and exited 0; "abc" was an
# "unbound variable" from bash).
if [ $# -lt 2 ] || [ "$2" != "--" ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N -- <ann train flags>   (N: the number of processes, >= 1)" >&2
  exit 2
fi
n=$1
shift 2
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if [ -n "${ANN_DEVICES_PER_PROCESS:-}" ]; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$ANN_DEVICES_PER_PROCESS"
fi
pids=()
# SIGTERM to this script is passed on as SIGTERM (every process saves a checkpoint at a step
# they agree on and exits 143, as on a preempted cluster; so does this script), Ctrl-C as SIGINT (the same save, then
# each says `process I of N: interrupted at step N (Ctrl-C)` and exits 130, as one process
# does); the script waits for them. The processes start in their own process groups (job control, `set -m`):
# otherwise bash starts them ignoring SIGINT, and a Ctrl-C in the terminal would reach them
# besides the one passed on here. ANN_LAUNCHER_PID names this script to them: if it is killed
# without passing a signal on (SIGKILL to its process group, a closed terminal), each sees it
# gone and stops as on SIGTERM (ann/train/launcher.py), rather than train on holding the lock.
# Started in the background by a non-interactive shell (`launch_local.sh ... &` in a script),
# this script ignores SIGINT (bash cannot trap a signal ignored on entry): use SIGTERM there.
export ANN_LAUNCHER_PID=$$
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
trap 'kill -INT "${pids[@]}" 2>/dev/null' INT
set -m
for ((i = 0; i < n; i++)); do
  python3 -m ann.main --coordinator_address="127.0.0.1:$port" --num_processes="$n" \
    --process_id="$i" "$@" &
  pids+=($!)
done
set +m
# bash's own job notices (`launch_local.sh: line 83: 3404 Killed python3 -m ann.main ...` for a
# process this script killed) are noise: its stderr goes to /dev/null from here, its lines to
# fd 3 (the processes keep the stderr they were started with).
exec 3>&2 2>/dev/null
# Watch all processes: when one fails, stop the others at once rather than leave them blocked
# in a collective with a dead peer.
status=0
alive=("${pids[@]}")
while [ "${#alive[@]}" -gt 0 ]; do
  still=()
  codes=()
  for pid in "${alive[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      still+=("$pid")
      continue
    fi
    wait "$pid"
    codes+=($?)
  done
  # Of the processes that ended since the last look, one killed by a signal (137: kill -9, the
  # OOM killer) is named before one that failed because its peer was gone (status 1), which
  # follows it within a second.
  for code in "${codes[@]}"; do
    if [ "$code" -gt 128 ] && [ "$code" -ne 130 ] && [ "$code" -ne 143 ]; then
      codes=("$code" "${codes[@]}")
      break
    fi
  done
  for code in "${codes[@]}"; do
    if [ "$code" -ne 0 ] && [ "$status" -eq 0 ]; then
      status=$code
      # A failure stops the others at once, by SIGKILL: a checkpoint needs every process, so
      # theirs could not complete (a SIGTERM made them save, and they waited for the dead peer
      # at Orbax's commit barrier until the heartbeat timeout, 5 minutes, then crashed); their
      # last complete checkpoint is what a rerun resumes from. An interrupted one (130, Ctrl-C;
      # 143, SIGTERM) leaves them to finish saving the step they agreed on.
      # The same command resumes only where a signal ended the process (137: kill -9, the OOM
      # killer; 134: an abort); one that refused to start or failed (status 1: a config error,
      # a held workdir, a lost peer) says why in its own error line, and would again.
      if [ "$code" -ne 130 ] && [ "$code" -ne 143 ]; then
        if [ "$code" -gt 128 ]; then
          why="the same command resumes from the last complete checkpoint"
        else
          why="its error line above says why"
        fi
        echo "launch_local.sh: a process ended with status $code; stopping the others now" \
          "(a checkpoint needs every process); $why" >&3
        for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; done
      fi
    fi
  done
  alive=("${still[@]}")
  [ "${#alive[@]}" -gt 0 ] && sleep 0.5
done
exit "$status"
