"""Audio loading: any file soundfile reads -> float32 mono at 16 kHz, with clear errors.

Resampling uses soxr ("HQ"); its output length for n input samples is floor(n * 16000 / sr + 1/2).
"""

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from cpcspeech.errors import AudioError

SAMPLE_RATE = 16000
MIN_SAMPLES = 159
"""CPCModel().min_samples: the fewest 16 kHz samples that give one frame."""

RESAMPLE_QUALITY = "HQ"

AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".aiff",
        ".aif",
        ".aifc",
        ".au",
        ".snd",
        ".w64",
        ".caf",
        ".rf64",
    }
)
"""Lower-case file extensions that libsndfile (through soundfile) reads."""


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says, and the length it will have once loaded at ``sample_rate``."""

    path: str
    source_rate: int
    source_samples: int
    channels: int
    num_samples: int  # at the target sample rate, exactly as load_audio returns it

    @property
    def seconds(self) -> float:
        return self.source_samples / self.source_rate


def resampled_length(num_samples: int, source_rate: int, target_rate: int = SAMPLE_RATE) -> int:
    """Length soxr gives after resampling n samples: floor(n * target_rate / source_rate + 1/2)."""
    if source_rate == target_rate:
        return int(num_samples)
    return (2 * int(num_samples) * target_rate + source_rate) // (2 * source_rate)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "expected an audio file, found a directory")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes), expected audio")


def _open_error(path: object, err: Exception) -> AudioError:
    return AudioError(path, f"not a readable audio file ({err})")


def _check_length(
    path: object, num_samples: int, source_samples: int, sample_rate: int, min_samples: int
) -> None:
    if source_samples == 0:
        raise AudioError(path, "no audio: the file holds 0 frames")
    if num_samples < min_samples:
        raise AudioError(
            path,
            f"too short: {num_samples} samples at {sample_rate} Hz, need at least "
            f"{min_samples} for one frame",
        )


def audio_info(
    path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, min_samples: int = MIN_SAMPLES
) -> AudioInfo:
    """Read only the header; raise AudioError for every problem load_audio would find without
    decoding (missing, not audio, empty, too short)."""
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise _open_error(path, err) from err
    num_samples = resampled_length(info.frames, info.samplerate, sample_rate)
    _check_length(path, num_samples, info.frames, sample_rate, min_samples)
    return AudioInfo(str(path), info.samplerate, info.frames, info.channels, num_samples)


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the file header (no decoding)."""
    return audio_info(path, min_samples=0).seconds


def load_audio(
    path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, min_samples: int = MIN_SAMPLES
) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate``.

    Channels are mixed by their mean; integer subtypes are scaled to [-1, 1).

    Returns:
        wav: (N,) float32, N = floor(frames * sample_rate / file_rate + 1/2).

    Raises:
        AudioError: missing, not audio, empty, fewer than ``min_samples`` samples after
            resampling, or NaN/inf samples.
    """
    path = Path(path)
    _check_file(path)
    try:
        data, source_rate = sf.read(str(path), dtype="float32", always_2d=True)  # (N, channels)
    except Exception as err:
        raise _open_error(path, err) from err
    return to_mono(path, data, source_rate, sample_rate, min_samples)


def decode_audio(
    encoded: bytes, label: str, sample_rate: int = SAMPLE_RATE, min_samples: int = MIN_SAMPLES
) -> np.ndarray:
    """Decode audio file bytes (e.g. a command's output) exactly as :func:`load_audio` reads files.

    Args:
        encoded: the bytes of a WAV/FLAC/OGG/... file.
        label: what error messages name as the source (a command line, a path).

    Returns:
        wav: (N,) float32 mono at ``sample_rate``.
    """
    if not encoded:
        raise AudioError(label, "no bytes to decode (empty output), expected audio")
    try:
        data, source_rate = sf.read(io.BytesIO(encoded), dtype="float32", always_2d=True)
    except Exception as err:
        raise _open_error(label, err) from err
    return to_mono(label, data, source_rate, sample_rate, min_samples)


def to_mono(
    path: object, data: np.ndarray, source_rate: int, sample_rate: int, min_samples: int
) -> np.ndarray:
    """Decoded samples to model input: channels mixed by their mean, resampled with soxr, checked.

    Args:
        path: what error messages name as the source.
        data: (N, channels) float32 at ``source_rate``.

    Returns:
        wav: (N',) float32 mono at ``sample_rate``, N' = floor(N * sample_rate / source_rate + 1/2).
    """
    if data.shape[0] == 0:
        raise AudioError(path, "no audio: the file holds 0 frames")
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        first = int(np.argmin(finite.all(axis=1)))
        raise AudioError(
            path,
            f"expected finite samples, found {bad} NaN/inf value(s) (first at frame {first})",
        )
    wav = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if source_rate != sample_rate:
        wav = soxr.resample(wav, source_rate, sample_rate, quality=RESAMPLE_QUALITY)
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    _check_length(path, wav.shape[0], data.shape[0], sample_rate, min_samples)
    return wav
