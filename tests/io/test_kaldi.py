"""Kaldi through the real kaldiio: ark,scp output (round trip, atomic failure), piped wav.scp
entries, and data directories with ``segments`` (each recording decoded once)."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from paths import SHARED_DATA
from samples import noise
from typer.testing import CliRunner

from cpcspeech.cli import app
from cpcspeech.io.audio import load_audio
from cpcspeech.io.sources import find_sources
from cpcspeech.model.cpc import CPCModel

kaldiio = pytest.importorskip("kaldiio", reason="kaldiio not installed (pip install '.[kaldi]')")

DATA = SHARED_DATA
runner = CliRunner()


class Result:
    def __init__(self, result) -> None:
        self.exit_code = result.exit_code
        self.output = " ".join(result.output.split())  # rich wraps long lines


def invoke(*args: str) -> Result:
    args = ["extract", *args, "--model", "random", "--quiet", "--allow-commands"]
    return Result(runner.invoke(app, args, env={"COLUMNS": "200"}))


def random_model(seed: int = 0) -> CPCModel:
    torch.manual_seed(seed)
    return CPCModel().eval()


def extract(model: CPCModel, wav: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.extract(torch.from_numpy(wav)).numpy()  # (T, 256)


@pytest.fixture
def audio_dir(tmp_path) -> Path:
    root = tmp_path / "audio"
    root.mkdir()
    noise(root / "a.wav", 16000, 1.3, seed=1)
    noise(root / "b.flac", 44100, 0.9, seed=2)
    noise(root / "c.wav", 16000, 2.5, seed=3)
    return root


def test_ark_scp_round_trip_equals_directory_output(tmp_path, audio_dir, monkeypatch):
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"utt_{p.stem} {p}\n" for p in sorted(audio_dir.iterdir())))
    result = invoke(str(scp), "--out", str(tmp_path / "npy") + "/")
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path)  # a relative wspecifier: the scp names the ark as given
    result = invoke(str(scp), "--out", "ark,scp:out/feats.ark,out/feats.scp")
    assert result.exit_code == 0, result.output
    assert "wrote out/feats.ark" in result.output and "index out/feats.scp" in result.output
    lines = (tmp_path / "out" / "feats.scp").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["utt_a", "utt_b", "utt_c"]
    assert all(ln.split()[1].startswith("out/feats.ark:") for ln in lines)
    loaded = kaldiio.load_scp("out/feats.scp")
    for utt in ("utt_a", "utt_b", "utt_c"):
        expected = np.load(tmp_path / "npy" / f"{utt}.npy")
        assert loaded[utt].dtype == np.float32
        np.testing.assert_array_equal(loaded[utt], expected)  # bit-exact
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["feats.ark", "feats.scp"]


def test_ark_failure_midway_leaves_nothing(tmp_path, audio_dir):
    bad = np.zeros(8000, np.float32)
    bad[100] = np.nan  # passes the header check, fails while decoding: after utt_a is written
    sf.write(str(audio_dir / "b_nan.wav"), bad, 16000, subtype="FLOAT")
    scp = tmp_path / "wav.scp"
    scp.write_text(f"utt_a {audio_dir / 'a.wav'}\nutt_bad {audio_dir / 'b_nan.wav'}\n")
    out = tmp_path / "out"
    result = invoke(str(scp), "--out", f"ark,scp:{out}/feats.ark,{out}/feats.scp")
    assert result.exit_code == 2
    assert "b_nan.wav" in result.output and "finite" in result.output
    assert list(out.iterdir()) == []  # no ark, no scp, no temporaries
    # With --skip-errors the good file is written and the bad one left out of the archive.
    result = invoke(str(scp), "--out", f"ark,scp:{out}/feats.ark,{out}/feats.scp", "--skip-errors")
    assert result.exit_code == 1
    assert list(kaldiio.load_scp(str(out / "feats.scp"))) == ["utt_a"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ark:feats.ark", "found options ark only"),
        ("ark,t,scp:feats.ark,feats.scp", "found options ['t']"),
        ("ark,scp:| gzip -c > feats.ark.gz,feats.scp", "as file paths"),
        ("ark,scp:feats.ark", "kaldiio says"),
    ],
)
def test_bad_wspecifiers_are_refused(tmp_path, audio_dir, spec, message):
    result = invoke(str(audio_dir), "--out", spec)
    assert result.exit_code == 2
    assert message in result.output and "ark,scp:FEATS.ark,FEATS.scp" in result.output


def test_piped_wav_scp_entries_run_through_kaldiio(tmp_path, audio_dir):
    scp = tmp_path / "wav.scp"
    scp.write_text(
        f"u_a cat {audio_dir / 'a.wav'} |\n"
        f"u_b cat '{audio_dir / 'b.flac'}' |\n"  # FLAC at 44.1 kHz, decoded from the pipe
        f"u_c {audio_dir / 'c.wav'}\n"
    )
    out = tmp_path / "out"
    result = invoke(str(scp), "--out", str(out) + "/")
    assert result.exit_code == 0, result.output
    model = random_model()
    for utt, name in (("u_a", "a.wav"), ("u_b", "b.flac"), ("u_c", "c.wav")):
        expected = extract(model, load_audio(audio_dir / name))
        np.testing.assert_array_equal(np.load(out / f"{utt}.npy"), expected)
    result = invoke(str(scp), "--out", str(tmp_path / "feats.npy"))
    index = (tmp_path / "feats.index.tsv").read_text().splitlines()
    assert index[1].split("\t")[0] == f"cat {audio_dir / 'a.wav'} |"  # the command is the source
    assert float(index[1].split("\t")[3]) == pytest.approx(1.3, abs=1e-4)


@pytest.mark.parametrize(
    ("command", "message"),
    [("sh -c 'exit 3' |", "command failed with exit status 3"), ("echo hello |", "not a readable")],
)
def test_failing_or_non_audio_commands_are_errors(tmp_path, audio_dir, command, message):
    scp = tmp_path / "wav.scp"
    scp.write_text(f"u_a {audio_dir / 'a.wav'}\nu_x {command}\n")
    result = invoke(str(scp), "--out", str(tmp_path / "o" / "feats.npy"))
    assert result.exit_code == 2
    assert command in result.output and message in result.output
    assert list((tmp_path / "o").iterdir()) == []


def make_data_dir(tmp_path: Path, audio_dir: Path) -> Path:
    """rec_a: a file (1.3 s); rec_c: a command that logs each run (2.5 s). Five segments,
    interleaved across the two recordings, one to the end (-1), one overshooting by 0.2 s."""
    data = tmp_path / "data"
    data.mkdir()
    log = tmp_path / "reads.log"
    (data / "wav.scp").write_text(
        f"rec_a {audio_dir / 'a.wav'}\n"
        f"rec_c {{ echo rec_c >> {log}; cat {audio_dir / 'c.wav'}; }} |\n"
    )
    (data / "segments").write_text(
        "seg1 rec_a 0.00 0.50\n"
        "seg2 rec_c 0.10 1.20\n"
        "seg3 rec_a 0.45 1.10\n"
        "seg4 rec_c 1.90 -1\n"
        "seg5 rec_a 0.70 1.50\n"
    )
    return data


def test_segments_cut_like_kaldi_and_read_each_recording_once(tmp_path, audio_dir, monkeypatch):
    data = make_data_dir(tmp_path, audio_dir)
    decoded: list[str] = []
    real_read = sf.SoundFile.read

    def counting_read(self, *args, **kwargs):  # every decode reads frames through this
        name = self.name
        decoded.append(os.fsdecode(name) if isinstance(name, str | bytes) else "<bytes>")
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", counting_read)  # soundfile's decoder, not ours
    result = invoke(str(data), "--out", f"ark,scp:{tmp_path}/f.ark,{tmp_path}/f.scp")
    assert result.exit_code == 0, result.output
    # rec_a once, rec_c's output once (header-only probes read no frames)
    assert decoded == [str(audio_dir / "a.wav"), "<bytes>"], decoded
    assert (tmp_path / "reads.log").read_text() == "rec_c\n"  # the command ran once
    monkeypatch.setattr(sf.SoundFile, "read", real_read)

    feats = kaldiio.load_scp(str(tmp_path / "f.scp"))
    assert list(feats) == ["seg1", "seg2", "seg3", "seg4", "seg5"]
    model = random_model()
    wavs = {"rec_a": load_audio(audio_dir / "a.wav"), "rec_c": load_audio(audio_dir / "c.wav")}
    cuts = {
        "seg1": ("rec_a", 0, 8000),
        "seg2": ("rec_c", 1600, 19200),
        "seg3": ("rec_a", 7200, 17600),
        "seg4": ("rec_c", 30400, 40000),
        "seg5": ("rec_a", 11200, 20800),  # 1.50 s overshoots the 1.3 s recording: cut at its end
    }
    for seg, (rec, first, stop) in cuts.items():
        expected = extract(model, wavs[rec][first:stop])
        assert feats[seg].shape == ((min(stop, len(wavs[rec])) - first + 1) // 160, 256)
        np.testing.assert_array_equal(feats[seg], expected)


def test_segment_samples_match_kaldiio_segments_reader(tmp_path, audio_dir):
    """Our cut of a 16 kHz PCM recording is kaldiio's own ``load_scp(segments=...)`` cut."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"rec_c {audio_dir / 'c.wav'}\n")
    (data / "segments").write_text("s1 rec_c 0.0 0.77\ns2 rec_c 0.3333 1.9001\ns3 rec_c 2.01 -1\n")
    theirs = kaldiio.load_scp(str(data / "wav.scp"), segments=str(data / "segments"))
    for item in find_sources([data]):
        rate, samples = theirs[item.id]
        assert rate == 16000 and samples.dtype == np.int16
        ours = item.load(16000, 159)
        np.testing.assert_array_equal(ours, samples.astype(np.float32) / 32768)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("s1 rec_x 0 1", "recording 'rec_x' of segment 's1' expected in wav.scp"),
        ("s1 rec_c 1.0 0.5", "expected 0 <= START < END"),
        ("s1 rec_c 0 1 0", "5th channel field is not supported"),
        ("s1 rec_c zero 1", "expected START and END in seconds"),
    ],
)
def test_bad_segments_lines(tmp_path, audio_dir, line, message):
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"rec_c {audio_dir / 'c.wav'}\n")
    (data / "segments").write_text(f"s0 rec_c 0 1\n{line}\n")
    result = invoke(str(data), "--out", str(tmp_path / "f.npy"))
    assert result.exit_code == 2
    assert "segments:2" in result.output and message in result.output


def test_segment_past_the_end_is_skippable(tmp_path, audio_dir):
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"rec_a {audio_dir / 'a.wav'}\n")
    (data / "segments").write_text("s1 rec_a 0 0.5\ns2 rec_a 1.4 2.0\ns3 rec_a 0.5 2.5\n")
    result = invoke(str(data), "--out", str(tmp_path / "f.npy"), "--skip-errors")
    assert result.exit_code == 1
    assert "s2" in result.output and "starts at sample 22400" in result.output
    assert "s3" in result.output and "0.5 s past the recording's end" in result.output
    rows = (tmp_path / "f.index.tsv").read_text().splitlines()[1:]
    assert [r.split("\t")[4].split(":")[0] for r in rows] == ["ok", "skipped", "skipped"]


def test_real_data_dir_with_segments(tmp_path):
    if not DATA.is_dir():
        pytest.skip(f"shared data folder not found: {DATA}")
    lines = (DATA / "wav.scp").read_text().splitlines()[:2]
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text("".join(f"{u} {DATA / p}\n" for u, p in map(str.split, lines)))
    segments, expected = [], {}
    model = random_model()
    for utt, rel in map(str.split, lines):
        wav = load_audio(DATA / rel)
        half = len(wav) / 16000 / 2
        segments += [f"{utt}-A {utt} 0 {half:.2f}\n", f"{utt}-B {utt} {half:.2f} -1\n"]
        cut = int(float(f"{half:.2f}") * 16000)
        expected[f"{utt}-A"] = extract(model, wav[:cut])
        expected[f"{utt}-B"] = extract(model, wav[cut:])
    (data / "segments").write_text("".join(segments))
    result = invoke(str(data), "--out", f"ark,scp:{tmp_path}/f.ark,{tmp_path}/f.scp")
    assert result.exit_code == 0, result.output
    feats = kaldiio.load_scp(str(tmp_path / "f.scp"))
    assert list(feats) == list(expected)
    for seg, want in expected.items():
        np.testing.assert_array_equal(feats[seg], want)


def test_sigterm_midway_leaves_no_archive(tmp_path):
    """SIGTERM after the first matrices reached the temporary archive removes ark and scp."""
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "long"
    src.mkdir()
    for i in range(6):
        noise(src / f"f{i}.wav", 16000, 6.0, seed=i)
    spec = f"ark,scp:{tmp_path}/feats.ark,{tmp_path}/feats.scp"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cpcspeech", "extract", str(src), "--out", spec]
        + ["--model", "random", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def written() -> bool:
        return any(p.stat().st_size > 0 for p in tmp_path.glob(".feats.ark.*"))

    deadline = time.monotonic() + 120
    while not written() and time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"extract finished before it could be stopped: {proc.communicate()}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long"]


def test_ark_out_is_parsed_before_any_path_is_touched(tmp_path, audio_dir, monkeypatch):
    """Issue 19: the raw ``--out`` used to be checked as a folder, which created a folder named
    ``ark,scp:k/f.ark,k`` in the working directory."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = invoke(str(audio_dir / "a.wav"), "--out", "ark,t,scp:k/f.ark,k/f.scp")
    assert result.exit_code == 2 and "found options ['t']" in result.output
    assert list(work.iterdir()) == []  # a refused spec touches nothing
    result = invoke(str(audio_dir / "a.wav"), "--out", "ark,scp:k/f.ark,k/f.scp")
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == [
        "k",
        "k/f.ark",
        "k/f.scp",
    ]
    assert list(kaldiio.load_scp("k/f.scp")) == ["a"]
