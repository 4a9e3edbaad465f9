# MusicFace: `make train` and `make test` work on a fresh clone (they create .venv first).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
CORES ?= $(shell nproc)
SPLEETER_VENV := .venv-spleeter

.PHONY: install train test test-fast dataset ablation spleeter-env bench clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt
	$(VENV)/bin/pip install --disable-pip-version-check -q --no-deps -e .
	touch $(STAMP)

## the main job on the built-in demo recordings: raw takes -> shards -> model -> evaluation
train: install
	$(VENV)/bin/snakemake --workflow-profile profiles/local --cores $(CORES) all

dataset: install
	$(VENV)/bin/snakemake --workflow-profile profiles/local --cores $(CORES) dataset

ablation: install
	$(VENV)/bin/snakemake --workflow-profile profiles/local --cores $(CORES) ablation

test: install
	$(VENV)/bin/python -m pytest

test-fast: install
	$(VENV)/bin/python -m pytest -m "not slow"

bench: install
	for b in bench/*.py; do $(VENV)/bin/python $$b; done

clean:
	rm -rf work dataset runs logs benchmarks .snakemake
