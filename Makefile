# LLM Tuner: `make up` runs the platform at http://localhost:5000 on the embedded AWS; `make test` runs the suite.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check

.PHONY: up test test-unit test-integration test-e2e lint typecheck bench provision doctor deploy teardown clean help

help:
	@echo "make up      - run the whole platform locally (embedded AWS, SageMaker emulator, 5 services)"
	@echo "make test    - install and run the whole test suite (lint, types, unit, integration, e2e)"
	@echo "make test-unit | test-integration | test-e2e - one layer of the suite (tests/unit, tests/integration, tests/e2e)"
	@echo "make bench   - run the benchmarks in bench/ (ratios against a baseline measured in the same run)"
	@echo "make deploy  - build and push the images and deploy the stack to AWS (deploy/aws/config.toml; ARGS=--dry-run)"
	@echo "make teardown - delete the stack from AWS (the data bucket is kept unless ARGS=--empty-bucket)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Runtime (services, launcher, emulator) and the trainer's own requirements: what `make up` needs.
$(VENV)/.runtime: $(VENV)/bin/python requirements/runtime.txt requirements/services.txt trainer_image/requirements.txt
	$(PIP) install -q -r requirements/runtime.txt -r trainer_image/requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements/dev.txt
	$(PIP) install -q -r requirements/dev.txt
	touch $@

# The browser tests drive Debian's chromium through Playwright (which cannot download a browser here).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	@if command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else echo "the browser tests need Chromium at $(CHROMIUM) (set CHROMIUM=...)"; exit 1; fi

up: $(VENV)/.runtime
	$(PY) -m deploy.local.up

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy shared services deploy trainer_image bench tests

test: $(VENV)/.dev $(CHROMIUM) lint typecheck
	CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q -ra

# One layer at a time (no lint or type check): handlers and pure functions; one service against the emulated AWS;
# the whole cluster with the real trainer, the browser and the openai SDK.
test-unit: $(VENV)/.dev
	$(PY) -m pytest -q -ra tests/unit

test-integration: $(VENV)/.dev
	$(PY) -m pytest -q -ra tests/integration

test-e2e: $(VENV)/.dev $(CHROMIUM)
	CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q -ra tests/e2e

$(VENV)/.bench: $(VENV)/.dev requirements/bench.txt
	$(PIP) install -q -r requirements/bench.txt
	touch $@

# bench.run installs dynalite (npm) into .data/bench-node/ on first use, when node and npm are there.
# bench.trainer's TRL baseline (trl) is in requirements/dev.txt: the test suite runs its CPU smoke mode.
# bench.inference builds its models once into .data/bench-models/.
bench: $(VENV)/.bench
	$(PY) -m bench.run
	$(PY) -m bench.auth
	$(PY) -m bench.files
	$(PY) -m bench.trainer
	$(PY) -m bench.inference
	$(PY) -m bench.startup
	$(PY) -m bench.load

provision: $(VENV)/.runtime
	$(PY) -m deploy.local.provision

doctor: $(VENV)/.runtime
	$(PY) -m deploy.doctor

# AWS: deploy/aws/config.toml (from config.example.toml) says where; ARGS passes options, e.g. ARGS=--dry-run.
deploy: $(VENV)/.runtime
	$(PY) -m deploy.aws.deploy deploy $(ARGS)

teardown: $(VENV)/.runtime
	$(PY) -m deploy.aws.deploy teardown $(ARGS)

clean:
	rm -rf .data .pytest_cache .ruff_cache .mypy_cache
