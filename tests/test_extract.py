"""`cpcspeech extract` end to end on real files: stacked .npy + index, mirrored folders, wav.scp,
--skip-errors, atomic failure, and the console script."""

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from paths import SHARED_DATA
from samples import noise
from typer.testing import CliRunner

from cpcspeech.cli import app
from cpcspeech.errors import AudioError, CPCSpeechError
from cpcspeech.extract import extract_features
from cpcspeech.io.audio import load_audio
from cpcspeech.io.index import INDEX_COLUMNS, FileResult, read_index
from cpcspeech.io.read_ahead import read_ahead
from cpcspeech.io.shards import Shard
from cpcspeech.io.sources import find_sources
from cpcspeech.io.writers import NpyFolderWriter, StackedNpy, StackedNpyWriter, parse_output
from cpcspeech.model.cpc import CPCModel

DATA = SHARED_DATA
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["extract", *args], env={"COLUMNS": "200"})


def random_model(seed: int = 0) -> CPCModel:
    torch.manual_seed(seed)
    return CPCModel().eval()


@pytest.fixture
def audio_dir(tmp_path) -> Path:
    """a.wav (16 kHz), sub/b.flac (44.1 kHz stereo), c.ogg (8 kHz): 0.6-1.2 s each."""
    root = tmp_path / "audio"
    (root / "sub").mkdir(parents=True)
    noise(root / "a.wav", 16000, 1.2, seed=1)
    noise(root / "sub" / "b.flac", 44100, 0.8, channels=2, seed=2)
    noise(root / "c.ogg", 8000, 0.6, seed=3)
    (root / "notes.txt").write_text("not audio, not listed")
    return root


def reference(model: CPCModel, path: str, layer: str = "c") -> np.ndarray:
    with torch.inference_mode():
        return model.extract(torch.from_numpy(load_audio(path)), layer=layer).numpy()


def check_stacked(feats_path: Path, model: CPCModel, layer: str, expected_files: int) -> list:
    feats = np.load(feats_path)
    rows = read_index(feats_path.with_name(feats_path.stem + ".index.tsv"))
    assert feats.dtype == np.float32
    assert feats.shape == (sum(int(r["num_frames"]) for r in rows), 256 if layer == "c" else 512)
    assert len(rows) == expected_files
    cursor = 0
    for row in rows:
        first, count = int(row["first_row"]), int(row["num_frames"])
        assert first == cursor  # rows are contiguous, in index order
        cursor += count
        if row["status"] == "ok":
            n = len(load_audio(row["path"]))
            assert count == (n + 1) // 160
            np.testing.assert_allclose(
                feats[first : first + count], reference(model, row["path"], layer), atol=1e-5
            )
    assert cursor == feats.shape[0]
    return rows


def test_folder_to_stacked_npy_random(tmp_path, audio_dir):
    out = tmp_path / "feats.npy"
    result = invoke(str(audio_dir), "--out", str(out), "--model", "random", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "weights: random init (seed 3)" in result.output
    assert "x real time" in result.output
    rows = check_stacked(out, random_model(3), "c", expected_files=3)
    assert [Path(r["path"]).name for r in rows] == ["a.wav", "c.ogg", "b.flac"]
    assert [r["id"] for r in rows] == ["a", "c", "sub/b"]
    assert list(rows[0]) == list(INDEX_COLUMNS)
    assert f"({np.load(out).shape[0]}, 256)" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio", "feats.index.tsv", "feats.npy"]


def test_saved_model_dir_layer_z_to_mirrored_folder(tmp_path, audio_dir):
    model = random_model(7)
    model_dir = tmp_path / "my_model"
    model.save_pretrained(model_dir)
    out = tmp_path / "out"
    result = invoke(str(audio_dir), "-o", f"{out}/", "--model", str(model_dir), "--layer", "z")
    assert result.exit_code == 0, result.output
    assert f"weights: local directory {model_dir}, sha256 " in result.output
    loaded = CPCModel.from_directory(model_dir).eval()
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.npy", "c.npy", "sub/b.npy"]
    for rel, src in [("a.npy", "a.wav"), ("sub/b.npy", "sub/b.flac"), ("c.npy", "c.ogg")]:
        feats = np.load(out / rel)
        assert feats.shape[1] == 512
        np.testing.assert_allclose(feats, reference(loaded, str(audio_dir / src), "z"), atol=1e-5)


def test_wav_scp_input_keeps_order_and_ids(tmp_path, audio_dir):
    scp = audio_dir / "wav.scp"
    scp.write_text(
        f"utt_c c.ogg\nutt_a {audio_dir / 'a.wav'}\n\nutt_b sub/b.flac\n", encoding="utf-8"
    )
    out = tmp_path / "scp.npy"
    result = invoke(str(scp), "--out", str(out), "--model", "random", "--quiet")
    assert result.exit_code == 0, result.output
    rows = check_stacked(out, random_model(0), "c", expected_files=3)
    assert [r["id"] for r in rows] == ["utt_c", "utt_a", "utt_b"]
    # A directory output from a wav.scp writes OUT/<utt_id>.npy.
    result = invoke(str(scp), "--out", str(tmp_path / "by_id") + "/", "--model", "random", "-q")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "by_id").iterdir()) == [
        "utt_a.npy",
        "utt_b.npy",
        "utt_c.npy",
    ]


def add_bad_files(audio_dir: Path) -> None:
    (audio_dir / "b_text.wav").write_text("this is not audio\n" * 10)  # caught by the header probe
    data = np.zeros(8000, np.float32)
    data[10] = np.nan
    sf.write(str(audio_dir / "b_nan.wav"), data, 16000, subtype="FLOAT")  # caught while decoding


def test_skip_errors_keeps_good_files(tmp_path, audio_dir):
    add_bad_files(audio_dir)
    out = tmp_path / "feats.npy"
    result = invoke(str(audio_dir), "--out", str(out), "--model", "random", "--skip-errors")
    assert result.exit_code == 1, result.output
    assert "2 of 5 files skipped" in result.output
    assert "b_nan.wav" in result.output and "b_text.wav" in result.output
    rows = check_stacked(out, random_model(0), "c", expected_files=5)
    skipped = {Path(r["path"]).name: r for r in rows if r["status"] != "ok"}
    assert sorted(skipped) == ["b_nan.wav", "b_text.wav"]
    assert all(r["num_frames"] == "0" for r in skipped.values())
    assert skipped["b_nan.wav"]["status"].startswith("skipped: expected finite samples")
    assert skipped["b_text.wav"]["status"].startswith("skipped: not a readable audio file")


@pytest.mark.parametrize("bad", ["b_text.wav", "b_nan.wav"])
def test_failed_run_leaves_nothing(tmp_path, audio_dir, bad):
    add_bad_files(audio_dir)
    (audio_dir / ("b_nan.wav" if bad == "b_text.wav" else "b_text.wav")).unlink()
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    result = invoke(str(audio_dir), "--out", str(out_dir / "feats.npy"), "--model", "random")
    assert result.exit_code == 2
    assert bad in result.output
    assert list(out_dir.iterdir()) == []  # no feats.npy, no index, no temporaries


def test_help_documents_frame_timing():
    result = runner.invoke(app, ["extract", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.replace("│", " ").split())
    assert "frame t starts at sample 160*t (t*10 ms) and covers 10 ms;" in text
    assert "an utterance of N samples gives (N+1)//160 frames" in text


def test_console_script(tmp_path, audio_dir):
    script = Path(sys.executable).parent / "cpcspeech"
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    out = tmp_path / "feats.npy"
    proc = subprocess.run(
        [str(script), "extract", str(audio_dir / "a.wav"), "--out", str(out), "--model", "random"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "weights: random init (seed 0)" in proc.stdout
    assert np.load(out).shape == ((19200 + 1) // 160, 256)


# ----- library-level behaviour -----


def test_find_sources_order_duplicates_and_empty(tmp_path, audio_dir):
    items = find_sources([str(audio_dir)])
    assert [i.key for i in items] == ["a", "c", "sub/b"]
    assert all(i.path.is_absolute() for i in items)
    with pytest.raises(CPCSpeechError, match="listed twice"):
        find_sources([str(audio_dir), str(audio_dir / "a.wav")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CPCSpeechError, match="found none"):
        find_sources([str(tmp_path / "empty")])
    with pytest.raises(CPCSpeechError, match="found nothing"):
        find_sources([str(tmp_path / "nowhere")])


def test_bad_out_and_key_collision(tmp_path, audio_dir):
    model = random_model()
    with pytest.raises(CPCSpeechError, match=r"ending in \.npy"):
        extract_features(model, [str(audio_dir)], tmp_path / "feats.bin")
    noise(audio_dir / "a.flac", 16000, 0.5)
    with pytest.raises(CPCSpeechError, match=r"a\.npy"):
        extract_features(model, [str(audio_dir)], str(tmp_path / "mirror") + "/")


def test_stacked_npy_grows_and_shrinks_in_place(tmp_path):
    path = tmp_path / "grow.npy"
    path.touch()
    writer = StackedNpy(path, capacity=3, dim=4)
    blocks = [np.full((2, 4), i, np.float32) for i in range(4)]
    for block in blocks:  # 8 rows into a 3-row array: grows twice
        writer.append(block)
    writer.close()
    np.testing.assert_array_equal(np.load(path), np.concatenate(blocks))
    writer = StackedNpy(path, capacity=10, dim=4)
    writer.append(blocks[1])
    writer.close()
    np.testing.assert_array_equal(np.load(path), blocks[1])


def test_chunking_does_not_change_features(tmp_path, audio_dir):
    model = random_model()
    wav = [str(audio_dir / "a.wav")]
    a = extract_features(model, wav, tmp_path / "one.npy", chunk_seconds=20)
    b = extract_features(model, wav, tmp_path / "many.npy", chunk_seconds=0.3)
    assert a.total_frames == b.total_frames
    np.testing.assert_allclose(
        np.load(tmp_path / "one.npy"), np.load(tmp_path / "many.npy"), atol=1e-6
    )


# ----- real speech (skipped without ../shared) -----


def run_real(tmp_path: Path, num_lines: int | None) -> None:
    if not DATA.is_dir():
        pytest.skip(f"shared data folder not found: {DATA}")
    lines = (DATA / "wav.scp").read_text().splitlines()
    lines = lines[:num_lines] if num_lines is not None else lines
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"{u} {DATA / p}\n" for u, p in (ln.split(maxsplit=1) for ln in lines)))
    out = tmp_path / "feats.npy"
    result = invoke(str(scp), "--out", str(out), "--model", "random", "--layer", "z")
    assert result.exit_code == 0, result.output
    rows = read_index(tmp_path / "feats.index.tsv")
    assert [r["id"] for r in rows] == [ln.split()[0] for ln in lines]
    cursor = 0
    for row in rows:
        info = sf.info(row["path"])
        assert info.samplerate == 16000
        assert int(row["num_frames"]) == (info.frames + 1) // 160
        assert int(row["first_row"]) == cursor
        cursor += int(row["num_frames"])
    assert np.load(out, mmap_mode="r").shape == (cursor, 512)


def test_real_speech_subset(tmp_path):
    run_real(tmp_path, num_lines=8)


@pytest.mark.slow
def test_real_speech_full_folder(tmp_path):
    run_real(tmp_path, num_lines=None)


def test_sigterm_leaves_no_output(tmp_path):
    """A run stopped by SIGTERM (kill, timeout, a scheduler) removes its temporary outputs."""
    import signal
    import time

    src = tmp_path / "long"
    src.mkdir()
    for i in range(12):
        noise(src / f"f{i:02d}.wav", 16000, 20.0, seed=i)
    out = tmp_path / "feats.npy"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cpcspeech", "extract", str(src), "--out", str(out)]
        + ["--model", "random", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".feats.npy*")) and time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"extract finished before it could be stopped: {proc.communicate()}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long"]


def test_bf16_precision_is_close_to_fp32(tmp_path, audio_dir):
    fp32, bf16 = tmp_path / "fp32.npy", tmp_path / "bf16.npy"
    for out, precision in ((fp32, "fp32"), (bf16, "bf16")):
        args = [str(audio_dir), "--out", str(out), "--model", "random", "--precision", precision]
        result = invoke(*args)
        assert result.exit_code == 0, result.output
    a, b = np.load(fp32), np.load(bf16)
    assert a.shape == b.shape and b.dtype == np.float32
    rel = np.abs(a - b).max() / np.abs(a).max()
    assert rel < 2e-2, rel
    result = invoke(
        str(audio_dir), "--out", str(tmp_path / "x.npy"), "--model", "random", "--precision", "bf8"
    )
    assert result.exit_code == 2 and "bf8" in result.output


def test_read_ahead_keeps_order_errors_and_stops_early(tmp_path, audio_dir):
    paths = [audio_dir / "a.wav", None, tmp_path / "missing.wav", audio_dir / "c.ogg"]
    found = list(read_ahead(paths, lambda path: load_audio(path, 16000, 159), depth=1))
    np.testing.assert_array_equal(found[0], load_audio(paths[0]))
    assert found[1] is None
    assert isinstance(found[2], AudioError) and "missing.wav" in str(found[2])
    np.testing.assert_array_equal(found[3], load_audio(paths[3]))
    reader = read_ahead([audio_dir / "a.wav"] * 50, load_audio, depth=2)
    next(reader)
    reader.close()  # joins the reader thread, which is blocked on the full queue
    assert not [t for t in threading.enumerate() if t.name == "cpcspeech-reader"]


def test_stacked_npy_writes_no_memmap_and_checks_width(tmp_path):
    writer = StackedNpy(tmp_path / "w.npy", capacity=0, dim=3)
    with pytest.raises(ValueError, match=r"\(T, 3\)"):
        writer.append(np.zeros((2, 4), np.float32))
    writer.append(np.ones((5, 3), np.float64))  # converted to float32 on write
    writer.close()
    assert np.load(tmp_path / "w.npy").dtype == np.float32
    assert np.load(tmp_path / "w.npy").shape == (5, 3)


def test_batched_extraction_equals_one_at_a_time(tmp_path, audio_dir):
    one = tmp_path / "one.npy"
    batched = tmp_path / "batched.npy"
    base = [str(audio_dir), "--model", "random", "--layer", "c"]
    assert invoke(*base, "--out", str(one)).exit_code == 0
    result = invoke(*base, "--out", str(batched), "--batch-seconds", "2.5")
    assert result.exit_code == 0, result.output
    assert read_index(tmp_path / "one.index.tsv") == read_index(tmp_path / "batched.index.tsv")
    np.testing.assert_allclose(np.load(batched), np.load(one), rtol=0, atol=1e-4)
    result = invoke(*base, "--out", str(batched), "--batch-seconds", "-1")
    assert result.exit_code == 2 and "--batch-seconds" in result.output


# ----- writers -----


def test_parse_output_touches_no_path_and_picks_one_writer_per_format(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert isinstance(parse_output("new/feats.npy"), StackedNpyWriter)
    assert isinstance(parse_output("new/dir/"), NpyFolderWriter)
    sharded = parse_output("new/feats.npy", Shard(1, 3))
    assert sharded.out == Path("new/feats.shard-1-of-3.npy")
    assert sharded.index == Path("new/feats.shard-1-of-3.index.tsv")
    with pytest.raises(CPCSpeechError, match=r"ending in \.npy"):
        parse_output("new/feats.bin")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out", ["feats.npy", "dir/"])
def test_writer_abort_leaves_nothing_half_written(tmp_path, audio_dir, out):
    writer = parse_output(f"{tmp_path}/o/{out}")
    sources = find_sources([audio_dir])
    writer.check(sources, dim=3)
    results = [FileResult(s, 0, 2, 0.1, "ok") for s in sources]
    writer.write(results[0], np.ones((2, 3), np.float32))
    writer.write(results[1], None)
    writer.abort()
    left = [p for p in (tmp_path / "o").rglob("*") if p.is_file()]
    # a folder output keeps the files already finished (whole); nothing else is left
    assert left == ([] if out == "feats.npy" else [tmp_path / "o" / "dir" / "a.npy"])
    writer = parse_output(tmp_path / "p" / "feats.npy")
    writer.check(sources, dim=3)
    writer.write(results[0], np.ones((2, 3), np.float32))
    writer.write(results[1], None)
    writer.commit(results[:2])
    assert np.load(tmp_path / "p" / "feats.npy").shape == (2, 3)
    rows = read_index(tmp_path / "p" / "feats.index.tsv")
    assert [(r["first_row"], r["id"]) for r in rows] == [("0", "a"), ("2", "c")]
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["feats.index.tsv", "feats.npy"]


def test_inputs_are_found_before_the_weights_load(tmp_path):
    """An empty folder is reported as such even when the weights named would not load: discovery
    runs first, so a typo in the inputs costs no model load."""
    (tmp_path / "empty").mkdir()
    result = invoke(str(tmp_path / "empty"), "--model", str(tmp_path / "no-model"),
                    "--out", str(tmp_path / "f.npy"))  # fmt: skip
    assert result.exit_code == 2
    assert "found none" in result.output and "no-model" not in result.output
    assert "weights:" not in result.output


def test_a_missing_file_is_reported_before_the_weights_load(tmp_path):
    """Without --skip-errors a missing input fails before the model loads (the model named here
    would not load); with it, the file is listed as skipped as before."""
    missing = str(tmp_path / "nope.wav")
    result = invoke(
        missing, "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "f.npy")
    )
    assert result.exit_code == 2
    assert "nope.wav: file not found" in result.output and "no-model" not in result.output
    result = invoke(missing, "--skip-errors", "--model", "random", "--out", str(tmp_path / "g.npy"))
    assert result.exit_code == 1 and "skipped: file not found" in result.output
