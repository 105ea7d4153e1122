"""Bounded memory for every audio input (issue 20, class 2): one rate and length check
(cpcspeech.io.audio.check_audio_size) for files, piped commands, segments and lhotse items, and
a cap on what a command may write ($CPCSPEECH_MAX_AUDIO_SECONDS), read in blocks.

The unbounded cases run in a subprocess under a 3 GB address-space limit (RLIMIT_AS).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from cpcspeech.cli import app
from cpcspeech.errors import AudioError, ConfigError
from cpcspeech.io.audio import (
    DEFAULT_MAX_AUDIO_SECONDS,
    MAX_AUDIO_SECONDS_ENV,
    check_audio_size,
    load_audio,
    max_audio_seconds,
    max_command_bytes,
)
from cpcspeech.io.sources import find_sources

REPO = Path(__file__).resolve().parents[2]
LIMIT = 3 << 30


@pytest.fixture(autouse=True)
def _default_cap(monkeypatch):
    monkeypatch.delenv(MAX_AUDIO_SECONDS_ENV, raising=False)


@pytest.fixture
def wav(tmp_path) -> Path:
    path = tmp_path / "a.wav"
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, 32000), 16000)  # 2 s
    return path


def _extract(*args: str, env: dict | None = None):
    argv = ["extract", *args, "--model", "random", "--quiet", "--allow-commands"]
    return CliRunner().invoke(app, argv, env={"COLUMNS": "300", **(env or {})})


def _one_error(result, *words: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip() and not x.startswith("weights:")]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# ----- the setting and the one check -----


def test_the_cap_setting(monkeypatch):
    assert max_audio_seconds() == DEFAULT_MAX_AUDIO_SECONDS == 4 * 3600
    assert max_command_bytes() == 4 * 3600 * 16000 * 4
    monkeypatch.setenv(MAX_AUDIO_SECONDS_ENV, "60")
    assert max_audio_seconds() == 60
    for bad in ("-1", "0", "nan", "inf", "lots"):
        monkeypatch.setenv(MAX_AUDIO_SECONDS_ENV, bad)
        with pytest.raises(ConfigError, match=MAX_AUDIO_SECONDS_ENV):
            max_audio_seconds()


@pytest.mark.parametrize(
    ("rate", "samples", "message"),
    [(1, 10, "sample rate 1 Hz"), (0, 0, "sample rate 0 Hz"), (float("nan"), 1, "sample rate"),
     (16000, -16000, "expected 0 to"), (16000, 16000 * 10**8, "CPCSPEECH_MAX_AUDIO_SECONDS")],
)  # fmt: skip
def test_check_audio_size(rate, samples, message):
    with pytest.raises(AudioError, match=message):
        check_audio_size("x", rate, samples)
    check_audio_size("x", 16000, 16000 * 3600)


def test_a_file_longer_than_the_cap(tmp_path, wav, monkeypatch):
    monkeypatch.setenv(MAX_AUDIO_SECONDS_ENV, "1")
    with pytest.raises(AudioError, match="expected 0 to 1 s"):
        load_audio(wav)
    result = _extract(str(wav), "--out", str(tmp_path / "f.npy"), env={MAX_AUDIO_SECONDS_ENV: "1"})
    _one_error(result, MAX_AUDIO_SECONDS_ENV)


# ----- piped commands -----


def test_a_command_over_the_cap_is_stopped(tmp_path, wav):
    scp = tmp_path / "wav.scp"
    scp.write_text(f"u1 cat {wav} |\n", encoding="utf-8")
    result = _extract(str(scp), "--out", str(tmp_path / "f.npy"), env={MAX_AUDIO_SECONDS_ENV: "1"})
    _one_error(result, "wrote more than 64000 bytes", "stopped")
    assert _extract(str(scp), "--out", str(tmp_path / "f.npy")).exit_code == 0


def test_cat_dev_zero_stops_at_the_default_cap_under_a_memory_limit(tmp_path):
    scp = tmp_path / "wav.scp"
    scp.write_text("u1 cat /dev/zero |\n", encoding="utf-8")
    code = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, {LIMIT}))\n"
        "from cpcspeech.cli import app\n"
        f"app(['extract', {str(scp)!r}, '--out', {str(tmp_path / 'f.npy')!r}, '--model', "
        "'random', '--quiet', '--allow-commands'], prog_name='cpcspeech')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop(MAX_AUDIO_SECONDS_ENV, None)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "MemoryError" not in result.stderr and "Traceback" not in result.stderr
    errors = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(errors) == 1 and f"wrote more than {max_command_bytes()} bytes" in errors[0]
    assert not (tmp_path / "f.npy").exists()


# ----- lhotse manifests -----


def _manifest(tmp_path: Path, wav: Path, **fields) -> Path:
    pytest.importorskip("lhotse")
    record = {
        "id": "r1",
        "sources": [{"type": "file", "channels": [0], "source": str(wav)}],
        "sampling_rate": 16000,
        "num_samples": 32000,
        "duration": 2.0,
        "channel_ids": [0],
    }
    record.update(fields)
    path = tmp_path / "recordings.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    return path  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"sampling_rate": 1, "num_samples": 32000, "duration": 32000.0}, "sample rate 1 Hz"),
     ({"sampling_rate": 0, "num_samples": 0}, "sample rate 0 Hz"),
     ({"num_samples": 16 * 10**15, "duration": 1e12}, MAX_AUDIO_SECONDS_ENV),
     ({"num_samples": -16000, "duration": -1.0}, "expected 0 to")],
)  # fmt: skip
def test_lhotse_rates_and_lengths_are_checked_at_discovery(tmp_path, wav, fields, message):
    manifest = _manifest(tmp_path, wav, **fields)
    with pytest.raises(AudioError, match=message):
        find_sources(manifest)
    _one_error(_extract(str(manifest), "--out", str(tmp_path / "f.npy")), f"{manifest}:1")


def test_a_1_hz_wav_header_is_refused_directly_and_through_lhotse(tmp_path):
    path = tmp_path / "slow.wav"
    sf.write(path, np.zeros(300000, np.float32), 1000)
    data = bytearray(path.read_bytes())
    data[24:28] = (1).to_bytes(4, "little")  # the fmt chunk's sample rate: 1 Hz
    path.write_bytes(bytes(data))
    with pytest.raises(AudioError, match="sample rate 1 Hz"):
        load_audio(path)
    lhotse = pytest.importorskip("lhotse")
    recording = lhotse.Recording.from_file(path)
    assert recording.sampling_rate == 1
    manifest = tmp_path / "slow.jsonl"
    lhotse.RecordingSet.from_recordings([recording]).to_file(manifest)
    _one_error(_extract(str(manifest), "--out", str(tmp_path / "f.npy")), "sample rate 1 Hz")


# ----- segments -----


@pytest.mark.parametrize(
    ("line", "message"),
    [("s1 r1 0 1e12", "END <="), ("s1 r1 inf -1", "found inf"), ("s1 r1 0 inf", "found 0 inf"),
     ("s1 r1 1e300 -1", "START < END")],
)  # fmt: skip
def test_absurd_segment_times_are_one_line_errors(tmp_path, wav, line, message):
    pytest.importorskip("kaldiio")
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"r1 {wav}\n", encoding="utf-8")
    (data / "segments").write_text(line + "\n", encoding="utf-8")
    _one_error(_extract(str(data), "--out", str(tmp_path / "f.npy")), "segments:1", message)
