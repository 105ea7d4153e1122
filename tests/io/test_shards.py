"""Sharded extraction: the deterministic, duration-balanced split and merge-index."""

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from cpcspeech.cli import app
from cpcspeech.errors import CPCSpeechError
from cpcspeech.io.index import read_index
from cpcspeech.io.shards import MergedFeatures, Shard, assign_shards, parse_shard

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def test_parse_shard():
    assert parse_shard("0/3") == Shard(0, 3)
    assert parse_shard("env", {"RANK": "2", "WORLD_SIZE": "4"}) == Shard(2, 4)
    assert parse_shard("2/4").label == "shard-2-of-4"
    for bad in ("3/3", "-1/3", "1", "a/b", "1/0", "1/2/3"):
        with pytest.raises(CPCSpeechError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(CPCSpeechError, match="WORLD_SIZE"):
        parse_shard("env", {"RANK": "0"})


def test_assign_shards_balances_duration_not_count():
    seconds = [8.0] + [1.0] * 8
    shard_of = assign_shards(seconds, 2)
    assert shard_of == assign_shards(list(seconds), 2)  # deterministic
    assert shard_of[0] == 0 and shard_of[1:] == [1] * 8  # 8 s against 8 x 1 s
    rng = np.random.default_rng(0)
    seconds = rng.uniform(2, 8, size=500).tolist()
    loads = np.bincount(assign_shards(seconds, 7), weights=seconds, minlength=7)
    assert loads.max() - loads.min() <= 8.0  # within one file's length
    assert sorted(set(assign_shards(seconds[:2], 5))) == [0, 1]  # more shards than files


@pytest.fixture
def corpus(tmp_path):
    """Eight files of 0.3-2 s, three formats and rates, in one folder."""
    root = tmp_path / "audio"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i, (ext, rate) in enumerate([("wav", 16000), ("flac", 22050), ("ogg", 8000)] * 3):
        if i == 8:
            break
        seconds = rng.uniform(0.3, 2.0)
        data = rng.normal(0, 0.1, int(rate * seconds)).astype(np.float32)
        sf.write(str(root / f"u{i}.{ext}"), data, rate)
    return root


def test_three_shards_merged_equal_one_run_row_for_row(tmp_path, corpus):
    one = tmp_path / "one" / "feats.npy"
    assert cli("extract", str(corpus), "--out", str(one), "--model", "random").exit_code == 0
    shards = tmp_path / "sharded" / "feats.npy"
    outputs = []
    for i in range(3):
        result = cli(
            "extract", str(corpus), "--out", str(shards), "--model", "random", "--shard", f"{i}/3"
        )
        assert result.exit_code == 0, result.output
        outputs.append(str(shards.with_name(f"feats.shard-{i}-of-3.npy")))
    assert not shards.exists()  # each shard wrote its own output
    sizes = [len(read_index(o.replace(".npy", ".index.tsv"))) for o in outputs]
    assert sum(sizes) == 8 and min(sizes) >= 1

    merged_index = tmp_path / "merged.index.tsv"
    result = cli("merge-index", *reversed(outputs), "--out", str(merged_index))
    assert result.exit_code == 0, result.output
    assert "8 files from 3 shard(s)" in result.output
    merged = MergedFeatures(merged_index)
    rows = read_index(one.with_name("feats.index.tsv"))
    feats = np.load(one)
    assert len(merged) == len(rows) == 8
    for i, row in enumerate(rows):
        for key in ("path", "num_frames", "seconds", "status", "id"):
            assert merged.rows[i][key] == row[key]
        first, count = int(row["first_row"]), int(row["num_frames"])
        np.testing.assert_allclose(merged.features(i), feats[first : first + count], atol=1e-6)


def test_merge_index_rejects_missing_duplicate_and_unsharded(tmp_path, corpus):
    out = tmp_path / "feats.npy"
    for i in range(2):
        cli("extract", str(corpus), "--out", str(out), "--model", "random", "--shard", f"{i}/2")
    a, b = (str(tmp_path / f"feats.shard-{i}-of-2.npy") for i in range(2))
    result = cli("merge-index", a, "--out", str(tmp_path / "m.index.tsv"))
    assert result.exit_code == 2 and "shard missing" in result.output
    result = cli("merge-index", a, b, a, "--out", str(tmp_path / "m.index.tsv"))
    assert result.exit_code == 2 and "given twice" in result.output
    cli("extract", str(corpus), "--out", str(tmp_path / "plain.npy"), "--model", "random")
    result = cli("merge-index", str(tmp_path / "plain.npy"), "--out", str(tmp_path / "m.index.tsv"))
    assert result.exit_code == 2 and "input_position" in result.output
    assert not (tmp_path / "m.index.tsv").exists()
    own = tmp_path / "feats.shard-1-of-2.index.tsv"
    before = own.read_bytes()
    result = cli("merge-index", a, b, "--out", str(own))  # a shard's own index: refused
    assert result.exit_code == 2 and "--out would replace" in result.output
    assert "which is the input" in result.output
    assert own.read_bytes() == before
