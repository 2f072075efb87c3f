# Two commands on a fresh machine: `make quickstart` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
WORKDIR ?= work/quickstart

.PHONY: quickstart test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade -q pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

## quickstart: install, then run the main pipeline on the embedded default dataset (CPU, minutes)
quickstart: $(VENV)/.installed
	$(PY) jobs/prepare_data.py --dataset embedded --out $(WORKDIR)/data
	$(PY) jobs/train_experts.py --data $(WORKDIR)/data --out $(WORKDIR)/experts \
		--num-experts 2 --workers 2 --epochs 2

## test: install with the dev extra, run the whole suite (slow tests included)
test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(VENV)/.installed
	$(PY) bench/data_throughput.py
	$(PY) bench/expert_farm.py

clean:
	rm -rf $(VENV) work .pytest_cache .ruff_cache
