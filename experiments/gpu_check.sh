#!/usr/bin/env bash
# Checks that jaxcnn jit-compiles, computes correctly and trains on a GPU, and times it.
#
# Command:  JAXCNN_DATA_DIR=/path/to/data bash experiments/gpu_check.sh OUT_DIR
#           (run on a machine with a GPU and JAX's GPU build; PyTorch with CUDA is optional)
# Smoke:    JAXCNN_DATA_DIR=../shared/data TORCH_DEVICE=cpu SMOKE=1 bash experiments/gpu_check.sh /tmp/gc
#           (every stage on a tiny subset, one test file: checks the script itself, on any machine)
# Budget:   GPU_CHECK_SECONDS (default 480): the tests, last, get what is left of it
# Tests:    TESTS="tests/test_cpu_layers.py tests/test_train.py" runs those test files instead of the list below
# Time:     about 5 minutes on one H100 (README "Devices" has the figures and the machine)
# Result:   OUT_DIR/gpu_check.log (every stage's output), OUT_DIR/bench/results.{json,md} (the
#           benchmark, PyTorch on the GPU too; OUT_DIR/bench_xla_defaults: the same with XLA's
#           defaults for jaxcnn), OUT_DIR/main_job.md and OUT_DIR/main_job.json
#           (the main job's table and figures). The run directories go to a temporary folder.
#
# Stages, each with its own time limit so that one slow stage cannot hide the others:
# devices, the benchmark (twice: jaxcnn's XLA options, then XLA's defaults), time to 99% on MNIST
# (compilation cache off), the main job, one epoch in bfloat16 through the CLI, and the tests that
# compare the layers and the training loop with their references (NumPy, Flax, worked numbers),
# which on a GPU run the plain lax layers.
set -u
out=$(realpath -m "${1:?usage: bash experiments/gpu_check.sh OUT_DIR}")
mkdir -p "$out"
log="$out/gpu_check.log"
work=$(mktemp -d)
export PYTHONUNBUFFERED=1
torch_device=${TORCH_DEVICE:-cuda}
smoke=()
tests=(tests/test_article_numbers.py tests/test_layers_reference.py tests/test_layers_flax.py tests/test_shapes.py
       tests/test_golden.py tests/test_model.py tests/test_cpu_layers.py tests/test_train.py)
if [ -n "${TESTS:-}" ]; then read -ra tests <<<"$TESTS"; fi
if [ -n "${SMOKE:-}" ]; then smoke=(--smoke); tests=(tests/test_article_numbers.py); fi
cd "$(dirname "$0")/.."

stage() {  # stage NAME SECONDS COMMAND...: run it with a time limit, log it, print how it ended
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s%N)
    echo "== $name: $*" >>"$log"
    timeout "$limit" "$@" >>"$log" 2>&1
    rc=$?
    echo "== $name: exit $rc after $((($(date +%s%N) - start) / 1000000)) ms" | tee -a "$log"
}

stage devices 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
    python3 -c "import jax, jaxlib, flax, optax; print(\"jax\", jax.__version__, \"flax\", flax.__version__,
    \"optax\", optax.__version__, jax.devices())";
    python3 -c "import torch; print(\"torch\", torch.__version__, torch.cuda.is_available())"'
tail -n 3 "$log"
stage benchmark 150 python3 experiments/benchmark.py --torch-device "$torch_device" --out "$out/bench" "${smoke[@]}"
tail -n 6 "$out/bench/results.md" 2>/dev/null
# jaxcnn with XLA's defaults, for the price of its GPU options (deterministic kernels)
stage benchmark_xla_defaults 150 python3 experiments/benchmark.py --torch-device "$torch_device" --xla-defaults \
    --out "$out/bench_xla_defaults" "${smoke[@]}"
tail -n 2 "$out/bench_xla_defaults/results.md" 2>/dev/null
stage time_to_99 90 env JAXCNN_COMPILE_CACHE=off python3 experiments/time_to_accuracy.py "${smoke[@]}"
grep -E "^(reached|wall time from)" "$log" | tail -n 2
stage main_job 150 python3 experiments/reproduce_article.py --out "$work/reproduce_article" --no-progress "${smoke[@]}"
cp "$work/reproduce_article/results.md" "$out/main_job.md" 2>/dev/null
cp "$work/reproduce_article/results.json" "$out/main_job.json" 2>/dev/null
tail -n 6 "$log"
stage bfloat16_epoch 90 python3 -m jaxcnn train specs/lenet_mnist.json --dataset mnist --epochs 1 \
    --compute-dtype bfloat16 --out "$work/bf16" --no-progress
tail -n 3 "$log"
left=$((${GPU_CHECK_SECONDS:-480} - SECONDS))
stage tests $((left > 30 ? left : 30)) python3 -m pytest -q -p no:cacheprovider "${tests[@]}"
tail -n 5 "$log"
rm -rf "$work"
