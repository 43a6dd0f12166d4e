#!/usr/bin/env bash
# On a GPU machine: the causal LM's tokens/s and MFU, the train benchmarks (ann vs bare, CNN and
# MLP), train the default experiment and the ResNet, the peers, serving (answers checked, then
# throughput), and start-up cold and warm.
#   scripts/gpu_check.sh OUTDIR
# Prints the device, the LM's MFU, eval results, the ann/bare ratios and start-up times; full
# logs go to OUTDIR.
set -u
case "${1:-}" in
  -h|--help|-help)
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    exit 0 ;;
  -*)
    echo "error: unknown option $1; usage: scripts/gpu_check.sh [OUTDIR] (on a GPU machine)" >&2
    exit 1 ;;
esac
if ! command -v nvidia-smi >/dev/null; then
  echo "error: no nvidia-smi here; scripts/gpu_check.sh is for a machine with an NVIDIA GPU" >&2
  exit 1
fi
out=${1:-/tmp/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TFDS_DATA_DIR=${TFDS_DATA_DIR:-/tmp/tensorflow_datasets}
nvidia-smi -L
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
# Each step under a time limit (seconds) so one that hangs does not take the lease, its output
# filtered line by line (a plain grep into a pipe holds it back: a killed step printed nothing).
step() {  # step SECONDS LOGNAME COMMAND...
  local limit=$1 log=$2
  shift 2
  timeout -k 10 "$limit" "$@" 2>&1 | grep --line-buffered -v -i warn | tee "$out/$log"
  [ "${PIPESTATUS[0]}" = 124 ] && echo "$log: stopped after $limit s" >&2
}
# The causal LM at a size that fills the GPU (0.87B parameters, 16 x 2,048 tokens, bf16, cudnn
# attention; remat only if XLA's memory estimate needs it): tokens/s and MFU (goal >= 0.40).
# jax takes 75% of the GPU's memory by default; the 1b step wants about 58 GiB by XLA's estimate.
XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 step 300 bench_lm_1b.txt python3 scripts/bench_lm.py \
  --size=1b --out="$out/bench_lm_1b.json"
# ann's loop against a bare jax.jit loop: the CNN (batch 128 and 1024) and the MLP.
step 120 bench_cnn.txt python3 scripts/bench_train.py --steps=500 --rounds=3
step 120 bench_cnn_b1024.txt python3 scripts/bench_train.py --steps=500 --rounds=3 \
  --config.batch_size=1024
step 120 bench_mlp.txt python3 scripts/bench_train.py --config=configs/digits_mlp.py \
  --steps=1000 --rounds=3
for cfg in digits_cnn digits_resnet; do
  step 180 "train_$cfg.log" /usr/bin/time -f "$cfg wall %es" python3 -m ann.main \
    --config=configs/$cfg.py --workdir=/tmp/runs/$cfg >/dev/null
  grep -E "model |step [0-9]+/[0-9]+ \(100%\)|eval step|done:|error|wall" "$out/train_$cfg.log"
done
# The train step against the JAX peers (2x2 max pool by reshape: its gradient must not be slower
# than nnx.max_pool's select-and-scatter on GPU); PyTorch rows when --torch_python exists.
step 180 bench_peers.txt python3 scripts/bench_peers.py --steps=500 --rounds=3
# steps_per_call (default auto: 10 here) against one step per call, and eval against a bare
# eval loop: multi-step dispatch must not make the GPU slower either.
step 120 bench_mlp_k1.txt python3 scripts/bench_train.py --config=configs/digits_mlp.py \
  --steps=1000 --rounds=3 --config.steps_per_call=1
step 120 bench_eval.txt python3 scripts/bench_train.py --eval --rounds=3
# Serving on the GPU: each server's answers checked against the export's in-process labels,
# then its throughput and latency with dynamic batching (server and load generator pinned).
step 240 bench_serve.txt python3 scripts/bench_serve.py --models=cnn,cnn_large \
  --concurrency=1,8,64 --seconds=3 --nobatch1 --workdir=/tmp/runs/bench_serve
# The same ratios on that machine's CPU cores, where nothing else runs.
JAX_PLATFORMS=cpu step 120 bench_cnn_cpu.txt python3 scripts/bench_train.py --steps=200 --rounds=3
JAX_PLATFORMS=cpu step 120 bench_mlp_cpu.txt python3 scripts/bench_train.py \
  --config=configs/digits_mlp.py --steps=1000 --rounds=3
# Start-up of `ann train`, cold and warm compilation cache, on the GPU.
step 180 bench_startup.txt python3 scripts/bench_startup.py --rounds=1
