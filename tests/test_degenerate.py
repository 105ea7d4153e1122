"""Issue 20, classes 4-6 beyond the battery: what a degenerate or unexpected case reports, and
that fits and shards made by one run are accepted again."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cpcspeech.cli import app
from cpcspeech.errors import CPCSpeechError
from cpcspeech.eval.abx import ABXResult, format_abx_table
from cpcspeech.eval.features import npy_folder_source
from cpcspeech.eval.items import read_item_file
from cpcspeech.files import json_text, read_json
from cpcspeech.io.shards import assign_shards


def test_inputs_of_unknown_length_are_dealt_by_count():
    shard_of = assign_shards([0.0] * 7 + [3.0, 1.0], 3)
    assert sorted(shard_of[:7]) == [0, 0, 0, 1, 1, 2, 2]  # not all on shard 0
    assert shard_of == assign_shards([0.0] * 7 + [3.0, 1.0], 3)


def test_json_output_is_strict_and_nan_is_null(tmp_path):
    text = json_text({"a": float("nan"), "b": [1.0, float("inf")], "c": 2})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
        "a": None, "b": [1.0, None], "c": 2,
    }  # fmt: skip
    (tmp_path / "t.json").write_text('{"a": [1, ')
    with pytest.raises(CPCSpeechError, match=r"t.json: expected valid JSON.*line 1 column"):
        read_json(tmp_path / "t.json", CPCSpeechError)


def test_one_unscorable_abx_mode_is_na_with_a_warning_and_null():
    result = ABXResult("m", "m", "angular", 0.25, float("nan"), 3, 3, 1, 0.0)
    assert "| m | 25.00 | n/a |" in format_abx_table([result])
    assert "warning: no scorable across cell" in result.describe()
    assert result.to_dict()["across"] is None
    result.check_scored()  # one mode scored: not an error
    with pytest.raises(CPCSpeechError, match="expected at least one scorable cell"):
        ABXResult("m", "m", "angular", float("nan"), float("nan"), 3, 3, 1, 0.0).check_scored()


def test_reversed_items_are_counted_and_named(tmp_path):
    path = tmp_path / "x.item"
    path.write_text("#header\nu 0.1 0.3 A B C s\nu 0.5 0.2 A B C s\nu 0.9 0.4 A B C s\n")
    items = read_item_file(path)
    assert len(items) == 1
    assert items.warnings() == [f"2 item(s) with onset > offset left out (first: {path}:3: "
                                "'u 0.5 0.2 A B C s')"]  # fmt: skip


def test_npy_folder_identity_names_its_files_and_dim(tmp_path):
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.zeros((4, 3), np.float32))
    first = npy_folder_source(tmp_path).identity
    assert first.startswith("npy-sha256:") and first == npy_folder_source(tmp_path).identity
    np.save(tmp_path / "c.npy", np.zeros((4, 3), np.float32))
    assert npy_folder_source(tmp_path).identity != first


def test_codebook_fitted_on_a_npy_folder_applies_to_it(tmp_path):
    feats = tmp_path / "feats"
    feats.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        np.save(feats / f"u{k}.npy", rng.normal(size=(30, 4)).astype(np.float32))
        (tmp_path / "audio").mkdir(exist_ok=True)
        (tmp_path / "audio" / f"u{k}.wav").write_bytes(b"")  # never read: features come from .npy
    wav_scp = "\n".join(f"u{k} audio/u{k}.wav" for k in range(3)) + "\n"
    (tmp_path / "wav.scp").write_text(wav_scp)
    (tmp_path / "utt2spk").write_text("".join(f"u{k} s{k % 2}\n" for k in range(3)))
    runner = CliRunner()
    fit = runner.invoke(app, ["units", "fit", "--data", str(tmp_path), "-m", str(feats), "--k",
                              "3", "--out", str(tmp_path / "cb"), "-q"])  # fmt: skip
    assert fit.exit_code == 0, fit.output
    book, out = str(tmp_path / "cb"), str(tmp_path / "u.txt")
    apply = runner.invoke(app, ["units", "apply", str(tmp_path / "wav.scp"), "-c", book,
                                "--out", out, "-q"])  # fmt: skip
    assert apply.exit_code == 0, apply.output
    assert len((tmp_path / "u.txt").read_text().splitlines()) == 3


def test_an_unexpected_exception_is_one_line_that_says_it_is_a_bug(monkeypatch):
    import cpcspeech.weights.resolve as resolve

    def broken(*args, **kwargs):
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(resolve, "list_models", broken)
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 70
    assert result.stderr.splitlines() == [
        "error: internal error (a bug, please report it; CPCSPEECH_DEBUG=1 shows the traceback): "
        "ValueError: boom second line"
    ]
    debug = CliRunner().invoke(app, ["models"], env={"CPCSPEECH_DEBUG": "1"})
    assert isinstance(debug.exception, ValueError)


def test_skipped_files_still_exit_1_not_an_internal_error(tmp_path):
    import soundfile as sf

    sf.write(str(tmp_path / "a.wav"), np.zeros(8000, np.float32), 16000)
    Path(tmp_path / "b.wav").write_bytes(b"junk")
    result = CliRunner().invoke(app, ["extract", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"),
                                      "--out", f"{tmp_path}/o/", "-m", "random",
                                      "--skip-errors"])  # fmt: skip
    assert result.exit_code == 1 and "internal error" not in result.output, result.output
