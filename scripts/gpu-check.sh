#!/usr/bin/env bash
# GPU check for a fresh machine with an NVIDIA GPU (`make bench-gpu`): installs what it needs,
# exports the full models (fp32 and fp16), and writes the GPU reports under benchmarks/results/:
#   <ts>-precision-fp16-full.{md,json}  fp32 vs fp16 per model on the CUDA execution provider
#   <ts>-full-gpu.{md,json}             sequential vs Triton (embedded, KIND_GPU, CUDA EP), fp32
#   <ts>-full-gpu.{md,json}             the same with the fp16 exports (--precision fp16)
# Budget: under 8 minutes on a 16-core H200 host (setup ~2-3 min from the package registries,
# exports ~1-2 min, benchmarks ~3 min). NOT YET RUN: no GPU machine was lent to the session that
# wrote it (docs/benchmarks.md, "GPU"). The NGC container's TensorRT accelerator
# (FACECRAFT_GPU_ACCELERATOR=tensorrt) is not exercised here: the embedded runtime runs the CUDA EP.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[gpu-check $(date -u +%H:%M:%S)] $*" >&2; }
command -v nvidia-smi >/dev/null && nvidia-smi -L || { log "no NVIDIA GPU visible (nvidia-smi)"; exit 2; }

OUT=${FACECRAFT_GPU_OUT:-benchmarks/results}
REPO=${FACECRAFT_GPU_REPO:-.facecraft/bench/full-gpu/model_repository}
REQUESTS=${FACECRAFT_GPU_REQUESTS:-32}
START=$(date +%s)

log "setup: .venv with the project (make setup), then onnxruntime-gpu in place of onnxruntime"
make setup >&2
# onnxruntime and onnxruntime-gpu install the same module: exactly one of them may be present
.venv/bin/python -m pip uninstall -y -q onnxruntime
.venv/bin/python -m pip install -q --progress-bar off "onnxruntime-gpu>=1.18"
.venv/bin/python - <<'PY'
import onnxruntime as ort
providers = ort.get_available_providers()
print("onnxruntime", ort.__version__, providers)
if "CUDAExecutionProvider" not in providers:
    raise SystemExit("onnxruntime-gpu offers no CUDAExecutionProvider (CUDA/cuDNN libraries missing?)")
PY

log "export: full preset, fp32 and fp16 (official weights when reachable, else seeded random = UNTRAINED)"
mkdir -p "$REPO"
cp -r model_repository/. "$REPO"/
for model in codeformer u2net; do
    .venv/bin/facecraft export "$model" --preset full --weights auto --repo "$REPO"
    .venv/bin/facecraft export "$model" --preset full --weights auto --repo "$REPO" --precision fp16
done

log "fp32 vs fp16 per model (CUDA EP, same inputs)"
.venv/bin/facecraft bench-precision --repo "$REPO" --precision fp16 --device gpu --out "$OUT"

for precision in fp32 fp16; do
    log "served benchmark, $precision: sequential vs Triton gRPC (KIND_GPU, committed batching)"
    .venv/bin/facecraft bench --preset full --device gpu --repo "$REPO" --precision "$precision" \
        --concurrency 1,4,16 --requests "$REQUESTS" --enhanced-requests "$REQUESTS" \
        --scenarios sequential,triton --out "$OUT"
done
log "done in $(( $(date +%s) - START )) s; reports in $OUT"
