"""ZeroSpeech 2021 phonetic submissions (cpcspeech/zerospeech.py): written on a small fake dataset,
resumed, and every zerospeech2021 validation rule checked by breaking a valid submission."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from cpcspeech import zerospeech as zr
from cpcspeech.errors import CorpusError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """phonetic/<set>/ with two short wavs each (and the .item file the real sets carry)."""
    root = tmp_path_factory.mktemp("zr2021")
    rng = np.random.default_rng(0)
    for k, name in enumerate(zr.PHONETIC_SETS):
        folder = root / "phonetic" / name
        folder.mkdir(parents=True)
        (root / "phonetic" / f"{name}.item").write_text(
            "#file onset offset #phone prev next speaker\n"
        )
        for i in range(2):
            n = 3200 + 800 * i + 160 * k
            sf.write(folder / f"{k}-{i}.wav", 0.1 * rng.standard_normal(n), 16000, subtype="PCM_16")
        (folder / "notes.item").write_text("not a wav\n")
    return root


@pytest.fixture(scope="module")
def submission(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sub") / "submission"
    summary = zr.write_submission(dataset, out, model="random")
    assert sum(summary.written.values()) == 8 and summary.dim == 256
    return out


def test_a_submission_has_every_file_and_passes_the_rules(dataset, submission):
    assert zr.validate_submission(dataset, submission) == []
    assert sorted(p.name for p in submission.iterdir()) == sorted(
        ["meta.yaml", "phonetic", "lexical", "syntactic", "semantic", "code"]
    )
    feats = np.loadtxt(submission / "phonetic" / "dev-other" / "1-1.wav".replace(".wav", ".txt"))
    assert feats.shape == ((3200 + 800 + 160 + 1) // 160, 256)  # (N + 1) // 160 frames
    meta = yaml.safe_load((submission / "meta.yaml").read_text())
    assert meta["parameters"] == {
        "phonetic": {"metric": "cosine", "frame_shift": 0.01},
        "semantic": {"metric": "cosine", "pooling": "mean"},
    }
    params = yaml.safe_load((submission.parent / "submission.params.yaml").read_text())
    assert params == {"feature_size": 0.01, "distance_mode": "cosine", "score_file_type": ".txt"}


def test_an_interrupted_submission_resumes(dataset, submission, tmp_path):
    copy = tmp_path / "submission"
    shutil.copytree(submission, copy)
    (copy / "phonetic" / "test-clean" / "2-0.txt").unlink()
    summary = zr.write_submission(dataset, copy, model="random")
    assert sum(summary.written.values()) == 1 and sum(summary.reused.values()) == 7
    assert zr.validate_submission(dataset, copy) == []


def _broken(submission: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(submission, copy)
    change(copy)
    return copy


def _edit_meta(path: Path, edit) -> None:
    meta = yaml.safe_load((path / "meta.yaml").read_text())
    edit(meta)
    (path / "meta.yaml").write_text(yaml.safe_dump(meta))


def _write(rel: str, text: str):
    return lambda p: (p / rel).write_text(text)


def _mkdir(rel: str):
    return lambda p: (p / rel).mkdir()


def _remove(rel: str):
    return lambda p: (p / rel).rmdir() if (p / rel).is_dir() else (p / rel).unlink()


DROP = object()


def _meta(*keys: str, value: object):
    """Set (or with DROP remove) meta.yaml's value at ``keys``."""

    def edit(meta: dict) -> None:
        for key in keys[:-1]:
            meta = meta[key]
        if value is DROP:
            meta.pop(keys[-1])
        else:
            meta[keys[-1]] = value

    return lambda p: _edit_meta(p, edit)


def _empty_code(p: Path) -> None:
    shutil.rmtree(p / "code")
    (p / "code").mkdir()


ONE = "phonetic/dev-clean/0-0.txt"
BREAKS = {
    "params.yaml at the root": (_write("params.yaml", "x: 1\n"), "extra ['params.yaml']"),
    "no semantic folder": (_remove("semantic"), "missing ['semantic']"),
    "empty code/ with open_source": (_empty_code, "non-empty code"),
    "a fifth phonetic set": (_mkdir("phonetic/train"), "extra ['train']"),
    "a sub-folder in a set": (_mkdir("phonetic/dev-clean/x"), "only .txt"),
    "a .npy in a set": (_write("phonetic/dev-clean/0-0.npy", ""), "only .txt"),
    "an extra .txt": (_write("phonetic/dev-clean/zzz.txt", "1 2\n3 4\n"), "extra 1 ['zzz']"),
    "a missing .txt": (_remove("phonetic/test-other/3-1.txt"), "missing 1 ['3-1']"),
    "one row": (_write(ONE, "1 2 3\n"), "2-D array"),
    "one column": (_write(ONE, "1\n2\n3\n"), "2-D array"),
    "commas": (_write(ONE, "1,2\n3,4\n"), "np.loadtxt"),
    "nan": (_write(ONE, "1 nan\n3 4\n"), "finite"),
    "another width": (_write(ONE, "1 2\n3 4\n"), "one number of columns"),
    "an extra meta key": (_meta("foo", value=1), "extra ['foo']"),
    "no semantic parameters": (_meta("parameters", "semantic", value=DROP), "missing ['semantic']"),
    "euclidian": (_meta("parameters", "phonetic", "metric", value="euclidian"), "metric"),
    "frame shift as text": (_meta("parameters", "phonetic", "frame_shift", value="0.01"), "frame_"),
    "gpu budget as text": (_meta("gpu_budget", value="1"), "gpu_budget"),
    "an empty author": (_meta("author", value=""), "non-empty"),
    "a bad pooling": (_meta("parameters", "semantic", "pooling", value="median"), "pooling"),
    "a bad scipy metric": (_meta("parameters", "semantic", "metric", value="nope"), "scipy"),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_each_rule_is_checked(dataset, submission, tmp_path, name):
    change, expected = BREAKS[name]
    problems = zr.validate_submission(dataset, _broken(submission, tmp_path, change))
    assert problems and any(expected in p for p in problems), problems


def test_comment_lines_and_integers_pass_as_zerospeech2021_reads_them(
    dataset, submission, tmp_path
):
    def change(p):
        for f in (p / "phonetic").rglob("*.txt"):
            rows = np.loadtxt(f).shape[0]
            f.write_text("# c\n" + "".join(" ".join(["1"] * 256) + "\n" for _ in range(rows)))

    assert zr.validate_submission(dataset, _broken(submission, tmp_path, change)) == []


def test_a_folder_not_laid_out_like_the_dataset_is_one_error(tmp_path):
    (tmp_path / "phonetic" / "dev-clean").mkdir(parents=True)
    with pytest.raises(CorpusError, match="dev-clean: expected .wav files"):
        zr.write_submission(tmp_path, tmp_path / "out", model="random")


def test_the_command_writes_a_dev_only_submission(dataset, tmp_path):
    out = tmp_path / "dev"
    result = subprocess.run(
        [sys.executable, "-m", "cpcspeech", "zerospeech", str(dataset), "--out", str(out),
         "--model", "random", "--only-dev", "--author", "Ada", "--layer", "z"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "validated" in result.stdout
    assert sorted(p.name for p in (out / "phonetic").iterdir()) == ["dev-clean", "dev-other"]
    assert zr.validate_submission(dataset, out, only_dev=True) == []
    assert np.loadtxt(out / "phonetic" / "dev-clean" / "0-0.txt").shape[1] == 512
    assert yaml.safe_load((out / "meta.yaml").read_text())["author"] == "Ada"
