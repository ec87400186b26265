# lorabuild developer tasks. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-train test lint typecheck pytest golden bench bench-train bench-grid demo clean

$(VENV)/.setup-test: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.setup-test

# kohya's Python stack (torch, accelerate, diffusers…) for training; torch and torchvision pinned together.
vendor/sd-scripts/train_network.py:
	@git submodule update --init vendor/sd-scripts || { \
	  echo "Could not fetch kohya sd-scripts. Check out commit $$(git ls-tree HEAD vendor/sd-scripts | cut -d' ' -f3 | cut -f1)"; \
	  echo "of https://github.com/kohya-ss/sd-scripts into vendor/sd-scripts, then run make again."; exit 1; }

$(VENV)/.setup-train: $(VENV)/.setup-test vendor/sd-scripts/train_network.py
	$(PY) -m pip install -q -e '.[train]'
	$(PY) -m pip install -q --no-deps -e vendor/sd-scripts
	touch $@

setup-train: $(VENV)/.setup-train

lint: setup
	$(VENV)/bin/ruff check lorabuild tests tools bench
	$(VENV)/bin/ruff format --check lorabuild tests tools bench
	$(VENV)/bin/lint-imports

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
	$(PY) bench/bench_prepare.py
	$(PY) bench/bench_pick.py

# Needs kohya's Python stack: lorabuild train against plain accelerate launch, and the no-op run.
bench-train: setup-train
	$(PY) bench/bench_train.py

# Needs kohya's Python stack and a trained demo (make demo): lorabuild grid against plain gen_img runs.
bench-grid: setup-train
	$(PY) bench/bench_grid.py

# The main job: train the shipped tutorial recipe end to end on the CPU with a generated model and dataset.
demo: setup-train
	$(VENV)/bin/lorabuild demo

clean:
	rm -rf build .bench
