"""Fixtures shared by the whole suite.

The tests mirror the package: tests/model, tests/io, tests/weights, tests/train, tests/eval,
and tests/ itself for the top-level modules and for behaviour across commands. pytest imports
them in its default ``prepend`` mode without ``__init__.py`` files, so every test file needs a
unique basename; this folder is on ``sys.path``, which makes ``paths``, ``samples`` and
``tone_corpus`` importable from every subfolder.
"""

from pathlib import Path

import pytest
import torch
from samples import make_tiny_model, speaker_corpus
from tone_corpus import tone_corpus

from cpcspeech.model.cpc import CPCModel


@pytest.fixture
def one_torch_thread():
    """Small models and batches run faster on one thread than two on a loaded shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_model() -> CPCModel:
    """samples.make_tiny_model(): 16 encoder channels, 8-d context, seed 0, eval mode."""
    return make_tiny_model()


@pytest.fixture
def speaker_corpus_dir(tmp_path) -> Path:
    """tmp_path/corpus from samples.speaker_corpus: 3 speakers x 4 tones of 0.25 s."""
    return speaker_corpus(tmp_path / "corpus")


@pytest.fixture
def tone_data(tmp_path) -> Path:
    """tmp_path/data from tone_corpus: a Kaldi dir of 2 speakers x 3 utterances of tone
    'phones' with CPC-format labels (labels.txt)."""
    return tone_corpus(tmp_path / "data")
