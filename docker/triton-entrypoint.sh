#!/bin/sh
# Start Triton in the NGC container on a working copy of the model repository.
#
# The repository (baked into the image, or mounted read-only at $FACECRAFT_MODEL_REPOSITORY) is
# never edited: `facecraft repo configure --output` writes a runtime copy at
# $FACECRAFT_WORK_REPOSITORY with the instance plan for $FACECRAFT_DEVICE (cpu|gpu): by default
# chosen from the container's cores (docs/runtime.md); $FACECRAFT_INSTANCES (instances per ONNX
# model), $FACECRAFT_ONNX_THREADS (onnxruntime threads per instance) and
# $FACECRAFT_PYTHON_INSTANCES override it; $FACECRAFT_PRECISION (fp32 | int8 | fp16 | per model)
# and $FACECRAFT_GPU_ACCELERATOR (cuda | tensorrt) reach `facecraft repo configure` through the
# environment. $FACECRAFT_PYTHON_SHM_DEFAULT_MB / $FACECRAFT_PYTHON_SHM_GROWTH_MB size the Python
# backend's shared-memory region per model instance and its growth step (MiB, default 16 / 16 as
# in facecraft.runtime.server; 0 = Triton's 1 MiB; docs/reliability.md). Extra arguments are
# passed on to tritonserver.
set -eu

SOURCE=${FACECRAFT_MODEL_REPOSITORY:-/models}
WORK=${FACECRAFT_WORK_REPOSITORY:-/tmp/facecraft/model_repository}
DEVICE=${FACECRAFT_DEVICE:-cpu}
INSTANCES=${FACECRAFT_INSTANCES:-}
ONNX_THREADS=${FACECRAFT_ONNX_THREADS:-}
PYTHON_INSTANCES=${FACECRAFT_PYTHON_INSTANCES:-}
TRITONSERVER=${FACECRAFT_TRITONSERVER:-tritonserver}
FACECRAFT=${FACECRAFT_CLI:-facecraft}
SHM_DEFAULT_MB=${FACECRAFT_PYTHON_SHM_DEFAULT_MB:-16}
SHM_GROWTH_MB=${FACECRAFT_PYTHON_SHM_GROWTH_MB:-16}

fail() {
    echo "triton-entrypoint: error: $*" >&2
    exit 2
}

case "$DEVICE" in
    cpu | gpu) ;;
    *) fail "FACECRAFT_DEVICE must be cpu or gpu, got '$DEVICE'" ;;
esac
for value in "$SHM_DEFAULT_MB" "$SHM_GROWTH_MB"; do
    case "$value" in
        '' | *[!0-9]*) fail "FACECRAFT_PYTHON_SHM_DEFAULT_MB / _GROWTH_MB must be whole MiB (0 = Triton's default), got '$value'" ;;
    esac
done
# Python backend shared memory: one --backend-config per setting that is not Triton's default,
# put before the caller's own arguments (which stay last, so they can still override).
[ "$SHM_GROWTH_MB" = 0 ] || set -- "--backend-config=python,shm-growth-byte-size=$((SHM_GROWTH_MB * 1048576))" "$@"
[ "$SHM_DEFAULT_MB" = 0 ] || set -- "--backend-config=python,shm-default-byte-size=$((SHM_DEFAULT_MB * 1048576))" "$@"
[ -d "$SOURCE" ] || fail "model repository $SOURCE not found (mount it or build the 'baked' image target)"

# Every ONNX Runtime model needs its exported model.onnx (git-ignored; written by `facecraft export`).
missing=""
for config in "$SOURCE"/*/config.pbtxt; do
    [ -f "$config" ] || fail "no model folders with config.pbtxt in $SOURCE"
    model_dir=$(dirname "$config")
    if grep -Eq '^[[:space:]]*(backend|platform):[[:space:]]*"onnxruntime(_onnx)?"' "$config" \
        && [ ! -f "$model_dir/1/model.onnx" ]; then
        missing="$missing $(basename "$model_dir")"
    fi
done
[ -z "$missing" ] || fail "model.onnx missing for:$missing — run \`facecraft export all\` (see docs/deploy.md)"

# A runtime copy: config.pbtxt files copied and rewritten for the device, version folders
# (model.onnx, model.py) symlinked into the source (see facecraft.runtime.instance_groups).
rm -rf "$WORK"
mkdir -p "$(dirname "$WORK")"
plan=""
[ -z "$INSTANCES" ] || plan="$plan --instances $INSTANCES"
[ -z "$ONNX_THREADS" ] || plan="$plan --onnx-threads $ONNX_THREADS"
[ -z "$PYTHON_INSTANCES" ] || plan="$plan --python-instances $PYTHON_INSTANCES"
echo "triton-entrypoint: configuring $WORK for device=$DEVICE${plan:- (automatic instance plan)}"
# $plan holds only flags and the integers argparse checks, so word splitting is intended here.
# shellcheck disable=SC2086
"$FACECRAFT" repo configure --repo "$SOURCE" --device "$DEVICE" --output "$WORK" $plan

exec "$TRITONSERVER" \
    --model-repository="$WORK" \
    --model-control-mode=explicit \
    --load-model='*' \
    --strict-readiness=true \
    --exit-on-error=true \
    --http-port=8000 \
    --grpc-port=8001 \
    --allow-metrics=true \
    --allow-cpu-metrics=true \
    --allow-gpu-metrics="$([ "$DEVICE" = gpu ] && echo true || echo false)" \
    --metrics-port=8002 \
    --metrics-config=summary_latencies=true \
    "$@"
