# Set-up makes .venv and installs the CPU build of torch 2.13.0 *first*: a bare `torch`
# requirement in a fresh venv would pull the newest CUDA build (several GB).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test test-slow lint format bench abx-table clean

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

## The README's ABX and units table (speechocean762 test split). CPU-heavy: the ABX part alone
## took 53 min on the shared 2-core CPU under heavy load.
SO762 ?= ../shared/data/speechocean762-train
# k-means is fitted on the first 300 utterances of train_split.txt (about 100k frames).
abx-table: setup
	$(VENV)/bin/cpcspeech abx --table --model default --data $(SO762) \
		--labels $(SO762)/converted_aligned_phones.txt --out out/abx-table
	head -n 300 $(SO762)/train_split.txt > out/abx-table/fit300.txt
	for m in mfcc random default; do \
		$(VENV)/bin/cpcspeech units fit --model $$m --k 50 --data $(SO762) \
			--list out/abx-table/fit300.txt --labels $(SO762)/converted_aligned_phones.txt \
			--out out/abx-table/units-$$m-k50 || exit 1; \
	done

clean:
	rm -rf $(VENV) out build *.egg-info
