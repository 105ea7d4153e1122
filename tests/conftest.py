"""Fixtures shared by the whole suite, and the rule that every test runs in a fresh empty
working directory and leaves it empty.

The tests mirror the package: tests/model, tests/io, tests/weights, tests/train, tests/eval,
and tests/ itself for the top-level modules and for behaviour across commands. pytest imports
them in its default ``prepend`` mode without ``__init__.py`` files, so every test file needs a
unique basename; this folder is on ``sys.path``, which makes ``paths``, ``samples`` and
``tone_corpus`` importable from every subfolder.
"""

import os
from pathlib import Path

import pytest
import torch
from samples import make_tiny_model, speaker_corpus
from tone_corpus import tone_corpus

from cpcspeech.model.cpc import CPCModel


def _left_in(folder: Path) -> list[str]:
    return sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())


@pytest.fixture(scope="session", autouse=True)
def session_cwd(tmp_path_factory):
    """Module- and session-scoped fixtures run outside the checkout too; what they leave in
    this folder fails the last test."""
    start = Path.cwd()
    folder = tmp_path_factory.mktemp("session-cwd")
    os.chdir(folder)
    yield folder
    os.chdir(start)
    strays = _left_in(folder)
    if strays:
        pytest.fail(f"files left in the working directory by a fixture: {strays} in {folder}")


@pytest.fixture(autouse=True)
def fresh_cwd(tmp_path_factory, monkeypatch) -> Path:
    """Every test runs in a new empty folder (not tmp_path) and must leave it empty: a file a
    command writes relative to the working directory is a stray and fails the test."""
    folder = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(folder)
    yield folder
    strays = _left_in(folder)
    if strays:
        pytest.fail(
            f"the test left {strays} in its working directory {folder}: write under tmp_path "
            "or remove them"
        )


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
