# syntax=docker/dockerfile:1
# Facecraft on NVIDIA Triton (NGC image). Build from the repository root:
#
#   docker build -f docker/triton.Dockerfile -t facecraft/triton:0.1.0 .                  # baked models
#   docker build -f docker/triton.Dockerfile --target runtime -t facecraft/triton-runtime:0.1.0 .
#
# Targets:
#   exporter python + torch (CPU) + the project: `facecraft export` as entrypoint (compose profile
#            `export` runs it against the host's model_repository/)
#   export   exporter that has run `facecraft export all` at build time (official weights when
#            they can be loaded, else seeded random weights, recorded as untrained in export.json)
#   runtime  the NGC Triton image + the Python-model dependencies; the model repository is MOUNTED
#            at /models (docker-compose.yml does this with the host's exported model_repository/)
#   baked    runtime + the exported repository copied in (default, self-contained)
#
# 24.10 is the NGC release that ships Triton 2.51, the same server version as the nvidia-pytriton
# wheel used by the embedded runtime, so one model repository behaves the same in both.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
ARG EXPORT_PYTHON_IMAGE=python:3.11.10-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${EXPORT_PYTHON_IMAGE} AS exporter
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    FACECRAFT_CACHE_DIR=/cache
WORKDIR /src
# torch from the CPU wheel index: the default index would pull gigabytes of CUDA packages.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY facecraft ./facecraft
COPY export ./export
COPY pipeline ./pipeline
COPY gateway ./gateway
COPY client ./client
COPY model_repository ./model_repository
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[export]"
# Official checkpoints (codeformer.pth, u2net_human_seg.pth, ...), when you have them: put them in
# weights/ at the root of the build context; `--weights auto` finds them in the cache
# ($FACECRAFT_CACHE_DIR/weights). The weight[s] wildcard lets the folder be absent.
COPY docker/weights-placeholder weight[s] /cache/weights/
ENTRYPOINT ["facecraft", "export"]
CMD ["all", "--preset", "full", "--weights", "auto"]

# ---------------------------------------------------------------------------------------------
FROM exporter AS export
# tiny | full (official hyper-parameters)
ARG FACECRAFT_PRESET=full
# auto (official from weights/ or a download, else seeded random = UNTRAINED) | official | random
ARG FACECRAFT_WEIGHTS=auto
RUN facecraft export all --preset "${FACECRAFT_PRESET}" --weights "${FACECRAFT_WEIGHTS}"

# ---------------------------------------------------------------------------------------------
FROM ${TRITON_IMAGE} AS runtime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    FACECRAFT_MODEL_REPOSITORY=/models \
    FACECRAFT_DEVICE=cpu
WORKDIR /opt/facecraft
COPY docker/requirements-triton.txt ./
RUN pip install -r requirements-triton.txt
# The facecraft package itself (pure pipeline code used by the Python models, and the
# `facecraft repo configure` command); its dependencies come from requirements-triton.txt.
COPY pyproject.toml README.md ./
COPY facecraft ./facecraft
COPY export ./export
COPY pipeline ./pipeline
COPY gateway ./gateway
COPY client ./client
RUN pip install --no-deps . && facecraft --version
COPY --chmod=0755 docker/triton-entrypoint.sh /usr/local/bin/facecraft-triton
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/v2/health/ready || exit 1
ENTRYPOINT ["/usr/local/bin/facecraft-triton"]

# ---------------------------------------------------------------------------------------------
FROM runtime AS baked
COPY --from=export /src/model_repository /models
