"""Fuzzing load_audio: random bytes and mutated headers of real WAV and FLAC files either load or
raise AudioError, never anything else, each within a time bound."""

import time
from pathlib import Path

import numpy as np
import pytest
from paths import EXAMPLE_AUDIO

from cpcspeech.errors import AudioError
from cpcspeech.io.audio import audio_info, load_audio

EXAMPLES = EXAMPLE_AUDIO
SEED = 11
SECONDS_PER_CASE = 2.0  # a generous bound: each case takes milliseconds on an idle machine


def _mutations(rng: np.random.Generator, real: bytes, count: int) -> list[bytes]:
    """Header mutations of one real file: flipped bytes, extreme 32-bit fields, cuts."""
    out = []
    extremes = [0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 8000, 44100]
    for i in range(count):
        data = bytearray(real)
        kind = i % 4
        if kind == 0:  # flip 1-8 random bytes in the first 64
            for pos in rng.integers(0, 64, int(rng.integers(1, 9))):
                data[pos] ^= int(rng.integers(1, 256))
        elif kind == 1:  # an extreme value in a 32-bit field of the header
            pos = int(rng.integers(0, 60))
            value = extremes[int(rng.integers(0, len(extremes)))]
            data[pos : pos + 4] = int(value).to_bytes(4, "little")
        elif kind == 2:  # cut anywhere
            data = data[: int(rng.integers(0, len(data)))]
        else:  # both: flipped header bytes and a cut
            data[int(rng.integers(0, 44))] ^= 0xFF
            data = data[: int(rng.integers(len(data) // 4, len(data)))]
        out.append(bytes(data))
    return out


def _cases() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(SEED)
    cases = []
    for i in range(80):  # random byte strings, some starting with a real magic number
        body = rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
        magic = [b"", b"RIFF", b"fLaC", b"OggS", b"RIFF\x00\x00\x00\x00WAVEfmt "][i % 5]
        cases.append((f"random{i}.wav", magic + body))
    for name, count in (("weather.wav", 60), ("hello.flac", 60)):
        real = (EXAMPLES / name).read_bytes()
        suffix = Path(name).suffix
        for j, data in enumerate(_mutations(rng, real, count)):
            cases.append((f"mutated{j}{suffix}", data))
    return cases


def test_load_audio_loads_or_raises_audio_error(tmp_path):
    if not (EXAMPLES / "weather.wav").is_file() or not (EXAMPLES / "hello.flac").is_file():
        pytest.skip(f"example audio missing from {EXAMPLES}")
    cases = _cases()
    assert len(cases) == 200
    outcomes = {"loaded": 0, "AudioError": 0}
    for name, data in cases:
        path = tmp_path / name
        path.write_bytes(data)
        start = time.perf_counter()
        for reader in (audio_info, load_audio):
            try:
                result = reader(path)
            except AudioError as err:
                assert str(err).startswith(str(path)) and "\n" not in str(err), err
                outcomes["AudioError"] += 1
            except Exception as err:  # pragma: no cover - the failure this test exists to catch
                pytest.fail(f"{name}: {reader.__name__} raised {type(err).__name__}: {err}")
            else:
                outcomes["loaded"] += 1
                if reader is load_audio:
                    assert result.dtype == np.float32 and result.ndim == 1
                    assert np.isfinite(result).all()
        elapsed = time.perf_counter() - start
        assert elapsed < SECONDS_PER_CASE, f"{name}: {elapsed:.1f} s"
        path.unlink()
    assert outcomes["loaded"] > 0 and outcomes["AudioError"] > 0, outcomes
