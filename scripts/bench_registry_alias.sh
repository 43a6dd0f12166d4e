#!/usr/bin/env bash
# Wall time of `ann registry alias` in two source trees, alternating, each alias its own
# process: usage: scripts/bench_registry_alias.sh BASE_TREE BRANCH_TREE EXPORT_DIR [ROUNDS]
# A fresh registry per try holds EXPORT_DIR as models:/digits/1 (registered untimed, by the
# branch); the timed command points alias `champion` at it. Prints one line per try and the
# median of each tree, then where the time goes (JAX's import, the check) in the branch.
set -euo pipefail
base=$1 branch=$2 export_dir=$3 rounds=${4:-7}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
declare -A times
for round in $(seq "$rounds"); do
  for tree in "$base" "$branch"; do
    rm -rf "$work/reg"
    PYTHONPATH=$branch python -m ann registry --registry="$work/reg" register "$export_dir" \
      --name=digits >/dev/null
    start=$(date +%s.%N)
    PYTHONPATH=$tree python -m ann registry --registry="$work/reg" alias digits champion 1 \
      >/dev/null
    took=$(echo "$(date +%s.%N) - $start" | bc)
    echo "round $round $tree: $took s"
    times[$tree]+="$took "
  done
done
for tree in "$base" "$branch"; do
  echo "$tree median: $(echo "${times[$tree]}" | tr ' ' '\n' | grep . | sort -n |
    awk '{a[NR]=$1} END {print a[int((NR+1)/2)] " s (" a[1] "-" a[NR] ")"}')"
done
# Where the time goes, in the branch, one fresh process each: JAX's import and the check.
for _ in 1 2 3 4 5; do
  PYTHONPATH=$branch python - "$export_dir" <<'PY'
import sys
import time

t0 = time.perf_counter()
from ann import artifact

t1 = time.perf_counter()
import jax  # noqa: F401

t2 = time.perf_counter()
manifest = artifact.read_manifest(sys.argv[1])
t3 = time.perf_counter()
artifact.check_function(sys.argv[1], manifest)
t4 = time.perf_counter()
print(
    f"ann.artifact {t1 - t0:.2f} s, import jax {t2 - t1:.2f} s, read_manifest "
    f"{1e3 * (t3 - t2):.1f} ms, check_function {1e3 * (t4 - t3):.1f} ms"
)
PY
done
