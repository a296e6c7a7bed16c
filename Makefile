# Two commands on a fresh machine: `make run` (whole pipeline) and `make test`.
# Every other target is a thin wrapper around the `marsseg` command installed into .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# Stage commands in dvc.yaml say `python`: make it the project's interpreter.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
# Two pytest workers: the end-to-end tests wait on DVC and subprocesses as much as they compute.
PYTEST_ARGS ?= -n 2 --dist worksteal

.PHONY: run test exp ui compare search ensemble restore submit-check check ci-reproduce

$(VENV)/installed: requirements.txt pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	@touch $@

run: $(VENV)/installed  ## the whole pipeline on the configured data (default: embedded synthetic set)
	dvc repro

test: $(VENV)/installed  ## the test suite (unit, integration and end-to-end on tiny params), two workers
	python -m pytest $(PYTEST_ARGS)

check: $(VENV)/installed  ## validate params.yaml
	marsseg check

exp: $(VENV)/installed  ## run an experiment from presets/$(PRESET).yaml, e.g. make exp PRESET=seed-best
	marsseg exp $(PRESET) $(ARGS)

ui: $(VENV)/installed  ## MLflow UI for this project's store on http://127.0.0.1:5000
	marsseg ui $(ARGS)

compare: $(VENV)/installed  ## MLflow runs ranked by evaluated val mIoU (ARGS=--markdown, ARGS="--study NAME")
	marsseg compare $(ARGS)

search: $(VENV)/installed  ## Optuna search over DVC experiments: SPACE= TRIALS= JOBS= STUDY= TIMEOUT=
	marsseg search $(if $(SPACE),--space $(SPACE)) $(if $(TRIALS),--trials $(TRIALS)) $(if $(JOBS),--jobs $(JOBS)) \
		$(if $(STUDY),--study $(STUDY)) $(if $(TIMEOUT),--timeout $(TIMEOUT)) $(ARGS)

ensemble: $(VENV)/installed  ## average the TOP= best logged models into a submission
	marsseg ensemble $(if $(TOP),--top $(TOP)) $(ARGS)

restore: $(VENV)/installed  ## restore trained stages from the DVC remote's run-cache instead of training
	marsseg restore $(ARGS)

submit-check: $(VENV)/installed  ## validate a submission file: FILE= (default: the submit stage's submission/submission.csv)
	marsseg submit-check $(or $(FILE),submission/submission.csv) --dataset $(or $(DATASET),data/clean/dataset.npz)

ci-reproduce: $(VENV)/installed  ## rerun the default pipeline from scratch and compare with the committed metrics
	marsseg reproduce
