#!/usr/bin/env bash
# On a GPU machine: the causal LM's tokens/s and MFU, train the default experiment and the
# ResNet, the train benchmarks (ann vs bare, CNN and MLP), then start-up cold and warm.
#   scripts/gpu_check.sh OUTDIR
# Prints the device, the LM's MFU, eval results, the ann/bare ratios and start-up times; full
# logs go to OUTDIR.
set -u
case "${1:-}" in
  -h|--help|-help)
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
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
# The causal LM at a size that fills the GPU (0.87B parameters, 16 x 2,048 tokens, bf16, cudnn
# attention; remat only if XLA's memory estimate needs it): tokens/s and MFU (goal >= 0.40).
# jax takes 75% of the GPU's memory by default; the 1b step wants about 100 GB of the 141.
XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 python3 scripts/bench_lm.py --size=1b \
  --out="$out/bench_lm_1b.json" 2>&1 | grep -v -i warn | tee "$out/bench_lm_1b.txt"
for cfg in digits_cnn digits_resnet; do
  /usr/bin/time -f "$cfg wall %es" python3 -m ann.main --config=configs/$cfg.py \
    --workdir=/tmp/runs/$cfg >"$out/train_$cfg.log" 2>&1
  grep -E "model |step [0-9]+/[0-9]+ \(100%\)|eval step|done:|error|wall" "$out/train_$cfg.log"
done
python3 scripts/bench_train.py --steps=500 --rounds=3 2>&1 | grep -v -i warn | tee "$out/bench_cnn.txt"
python3 scripts/bench_train.py --steps=500 --rounds=3 --config.batch_size=1024 2>&1 \
  | grep -v -i warn | tee "$out/bench_cnn_b1024.txt"
python3 scripts/bench_train.py --config=configs/digits_mlp.py --steps=1000 --rounds=3 2>&1 \
  | grep -v -i warn | tee "$out/bench_mlp.txt"
# The train step against the JAX peers (2x2 max pool by reshape: its gradient must not be slower
# than nnx.max_pool's select-and-scatter on GPU); PyTorch rows when --torch_python exists.
python3 scripts/bench_peers.py --steps=500 --rounds=3 2>&1 | grep -v -i warn \
  | tee "$out/bench_peers.txt"
# steps_per_call (default auto: 10 here) against one step per call, and eval against a bare
# eval loop: multi-step dispatch must not make the GPU slower either.
python3 scripts/bench_train.py --config=configs/digits_mlp.py --steps=1000 --rounds=3 \
  --config.steps_per_call=1 2>&1 | grep -v -i warn | tee "$out/bench_mlp_k1.txt"
python3 scripts/bench_train.py --eval --rounds=3 2>&1 | grep -v -i warn | tee "$out/bench_eval.txt"
# The same ratios on that machine's CPU cores, where nothing else runs.
JAX_PLATFORMS=cpu python3 scripts/bench_train.py --steps=200 --rounds=3 2>&1 | grep -v -i warn \
  | tee "$out/bench_cnn_cpu.txt"
JAX_PLATFORMS=cpu python3 scripts/bench_train.py --config=configs/digits_mlp.py --steps=1000 \
  --rounds=3 2>&1 | grep -v -i warn | tee "$out/bench_mlp_cpu.txt"
# Start-up of `ann train`, cold and warm compilation cache, on the GPU.
python3 scripts/bench_startup.py --rounds=1 2>&1 | grep -v -i warn | tee "$out/bench_startup.txt"
