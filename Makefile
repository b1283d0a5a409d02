# CloudML — every entry point. `make help` lists the targets.
# On a fresh machine `make run` and `make test` install what they need themselves.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SYSTAMP := $(VENV)/.system-stamp
PIPELINE ?= tuned
# config overrides for `make run`, e.g. SET="epochs=1 ensemble_size=1" (a smoke run)
SET ?=
# where `make run`'s tasks execute: subprocess (this venv) or container (the local CPU image)
RUNNER ?= subprocess
CRON ?= 0 0 6 * * 1
REGISTRY ?= ghcr.io/cloudml
TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
export CLOUDML_REGISTRY ?= $(REGISTRY)
export CLOUDML_TAG ?= $(TAG)

# jemalloc keeps freed activations mapped instead of faulting them back every step
# (2.5x faster CPU training; docs/physics.md, 'Defects of the research code'). Used when
# present; looked up when the recipe runs, after system-deps may have installed it.
RUN_ENV = env $$(bash scripts/jemalloc-env.sh $(VENV))

.DEFAULT_GOAL := help
.PHONY: help setup system-deps run test test-fast lint format compile submit schedule \
        preflight images manifests-check bench synth clean test-floatpaths

help: ## list targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: PIPELINE=$(PIPELINE) SET='$(SET)' CRON='$(CRON)' REGISTRY=$(REGISTRY) TAG=$(TAG) PYTHON=$(PYTHON)"

$(STAMP): pyproject.toml scripts/setup-venv.sh scripts/torch-source.sh
	@bash scripts/setup-venv.sh $(PYTHON) $(VENV)
	@touch $@

setup: $(STAMP) ## create .venv and install cloudml with its dependencies

$(SYSTAMP): scripts/install-system-deps.sh images/install-tools.sh
	@bash scripts/install-system-deps.sh $(VENV)
	@bash images/install-tools.sh
	@mkdir -p $(VENV) && touch $@

system-deps: $(SYSTAMP) ## Debian packages (jemalloc, prometheus, pushgateway, promtool) when root

run: $(STAMP) $(SYSTAMP) ## run PIPELINE (default tuned) on KFP's local runner; SET="k=v ..." overrides; RUNNER=container
	@$(RUN_ENV) $(PY) -m cloudml run --pipeline $(PIPELINE) --runner $(RUNNER) $(foreach s,$(SET),--set $(s))

test: $(STAMP) $(SYSTAMP) ## the whole test suite (lint, manifests, unit, end-to-end)
	$(PY) -m ruff check .
	$(MAKE) --no-print-directory manifests-check
	$(RUN_ENV) $(PY) -m pytest -q --durations=15

test-fast: $(STAMP) ## unit tests only (skips slow end-to-end tests)
	$(PY) -m pytest -q -m "not slow"

test-floatpaths: $(STAMP) $(SYSTAMP) ## statistical tests under the three CPU float paths
	@echo "== float path: native (torch $$($(PY) -c 'import torch; print(torch.backends.cpu.get_cpu_capability())'))"
	$(RUN_ENV) $(PY) -m pytest -q -m statistical
	@echo "== float path: AVX2 (torch $$(ATEN_CPU_CAPABILITY=avx2 $(PY) -c 'import torch; print(torch.backends.cpu.get_cpu_capability())'))"
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(RUN_ENV) $(PY) -m pytest -q -m statistical
	@echo "== float path: SSE4.1 (torch $$(ATEN_CPU_CAPABILITY=default $(PY) -c 'import torch; print(torch.backends.cpu.get_cpu_capability())'))"
	ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 $(RUN_ENV) $(PY) -m pytest -q -m statistical

lint: $(STAMP) ## ruff
	$(PY) -m ruff check .

format: $(STAMP) ## ruff format + autofix
	$(PY) -m ruff format cloudml components pipelines tests
	$(PY) -m ruff check --fix .

synth: $(STAMP) ## write the default synthetic campaign to data/raw
	$(PY) -m cloudml synth --out data/raw

compile: $(STAMP) ## compile PIPELINE to build/pipelines/$(PIPELINE).yaml
	$(PY) -m cloudml compile --pipeline $(PIPELINE) --out build/pipelines/$(PIPELINE).yaml

submit: $(STAMP) ## compile, upload and start PIPELINE on the Kubeflow endpoint in KFP_HOST
	$(PY) -m cloudml submit --pipeline $(PIPELINE)

schedule: $(STAMP) ## recurring run of PIPELINE on CRON (six fields, UTC)
	$(PY) -m cloudml schedule --pipeline $(PIPELINE) --cron '$(CRON)'

preflight: $(STAMP) ## check the cluster in the kube config is ready for a submit
	$(PY) -m cloudml preflight

images: ## build and push the CPU and GPU images with docker buildx (REGISTRY, TAG)
	bash images/build.sh $(REGISTRY) $(TAG)

manifests-check: $(STAMP) $(SYSTAMP) ## render overlays, validate schemas, PSS, promtool, dashboard
	$(PY) -m cloudml.cluster.manifests manifests

bench: $(STAMP) $(SYSTAMP) ## benchmarks -> build/bench/results.json and docs/benchmarks.md
	$(PY) bench/run.py

clean: ## remove build outputs (keeps .venv, data/ and runs/)
	rm -rf build .pytest_cache .ruff_cache

include images/images.mk
