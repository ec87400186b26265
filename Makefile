# lorabuild developer tasks. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-train test lint typecheck pytest golden bench demo clean

$(VENV)/.setup-test: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.setup-test

# kohya's Python stack (torch, accelerate, diffusers…) for training; torch and torchvision pinned together.
$(VENV)/.setup-train: $(VENV)/.setup-test
	$(PY) -m pip install -q -e '.[train]'
	@if [ -f vendor/sd-scripts/setup.py ]; then $(PY) -m pip install -q --no-deps -e vendor/sd-scripts; \
	else echo "vendor/sd-scripts is not checked out: git submodule update --init"; exit 1; fi
	touch $@

setup-train: $(VENV)/.setup-train

lint: setup
	$(VENV)/bin/ruff check lorabuild tests tools bench
	$(VENV)/bin/ruff format --check lorabuild tests tools bench

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(PY) -m pytest -q

test: lint typecheck pytest

# Regenerate the golden files under tests/golden after an intended change (review the diff!).
golden: setup
	LORABUILD_UPDATE_GOLDEN=1 $(PY) -m pytest -q tests/test_golden.py tests/test_quoting.py

bench: setup
	$(PY) bench/bench_check.py

# The main job: train the shipped tutorial recipe end to end on the CPU with a generated model and dataset.
demo: setup-train
	$(VENV)/bin/lorabuild demo

clean:
	rm -rf build .bench
