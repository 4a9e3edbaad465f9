# MusicFace: `make train` and `make test` work on a fresh clone (they create .venv first).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
CORES ?= $(shell nproc)
SPLEETER_VENV := .venv-spleeter

.PHONY: install train test test-fast lint dataset ablation fidelity spleeter-env bench clean

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

## the fidelity study (docs/fidelity.md): a larger demo, the paper's variants + the mixed wave, scored
## against the demo's known truth; its own config (fidelity.yaml) and folder (fidelity/)
fidelity: install
	$(VENV)/bin/snakemake --workflow-profile profiles/local --cores $(CORES) --set-threads train_run=1 --resources gpu=$(CORES) \
		--configfile fidelity.yaml --directory fidelity fidelity

test: install
	$(VENV)/bin/python -m pytest

test-fast: install
	$(VENV)/bin/python -m pytest -m "not slow"

## ruff (pyproject.toml [tool.ruff]: pycodestyle, pyflakes, isort, bugbear; 100 columns) and
## snakefmt --check on the workflow (pyproject.toml [tool.snakefmt]); docs/testing.md.
LINT_SMK := Snakefile $(sort $(wildcard workflow/rules/*.smk))
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/snakefmt --check $(LINT_SMK)

## Spleeter 2stems in its own venv (Python < 3.12, tensorflow 2.12.1, numpy < 2; ~2.4 GB, ~2 min).
## The pins are the pip section of envs/spleeter.yaml (one list for venv and conda users).
SPLEETER_PYTHON ?= $(shell command -v python3.11 || command -v python3.10 || command -v python3.9)

spleeter-env: $(SPLEETER_VENV)/.installed

$(SPLEETER_VENV)/.installed: envs/spleeter.yaml
	@test -n "$(SPLEETER_PYTHON)" || { echo "spleeter-env: needs python3.9-3.11 (Spleeter 2.4.2 does not support 3.12+); set SPLEETER_PYTHON=/path/to/python3.11" >&2; exit 1; }
	test -x $(SPLEETER_VENV)/bin/python || $(SPLEETER_PYTHON) -m venv $(SPLEETER_VENV)
	sed -n 's/^ *- *\([A-Za-z0-9_.-]*==[^ #]*\).*/\1/p' envs/spleeter.yaml > $(SPLEETER_VENV)/requirements.txt
	$(SPLEETER_VENV)/bin/pip install --disable-pip-version-check -q -r $(SPLEETER_VENV)/requirements.txt
	$(SPLEETER_VENV)/bin/python -c "import spleeter.model, tensorflow, numpy; assert numpy.__version__ < '2'"
	touch $@

bench: install
	for b in bench/*.py; do $(VENV)/bin/python $$b; done

clean:
	rm -rf work dataset runs logs benchmarks .snakemake fidelity
