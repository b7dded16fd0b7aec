# syntax=docker/dockerfile:1
# Facecraft REST gateway (FastAPI + uvicorn). Build from the repository root:
#
#   docker build -f docker/gateway.Dockerfile -t facecraft/gateway:0.1.0 .
#
# Stateless apart from $FACECRAFT_OUTPUT_DIR (results; mount a volume or shared storage there).
# Worker count, timeouts and per-worker concurrency: docs/deploy.md.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/facecraft
COPY pyproject.toml README.md ./
COPY facecraft ./facecraft
COPY export ./export
COPY pipeline ./pipeline
COPY gateway ./gateway
COPY client ./client
RUN pip install ".[gateway]"

RUN groupadd --system --gid 10001 facecraft \
    && useradd --system --uid 10001 --gid facecraft --home-dir /var/lib/facecraft --create-home facecraft \
    && mkdir -p /var/lib/facecraft/outputs && chown -R facecraft:facecraft /var/lib/facecraft
USER facecraft:facecraft
WORKDIR /var/lib/facecraft

ENV FACECRAFT_HOST=0.0.0.0 \
    FACECRAFT_PORT=8080 \
    FACECRAFT_OUTPUT_DIR=/var/lib/facecraft/outputs
VOLUME ["/var/lib/facecraft/outputs"]
EXPOSE 8080
# Liveness only (/health); readiness (/ready) runs a real inference and belongs to the orchestrator.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('FACECRAFT_PORT', '8080'), timeout=4)"]
CMD ["python", "-m", "facecraft.gateway"]
