# Two commands on a fresh machine: `make run` (whole pipeline) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# Stage commands in dvc.yaml say `python`: make it the project's interpreter.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: run test exp ui compare submit-check ci-reproduce clean-cache

$(VENV)/installed: requirements.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	@touch $@

run: $(VENV)/installed  ## the whole pipeline on the configured data (default: embedded synthetic set)
	dvc repro

test: $(VENV)/installed  ## the test suite (unit, integration and end-to-end on tiny params)
	python -m pytest $(PYTEST_ARGS)

exp: $(VENV)/installed  ## run an experiment from presets/$(PRESET).yaml, e.g. make exp PRESET=seed-best
	python -m marsseg.presets run $(PRESET)

ui: $(VENV)/installed  ## MLflow UI for this project's store on http://127.0.0.1:5000
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

compare: $(VENV)/installed  ## table of all MLflow runs, best first (ARGS=--markdown for a PR)
	python -m marsseg.compare $(ARGS)

submit-check: $(VENV)/installed  ## validate a submission file, e.g. make submit-check FILE=submission/submission.csv
	python -m marsseg.submission check $(FILE) --dataset $(or $(DATASET),data/clean/dataset.npz)

ci-reproduce: $(VENV)/installed  ## rerun the default pipeline from scratch and compare with the committed metrics
	python -m marsseg.reproduce
