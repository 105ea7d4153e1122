"""Figures 2 and 3: t-SNE of speakers and accuracy per step k write real, readable PNGs."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from samples import SPEAKER_PITCH, make_tiny_model
from typer.testing import CliRunner

from cpcspeech.cli import app
from cpcspeech.errors import CPCSpeechError
from cpcspeech.eval.plots import (
    auto_perplexity,
    plot_prediction_steps,
    read_prediction_accuracy,
    select_speakers,
    speaker_tsne,
)
from cpcspeech.io.corpus import find_utterances

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] >= 200 and image.shape[1] >= 300
    assert float(image[..., :3].std()) > 0.01  # not a blank canvas
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    return image


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ----- t-SNE (Figure 2) -----


def test_speaker_tsne_writes_png_and_is_deterministic_for_a_seed(speaker_corpus_dir, tmp_path):
    utterances = find_utterances(speaker_corpus_dir)
    out = tmp_path / "figs" / "tsne.png"
    embedding, labels = speaker_tsne(make_tiny_model(), utterances, out, seed=3)
    assert embedding.shape == (12, 2) and np.isfinite(embedding).all()
    assert labels == [u.speaker for u in sorted(utterances, key=lambda u: (u.speaker, u.utt_id))]
    _check_png(out)
    again, _ = speaker_tsne(make_tiny_model(), utterances, tmp_path / "again.png", seed=3)
    np.testing.assert_allclose(again, embedding, rtol=1e-5, atol=1e-5)


def test_select_speakers_takes_first_sorted_speakers_and_caps_utterances(speaker_corpus_dir):
    chosen = select_speakers(
        find_utterances(speaker_corpus_dir), max_speakers=2, max_utts_per_speaker=3
    )
    assert [u.speaker for u in chosen] == ["alice"] * 3 + ["bob"] * 3
    assert [u.utt_id for u in chosen[:3]] == ["alice_0", "alice_1", "alice_2"]
    with pytest.raises(CPCSpeechError, match="max_speakers"):
        select_speakers(find_utterances(speaker_corpus_dir), max_speakers=0)


def test_perplexity_is_valid_for_small_sets_and_checked(speaker_corpus_dir, tiny_model, tmp_path):
    for n in (2, 3, 5, 12, 91, 1000):
        assert 0 < auto_perplexity(n) < n
    utterances = find_utterances(speaker_corpus_dir)
    model = tiny_model
    with pytest.raises(CPCSpeechError, match=r"perplexity: expected a value in \(0, 4\)"):
        speaker_tsne(model, utterances, tmp_path / "x.png", max_speakers=1, perplexity=4)
    # Two utterances is the smallest set t-SNE accepts; the automatic perplexity copes.
    embedding, labels = speaker_tsne(
        model, utterances, tmp_path / "two.png", max_speakers=1, max_utts_per_speaker=2
    )
    assert embedding.shape == (2, 2) and labels == ["alice", "alice"]
    with pytest.raises(CPCSpeechError, match="at least 2 utterances, found 1"):
        speaker_tsne(
            model, utterances, tmp_path / "one.png", max_speakers=1, max_utts_per_speaker=1
        )
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "one.png").exists()


def test_speaker_tsne_rejects_non_png_output(speaker_corpus_dir, tiny_model, tmp_path):
    with pytest.raises(CPCSpeechError, match=r"expected a path ending in \.png"):
        speaker_tsne(tiny_model, find_utterances(speaker_corpus_dir), tmp_path / "fig.jpg")


def test_missing_matplotlib_names_the_extra(speaker_corpus_dir, tiny_model, tmp_path, monkeypatch):
    # A None entry in sys.modules makes `import` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(CPCSpeechError, match=r"pip install 'cpcspeech\[plots\]'"):
        speaker_tsne(tiny_model, find_utterances(speaker_corpus_dir), tmp_path / "fig.png")
    with pytest.raises(CPCSpeechError, match=r"cpcspeech\[plots\]"):
        log = _write_jsonl(tmp_path / "log.jsonl", [{"step": 1, "acc_k1": 0.5}])
        plot_prediction_steps(log, tmp_path / "steps.png")


def test_tsne_cli_with_random_model(speaker_corpus_dir, tmp_path):
    out = tmp_path / "cli_tsne.png"
    result = CliRunner().invoke(
        app, ["tsne", "--data", str(speaker_corpus_dir), "--model", "random", "--out", str(out),
              "--speakers", "2", "--seed", "1"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "8 utterances of 2 speakers" in result.output
    _check_png(out)


def test_tsne_cli_with_a_folder_of_npy_features(speaker_corpus_dir, tmp_path):
    feats = tmp_path / "feats"
    rng = np.random.default_rng(0)
    for k, speaker in enumerate(SPEAKER_PITCH):
        (feats / speaker).mkdir(parents=True)
        for i in range(4):
            frames = rng.normal(size=(25, 6)) + 5.0 * k  # speakers far apart
            np.save(feats / speaker / f"{speaker}_{i}.npy", frames.astype(np.float32))
    out = tmp_path / "npy_tsne.png"
    result = CliRunner().invoke(
        app, ["tsne", "--data", str(speaker_corpus_dir), "--model", str(feats), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "12 utterances of 3 speakers" in result.output and "npy:feats" in result.output
    _check_png(out)


def test_tsne_cli_reports_bad_input_without_traceback(tmp_path):
    result = CliRunner().invoke(
        app, ["tsne", "--data", str(tmp_path / "nope"), "--model", "random", "--out", "x.png"]
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# ----- accuracy per step k (Figure 3) -----


def test_plot_steps_from_jsonl_prefers_last_valid_record(tmp_path):
    log = _write_jsonl(
        tmp_path / "log.jsonl",
        [
            {"step": 100, "split": "train", "loss": 3.0, "acc_k1": 0.5, "acc_k2": 0.3},
            {"step": 100, "split": "valid", "loss": 3.1, "acc_k1": 0.6, "acc_k2": 0.4},
            {"step": 200, "split": "valid", "loss": 2.9, "acc_k1": 0.9, "acc_k2": 0.7},
            {"step": 300, "split": "train", "loss": 2.5, "acc_k1": 0.95, "acc_k2": 0.8},
        ],
    )
    accuracy, description = read_prediction_accuracy(log)
    np.testing.assert_allclose(accuracy, [0.9, 0.7])
    assert description == "valid, step 200"
    out = tmp_path / "steps.png"
    np.testing.assert_allclose(plot_prediction_steps(log, out), [0.9, 0.7])
    _check_png(out)


def test_plot_steps_from_train_only_log_with_accuracy_list_and_torn_tail(tmp_path):
    log = tmp_path / "log.jsonl"
    _write_jsonl(log, [{"step": 1, "accuracy": [0.2, 0.1, 0.05]}, {"step": 2, "loss": 4.0}])
    with open(log, "a", encoding="utf-8") as f:
        f.write('{"step": 3, "accuracy": [0.9')  # killed mid-write
    accuracy, description = read_prediction_accuracy(log)
    np.testing.assert_allclose(accuracy, [0.2, 0.1, 0.05])
    assert description == "train, step 1"


def test_plot_steps_from_csv_and_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    header = "step,split,loss," + ",".join(f"acc_k{k}" for k in range(1, 13))
    rows = [
        "10,train,4.0," + ",".join(f"{0.9 - 0.05 * k:.2f}" for k in range(12)),
        "10,valid,4.1," + ",".join(f"{0.8 - 0.05 * k:.2f}" for k in range(12)),
        "20,train,3.9," + ",".join([""] * 12),
    ]
    (run / "log.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    accuracy, description = read_prediction_accuracy(run)
    assert accuracy.shape == (12,) and accuracy[0] == pytest.approx(0.8)
    assert description == "valid, step 10"
    out = tmp_path / "csv.png"
    plot_prediction_steps(run / "log.csv", out)
    _check_png(out)


def test_plot_steps_from_checkpoint_meta(tmp_path):
    ckpt = tmp_path / "checkpoints" / "step-00001000"
    ckpt.mkdir(parents=True)
    meta = {"step": 1000, "valid_loss": 2.0, "valid_accuracy": [0.97, 0.9, 0.8, 0.6]}
    (ckpt / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    for source in (ckpt, ckpt / "meta.json"):
        accuracy, description = read_prediction_accuracy(source)
        np.testing.assert_allclose(accuracy, [0.97, 0.9, 0.8, 0.6])
        assert description == "valid, step 1000"
    result = CliRunner().invoke(app, ["plot-steps", str(ckpt), "--out", str(tmp_path / "m.png")])
    assert result.exit_code == 0, result.output
    assert "k=1..4" in result.output
    _check_png(tmp_path / "m.png")


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ([{"step": 1, "loss": 3.0}], "log.jsonl", "no record with prediction accuracies"),
        ([{"step": 1, "acc_k1": 0.5, "acc_k3": 0.4}], "log.jsonl", "without gaps"),
        ([{"step": 1, "acc_k1": 55.0}], "log.jsonl", r"expected an accuracy in \[0, 1\]"),
        ([{"split": "test", "acc_k1": 0.5}], "log.jsonl", r"found splits \['test'\]"),
        ({"step": 5, "valid_loss": 1.0}, "meta.json", "expected a non-empty 'valid_accuracy'"),
    ],
)
def test_plot_steps_clear_errors_without_accuracy(tmp_path, content, name, message):
    source = tmp_path / name
    if name == "meta.json":
        source.write_text(json.dumps(content), encoding="utf-8")
    else:
        _write_jsonl(source, content)
    out = tmp_path / "never.png"
    with pytest.raises(CPCSpeechError, match=message):
        plot_prediction_steps(source, out)
    assert not out.exists()


def test_plot_steps_missing_source_and_empty_folder(tmp_path):
    with pytest.raises(CPCSpeechError, match="found nothing"):
        read_prediction_accuracy(tmp_path / "missing.jsonl")
    with pytest.raises(CPCSpeechError, match="found none of them"):
        read_prediction_accuracy(tmp_path)
    result = CliRunner().invoke(
        app, ["plot-steps", str(tmp_path / "missing.jsonl"), "--out", "x.png"]
    )
    assert result.exit_code == 2 and "error" in result.output


def test_png_replaces_existing_file_atomically(tmp_path):
    log = _write_jsonl(tmp_path / "log.jsonl", [{"step": 1, "acc_k1": 0.5, "acc_k2": 0.25}])
    out = tmp_path / "steps.png"
    out.write_bytes(b"old")
    plot_prediction_steps(log, out)
    _check_png(out)
    assert sorted(os.listdir(tmp_path)) == ["log.jsonl", "steps.png"]
