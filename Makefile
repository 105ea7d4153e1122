# Set-up makes .venv and installs the CPU build of torch 2.13.0 *first*: a bare `torch`
# requirement in a fresh venv would pull the newest CUDA build (several GB).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test test-slow lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[dev,plots]'
	touch $@

## Quickstart 1: extract features from the example audio with the shipped weights.
demo: setup
	$(VENV)/bin/cpcspeech extract examples/audio --out out/demo/feats.npy

## Quickstart 2: the default (fast) test suite.
test: setup
	$(PY) -m pytest -q

## Long checks: training runs, full probes (see README).
test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) benchmarks/extract_speed.py
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) out build *.egg-info
