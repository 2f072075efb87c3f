# Two commands on a fresh machine: `make quickstart` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
WORKDIR ?= work
SEED    ?= 0

.PHONY: quickstart test test-fast test-cluster lint bench mlflow-ui clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade -q pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

## quickstart: install, then the whole chain on the embedded default dataset (CPU, minutes):
## shards -> experts (Ray Train) -> static memory -> S2D-MTT search (Ray Tune + Optuna, ASHA)
## -> the best set judged beside random real clips -> MLflow (work/mlflow.db).
## `make quickstart SEED=1` runs the whole chain at another seed (its own static memory,
## trials, random real clips and judging networks), beside the others in the same workdir.
quickstart: $(VENV)/.installed
	$(VENV)/bin/s2d tune --space quickstart/embedded_ipc1_s2d-mtt --workdir $(WORKDIR) \
		--num-experts 2 --static-iterations 15 --set seed=$(SEED)

## test: install with the dev extra, run the whole suite (slow tests included), then the
## multi-node tests, in their own invocation: they start their own Ray cluster
test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest
	$(PY) -m pytest -m cluster

test-cluster: $(VENV)/.installed
	$(PY) -m pytest -m cluster

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"  # the cluster tests run only when asked for

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(VENV)/.installed
	$(PY) bench/data_throughput.py
	$(PY) bench/expert_farm.py
	$(PY) bench/evaluate.py
	$(PY) bench/distill_step.py
	$(PY) bench/layouts.py
	$(PY) bench/quality.py
	$(PY) bench/search.py
	$(PY) bench/search_signal.py
	$(PY) bench/segments.py
	$(PY) bench/streaming.py
	$(PY) bench/tracking.py
	$(PY) bench/train_loops.py
	$(PY) bench/gpu_loops.py

## mlflow-ui: browse every run of the workdir (searches, trials, distillations) on http://127.0.0.1:5000
MLFLOW_DB ?= $(abspath $(WORKDIR))/mlflow.db
mlflow-ui: $(VENV)/.installed
	@echo "MLflow UI on http://127.0.0.1:5000/#/experiments (store: $(MLFLOW_DB))"
	MLFLOW_DISABLE_TELEMETRY=true $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(MLFLOW_DB) \
		--host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) work .pytest_cache .ruff_cache
