#!/bin/sh
# Start Triton in the NGC container on a working copy of the model repository.
#
# The repository (baked into the image, or mounted read-only at $FACECRAFT_MODEL_REPOSITORY) is
# never edited: `facecraft repo configure --output` writes a runtime copy at
# $FACECRAFT_WORK_REPOSITORY with instance groups for $FACECRAFT_DEVICE (cpu|gpu) and
# $FACECRAFT_INSTANCES instances per ONNX model. Extra arguments are passed on to tritonserver.
set -eu

SOURCE=${FACECRAFT_MODEL_REPOSITORY:-/models}
WORK=${FACECRAFT_WORK_REPOSITORY:-/tmp/facecraft/model_repository}
DEVICE=${FACECRAFT_DEVICE:-cpu}
INSTANCES=${FACECRAFT_INSTANCES:-1}
TRITONSERVER=${FACECRAFT_TRITONSERVER:-tritonserver}
FACECRAFT=${FACECRAFT_CLI:-facecraft}

fail() {
    echo "triton-entrypoint: error: $*" >&2
    exit 2
}

case "$DEVICE" in
    cpu | gpu) ;;
    *) fail "FACECRAFT_DEVICE must be cpu or gpu, got '$DEVICE'" ;;
esac
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
echo "triton-entrypoint: configuring $WORK for device=$DEVICE instances=$INSTANCES"
"$FACECRAFT" repo configure --repo "$SOURCE" --device "$DEVICE" --instances "$INSTANCES" --output "$WORK"

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
