# Facecraft on Triton. `make serve` runs the service; `make test` passes the tests.
# Both set everything up on a fresh machine (Debian packages, .venv, models).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.facecraft-installed
# Debian packages: prometheus/promtool (observability tests), docker-compose (compose validation),
# libb64-0d (perf_analyzer from the tritonclient wheel), redis-server (the Redis job backend's
# tests start their own on a free loopback port; the package's system service is not needed).
APT_PACKAGES := prometheus docker-compose libb64-0d redis-server
PRESET ?= full
DEVICE ?= cpu
# Request counts per benchmark scenario: at least 16 so that concurrency 16 is really 16 in flight
# (full preset on 2 CPU cores: about 26 minutes with the two paired rounds of --pairs' default;
# an enhanced portrait costs ~6 s of both cores).
BENCH_ARGS ?= --requests 32 --enhanced-requests 16

.PHONY: help setup system-deps models serve serve-triton test test-fast bench bench-smoke bench-gpu bench-steps lint format perf-analyzer load-test stress clean

help:
	@echo "make serve   - set up everything and run Triton (embedded) + gateway on :8000-8002 / :8080"
	@echo "make test    - set up everything and run the test suite"
	@echo "make models  - export CodeFormer + U2-Net to model_repository/ (PRESET=full|tiny)"
	@echo "make bench   - benchmark report under benchmarks/results/ (PRESET=full|tiny, DEVICE=cpu|gpu)"
	@echo "make lint    - ruff"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e ".[export,server,client,gateway,dev]"
	@touch $@

system-deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

models: setup
	$(BIN)/facecraft export all --preset $(PRESET) --weights auto

serve: setup
	$(BIN)/facecraft serve --device $(DEVICE)

serve-triton: setup
	$(BIN)/facecraft serve --triton-only --device $(DEVICE)

test: setup system-deps
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not integration and not slow"

bench: setup
	$(BIN)/facecraft bench --preset $(PRESET) --device $(DEVICE) $(BENCH_ARGS)

bench-smoke: setup
	$(BIN)/facecraft bench --preset tiny --quick

# Python steps before/after side by side (PNG, JPEG search, compose, detect): a minute or two
bench-steps: setup
	$(BIN)/facecraft bench-steps

# On a fresh NVIDIA GPU machine: onnxruntime-gpu, fp32 + fp16 exports, GPU reports (scripts/gpu-check.sh)
bench-gpu:
	scripts/gpu-check.sh

perf-analyzer: setup system-deps
	$(BIN)/python -m facecraft.bench.perf_analyzer install

load-test: setup
	$(BIN)/python -m pytest tests/reliability -m "load" --load-seconds 120

# Triton stress reproducer (not a test: minutes of load, a report under .facecraft/stress/; docs/reliability.md)
STRESS_ARGS ?= --minutes 10 --threads 12
stress: setup
	$(BIN)/python -m tests.reliability.stress $(STRESS_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
