"""Discrete units: k-means, codebook round trip and refusals, unit text / .npy, purity and PNMI."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cpcspeech.cli import app
from cpcspeech.errors import CPCSpeechError
from cpcspeech.eval.features import load_feature_source
from cpcspeech.eval.units import (
    Codebook,
    UnitsOptions,
    fit_kmeans,
    load_codebook,
    purity_and_pnmi,
    save_codebook,
    units_text,
)

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def _blobs(k=4, per=200, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)) * 10
    labels = np.repeat(np.arange(k), per)
    return (centres[labels] + rng.standard_normal((k * per, dim))).astype(np.float32), labels


# sklearn's import alone takes ~10 s on the loaded shared CPU, so its case is a slow test
@pytest.mark.parametrize("method", ["torch", pytest.param("sklearn", marks=pytest.mark.slow)])
def test_kmeans_recovers_separated_blobs(method):
    x, labels = _blobs()
    centroids = torch.from_numpy(fit_kmeans(x, 4, method, seed=0))
    codebook = Codebook(centroids, "test", "sha", "c", False)
    units = codebook.assign(x)
    scores = purity_and_pnmi(labels, units)
    assert scores["phone_purity"] == 1.0 and scores["cluster_purity"] == 1.0
    assert scores["pnmi"] == pytest.approx(1.0)


def test_kmeans_is_seeded():
    x, _ = _blobs(k=6, seed=1)
    assert np.array_equal(fit_kmeans(x, 6, "torch", 3), fit_kmeans(x, 6, "torch", 3))
    with pytest.raises(CPCSpeechError, match="K <= 1200"):
        fit_kmeans(x, 1201)


def test_purity_and_pnmi_by_hand():
    # phones y, units z over 4 frames: p(y, z) = [[1/2, 0], [1/4, 1/4]].
    phones = np.array([0, 0, 1, 1])
    units = np.array([7, 7, 7, 9])
    scores = purity_and_pnmi(phones, units)
    assert scores["phone_purity"] == pytest.approx(0.5 + 0.25)  # unit 7 -> y0, unit 9 -> y1
    assert scores["cluster_purity"] == pytest.approx(0.5 + 0.25)  # y0 -> 7, y1 -> 7 or 9
    p = np.array([[0.5, 0.0], [0.25, 0.25]])
    py, pz = p.sum(1), p.sum(0)
    mutual = sum(p[i, j] * math.log(p[i, j] / (py[i] * pz[j])) for i, j in [(0, 0), (1, 0), (1, 1)])
    assert scores["pnmi"] == pytest.approx(mutual / math.log(2))


def test_units_text_and_collapse():
    assert units_text("utt", np.array([12, 12, 45, 45, 12])) == "utt 12 12 45 45 12"
    assert units_text("utt", np.array([12, 12, 45, 45, 12]), collapse=True) == "utt 12 45 12"
    assert units_text("empty", np.array([], dtype=np.int64), collapse=True) == "empty"


def test_codebook_round_trip_and_refusals(tmp_path):
    centroids = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    book = Codebook(centroids, "default", "ab" * 32, "c", True, {"method": "torch"})
    path = save_codebook(book, tmp_path / "units")
    assert path.name == "units.safetensors" and (tmp_path / "units.json").is_file()
    assert set(load_file(str(path))) == {"centroids"}
    again = load_codebook(path)
    assert torch.equal(again.centroids, centroids)
    assert (again.k, again.dim, again.model_sha256, again.layer, again.standardize) == (
        3, 4, "ab" * 32, "c", True,
    )  # fmt: skip
    meta = json.loads((tmp_path / "units.json").read_text())
    assert meta["format"] == "cpcspeech-units" and meta["k"] == 3 and meta["dim"] == 4
    # features of another dimension, or of other weights, are refused
    with pytest.raises(CPCSpeechError, match="expected 4-d features"):
        again.check_source(load_feature_source("mfcc"))
    random = load_feature_source("random")
    other = Codebook(torch.zeros(3, random.dim), "x", "0" * 64, "c", False)
    with pytest.raises(CPCSpeechError, match="expected features of model sha256 000000000000"):
        other.check_source(random)
    # a JSON that disagrees with the tensor is refused
    meta["k"] = 5
    (tmp_path / "units.json").write_text(json.dumps(meta))
    with pytest.raises(CPCSpeechError, match=r"expected centroids of shape \(5, 4\)"):
        load_codebook(path)


def test_cli_units_fit_and_apply(tmp_path, tone_data):
    data = tone_data
    for name, ids in (("train_split.txt", ["spk_a-0", "spk_a-1", "spk_b-0", "spk_b-1"]),
                      ("test_split.txt", ["spk_a-2", "spk_b-2"])):  # fmt: skip
        (data / name).write_text("\n".join(ids) + "\n")
    book = tmp_path / "book.safetensors"
    fit = runner.invoke(
        app,
        ["units", "fit", "--data", str(data), "--model", "random", "--k", "8", "--out",
         str(book), "--labels", str(data / "labels.txt"), "--standardize", "--quiet"],
    )  # fmt: skip
    assert fit.exit_code == 0, fit.output
    assert "K=8, 256-d" in fit.output and "PNMI" in fit.output and "ABX within" in fit.output
    quality = json.loads((tmp_path / "book.quality.json").read_text())
    assert 0 < quality["pnmi"] <= 1 and 0 < quality["phone_purity"] <= 1
    assert quality["n_utterances"] == 2

    text = tmp_path / "units.txt"
    apply = runner.invoke(
        app,
        ["units", "apply", "--codebook", str(book), str(data / "wav.scp"), "--out", str(text),
         "--quiet"],
    )  # fmt: skip
    assert apply.exit_code == 0, apply.output
    lines = text.read_text().splitlines()
    assert len(lines) == 6 and lines[0].split()[0] == "spk_a-0"
    units = np.array(lines[0].split()[1:], dtype=np.int64)
    assert units.min() >= 0 and units.max() < 8

    folder = tmp_path / "npy"
    apply_npy = runner.invoke(
        app,
        ["units", "apply", "--codebook", str(book), str(data / "wav.scp"), "--out", str(folder),
         "--quiet", "--collapse"],
    )  # fmt: skip
    assert apply_npy.exit_code == 0, apply_npy.output
    collapsed = np.load(folder / "spk_a-0.npy")
    assert collapsed.dtype == np.int32
    assert collapsed.tolist() == [int(u) for u in units_text("u", units, True).split()[1:]]

    # a codebook of other weights is refused with one line and status 2
    wrong = runner.invoke(
        app,
        ["units", "apply", "--codebook", str(book), "--model", "mfcc", str(data / "wav.scp"),
         "--out", str(tmp_path / "x.txt")],
    )  # fmt: skip
    assert wrong.exit_code == 2 and "expected 256-d features" in wrong.output


def test_codebook_missing_is_clear(tmp_path):
    with pytest.raises(CPCSpeechError, match="expected a units codebook"):
        load_codebook(Path(tmp_path) / "none.safetensors")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"k": 1}, "--k: expected >= 2 units, found 1"),
        ({"k": 8, "method": "faiss"}, "k-means method: expected torch or sklearn, found 'faiss'"),
        ({"k": 8, "max_frames": 4}, "--max-frames: expected at least K = 8 frames, found 4"),
        ({"k": 8, "device": "tpu"}, "--device: expected auto, cpu, cuda or cuda:N"),
    ],
)
def test_units_options_are_checked_before_any_features(options, fragment):
    with pytest.raises(CPCSpeechError, match=re.escape(fragment)):
        UnitsOptions(**options)


def test_units_fit_without_a_test_split_reads_every_utterance_and_says_so(tmp_path, tone_data):
    data = tone_data
    fit = runner.invoke(
        app, ["units", "fit", "--data", str(data), "--model", "random", "--k", "4", "--out",
              str(tmp_path / "book"), "--max-frames", "2000", "--quiet"],
    )  # fmt: skip
    assert fit.exit_code == 0, fit.output
    assert "of 6 utterances" in fit.output and "k-means (torch)" in fit.output
    labelled = runner.invoke(
        app, ["units", "fit", "--data", str(data), "--model", "random", "--k", "4", "--out",
              str(tmp_path / "book2"), "--labels", str(data / "labels.txt"), "--quiet"],
    )  # fmt: skip
    assert labelled.exit_code == 2 and "test_split.txt (or pass --test-list)" in labelled.output
    assert not (tmp_path / "book2.safetensors").exists()
