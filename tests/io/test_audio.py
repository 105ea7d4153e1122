"""load_audio on real files: formats, rates, channels, subtypes, and every bad-input error."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cpcspeech.errors import AudioError
from cpcspeech.io.audio import (
    AUDIO_EXTENSIONS,
    MIN_SAMPLES,
    audio_duration,
    audio_info,
    load_audio,
    resampled_length,
)
from cpcspeech.model.cpc import CPCModel

FREQ = 440.0


def write_sine(path: Path, rate: int, seconds: float, channels: int = 1, **kwargs) -> int:
    """Write a 440 Hz sine (left channel; others silent) and return its frame count."""
    n = int(round(rate * seconds))
    t = np.arange(n) / rate
    data = np.zeros((n, channels), dtype=np.float64)
    data[:, 0] = 0.5 * np.sin(2 * np.pi * FREQ * t)
    sf.write(str(path), data if channels > 1 else data[:, 0], rate, **kwargs)
    return n


def peak_frequency(wav: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.fft.rfftfreq(len(wav), 1 / rate)[np.argmax(spectrum)])


CASES = [
    # (extension, format, subtype, channels)
    ("wav", "WAV", "PCM_16", 1),
    ("flac", "FLAC", "PCM_24", 1),
    ("ogg", "OGG", "VORBIS", 1),
    ("wav", "WAV", "PCM_24", 2),
    ("wav", "WAV", "PCM_32", 1),
    ("wav", "WAV", "FLOAT", 2),
    ("flac", "FLAC", "PCM_16", 2),
]


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize(("ext", "fmt", "subtype", "channels"), CASES)
def test_load_audio_formats(tmp_path, rate, ext, fmt, subtype, channels):
    path = tmp_path / f"tone_{rate}.{ext}"
    n = write_sine(path, rate, 0.5, channels, format=fmt, subtype=subtype)
    wav = load_audio(path)
    assert wav.dtype == np.float32
    assert wav.ndim == 1
    assert len(wav) == resampled_length(n, rate)
    assert abs(len(wav) - 0.5 * 16000) <= 1
    # The header probe predicts the decoded length exactly; extract sizes its output from it.
    info = audio_info(path)
    assert info.num_samples == len(wav)
    assert info.channels == channels
    assert audio_duration(path) == pytest.approx(0.5, abs=1 / rate)
    assert abs(peak_frequency(wav) - FREQ) < 3.0
    # Mono mix is the mean: a 0.5 sine on one of two channels becomes 0.25.
    expected_peak = 0.5 / channels
    assert np.abs(wav[400:-400]).max() == pytest.approx(expected_peak, rel=0.1)


def test_resampled_length_matches_soxr():
    import soxr

    for rate in (8000, 11025, 22050, 32000, 44100, 48000):
        for n in (1, 2, 3, 157, 441, 44101, 48001):
            out = soxr.resample(np.zeros(n, np.float32), rate, 16000, quality="HQ")
            assert len(out) == resampled_length(n, rate), (rate, n)


def test_min_samples_matches_model():
    assert MIN_SAMPLES == CPCModel().min_samples


def test_extensions_are_lower_case_and_readable():
    assert {".wav", ".flac", ".ogg", ".mp3"} <= AUDIO_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in AUDIO_EXTENSIONS)


def test_exact_minimum_length_loads(tmp_path):
    path = tmp_path / "short_ok.wav"
    sf.write(str(path), np.zeros(MIN_SAMPLES, np.float32), 16000)
    assert len(load_audio(path)) == MIN_SAMPLES


# ----- bad inputs: each raises AudioError naming the file -----


def make_bad(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "missing.wav"
    if kind == "text":
        path = tmp_path / "notes_as.wav"
        path.write_text("this is not audio\n" * 20)
        return path
    if kind == "zero_bytes":
        path = tmp_path / "zero_bytes.wav"
        path.write_bytes(b"")
        return path
    if kind == "zero_frames":
        path = tmp_path / "zero_frames.wav"
        sf.write(str(path), np.zeros(0, np.float32), 16000)
        return path
    if kind == "too_short":
        path = tmp_path / "too_short.wav"
        sf.write(str(path), np.zeros(100, np.float32), 16000)
        return path
    if kind == "too_short_8k":  # 70 samples at 8 kHz -> 140 at 16 kHz < 159
        path = tmp_path / "too_short_8k.flac"
        sf.write(str(path), np.zeros(70, np.float32), 8000)
        return path
    if kind in ("nan", "inf"):
        path = tmp_path / f"has_{kind}.wav"
        data = np.zeros(3200, np.float32)
        data[1000] = np.nan if kind == "nan" else np.inf
        sf.write(str(path), data, 16000, subtype="FLOAT")
        return path
    raise ValueError(kind)


BAD = {
    "missing": "not found",
    "text": "not a readable audio file",
    "zero_bytes": "0 bytes",
    "zero_frames": "0 frames",
    "too_short": "too short: 100 samples at 16000 Hz, need at least 159",
    "too_short_8k": "too short: 140 samples at 16000 Hz, need at least 159",
    "nan": "NaN/inf",
    "inf": "NaN/inf",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_raises_audio_error(tmp_path, kind):
    path = make_bad(tmp_path, kind)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert path.name in str(info.value)
    assert BAD[kind] in info.value.reason
    assert info.value.path == str(path)


@pytest.mark.parametrize("kind", ["missing", "text", "zero_bytes", "zero_frames", "too_short"])
def test_header_probe_catches_bad_input(tmp_path, kind):
    path = make_bad(tmp_path, kind)
    with pytest.raises(AudioError, match=path.name):
        audio_info(path)


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="found a directory"):
        load_audio(tmp_path)
