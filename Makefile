# camp — `make help` lists the targets. Everything runs inside .venv (created by `make setup`).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SWEEP  ?= sweeps/default.yaml
WORKERS ?= 2
SEED   ?=
PORT   ?= 5000
SERVE_PORT ?= 5001
DASHBOARD_PORT ?= 8080
MODEL  ?= models:/camp-classifier@champion
STORAGE ?= mlruns/optuna.journal
SHARED := ../shared/datasets/clothing-small
export MLFLOW_TRACKING_URI ?= sqlite:///mlruns/mlflow.db

.DEFAULT_GOAL := help
.PHONY: help setup data sweep ablate train test test-fast lint ui serve dashboard predict clean-cache

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) \
	  | sed -e 's/\$$(PORT)/$(PORT)/g' -e 's/\$$(SERVE_PORT)/$(SERVE_PORT)/g' -e 's/\$$(DASHBOARD_PORT)/$(DASHBOARD_PORT)/g' \
	  | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install camp with its test tools

data: ## get clothing-small: link ../shared when present, else clone the public dataset
	@mkdir -p data
	@if [ -e data/clothing-small ]; then echo "data/clothing-small already present"; \
	elif [ -d $(SHARED) ]; then ln -s "$$(cd $(SHARED) && pwd)" data/clothing-small && echo "linked $(SHARED)"; \
	else git clone --depth 1 https://github.com/alexeygrigorev/clothing-dataset-small data/clothing-small; fi

sweep: setup data ## run the default study (about 30 min on 2 cores), register the champion (SEED=N: another seed)
	$(BIN)/camp sweep $(SWEEP) --workers $(WORKERS) $(if $(SEED),--seed $(SEED))

ablate: setup data ## after a sweep: the missions' questions (mode, crop, loss weighting) by controlled experiment on the champion (about 30 min)
	$(BIN)/camp ablate --base champion --missions --workers $(WORKERS)

train: setup data ## one tracked run of the recipe defaults (sweeps/baseline.yaml)
	$(BIN)/camp train sweeps/baseline.yaml

test: setup lint ## ruff, then the whole test suite (uses ../shared when present)
	$(BIN)/python -m pytest -q

lint: setup ## ruff check (configuration in pyproject.toml)
	$(BIN)/ruff check .

test-fast: setup ## tests not marked slow
	$(BIN)/python -m pytest -q -m "not slow"

ui: setup ## MLflow UI on http://127.0.0.1:$(PORT) over the local store
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host 127.0.0.1 --port $(PORT)

serve: setup ## serve the champion: POST images to http://127.0.0.1:$(SERVE_PORT)/invocations
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/mlflow models serve -m "$(MODEL)" --env-manager local --host 127.0.0.1 --port $(SERVE_PORT)

dashboard: setup ## optuna-dashboard on the study storage, http://127.0.0.1:$(DASHBOARD_PORT)
	$(BIN)/optuna-dashboard "$(STORAGE)" --host 127.0.0.1 --port $(DASHBOARD_PORT)

predict: setup ## classify images with the champion: make predict IMAGES="a.jpg b.jpg"
	$(BIN)/camp predict $(IMAGES)

report: setup data ## the champion's report: reports/<study>/report.html (+ .md, PNGs), logged with its run
	$(BIN)/camp report

clean-cache: ## delete derived arrays (.cache/camp); raw images and mlruns are untouched
	rm -rf .cache/camp

# scaling out (README "Scaling out"): PostgreSQL + an MLflow server on this machine, for trying it
.PHONY: cluster-up cluster-down
cluster-up: setup ## PostgreSQL (databases optuna, mlflow) + MLflow server on 127.0.0.1; prints the settings
	MLFLOW="$${MLFLOW:-$(abspath $(BIN))/mlflow}" scripts/cluster.sh up

cluster-down: ## stop what cluster-up started (data stays in .cluster/)
	MLFLOW="$${MLFLOW:-$(abspath $(BIN))/mlflow}" scripts/cluster.sh down
