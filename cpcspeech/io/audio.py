"""Audio loading: any file soundfile reads -> float32 mono at 16 kHz, with clear errors.

Resampling uses soxr ("HQ"); its output length for n input samples is floor(n * 16000 / sr + 1/2).
"""

import io
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from cpcspeech.errors import AudioError, ConfigError

SAMPLE_RATE = 16000
MIN_SAMPLES = 159
"""CPCModel().min_samples: the fewest 16 kHz samples that give one frame."""

RESAMPLE_QUALITY = "HQ"
MIN_SOURCE_RATE, MAX_SOURCE_RATE = 1000, 768000
"""Sample rates accepted in a file header; outside them a garbled header is far likelier than audio
(and 1 Hz would resample every frame to 16000 samples)."""
READ_BLOCK = 1 << 20  # frames per read when the header's frame count is not plausible

MAX_AUDIO_SECONDS_ENV = "CPCSPEECH_MAX_AUDIO_SECONDS"
DEFAULT_MAX_AUDIO_SECONDS = 4 * 3600.0
"""The longest audio any source may hold (a file, a piped command, a segment, a lhotse cut), in
seconds; ``$CPCSPEECH_MAX_AUDIO_SECONDS`` changes it. 4 h of 16 kHz float32 is 922 MB."""
COMMAND_BYTES_PER_SECOND = SAMPLE_RATE * 4
"""A piped command may write at most this many bytes per allowed second (16 kHz float32 mono)."""

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


def _check_wav_data_chunk(path: Path) -> None:
    """A RIFF/WAVE file whose data chunk promises more bytes than the file holds is truncated.

    libsndfile quietly reads what is there, so this reads the chunk list itself. A data size of
    0 or 0xFFFFFFFF (streaming writers that never came back to fill it in) is not checked.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return
        endian = "<" if head[:4] == b"RIFF" else ">"
        pos, block_align = 12, 0
        for _ in range(1000):  # a bound on the chunks walked, for garbled files
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return
            chunk_id, length = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
            if chunk_id == b"fmt ":
                fmt = f.read(16)
                if len(fmt) == 16:
                    block_align = struct.unpack(endian + "H", fmt[12:14])[0]
            elif chunk_id == b"data":
                available = size - pos - 8
                if length in (0, 0xFFFFFFFF) or length <= available:
                    return
                if block_align:
                    promised, holds = length // block_align, available // block_align
                    what = f"{promised} frames ({length} bytes), the file holds {holds}"
                else:
                    what = f"{length} bytes of audio, the file holds {available}"
                raise AudioError(path, f"truncated: the WAV header promises {what}")
            pos += 8 + length + (length & 1)


def max_audio_seconds() -> float:
    """The length cap of every audio source: ``$CPCSPEECH_MAX_AUDIO_SECONDS``, else 4 h."""
    text = os.environ.get(MAX_AUDIO_SECONDS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_AUDIO_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(
            f"{MAX_AUDIO_SECONDS_ENV}: expected a positive number of seconds, found {text!r}"
        )
    return value


def max_command_bytes() -> int:
    """The most bytes a piped command may write: the length cap at 16 kHz float32 mono."""
    return int(max_audio_seconds() * COMMAND_BYTES_PER_SECOND)


def check_audio_size(label: object, source_rate: float, source_samples: float) -> None:
    """The one rate and length check of every audio source, made on what a header or manifest
    says before anything is decoded, and again on what decoding gave.

    Args:
        label: what the error names (a file, a command, a segment, a manifest entry).
        source_rate: samples per second at the source, from 1000 to 768000 Hz.
        source_samples: its length in samples, from 0 to ``max_audio_seconds() * source_rate``.

    Raises:
        AudioError: a rate outside the range (a garbled header: 1 Hz would resample every
            frame to 16000 samples), a negative length or one over the cap.
    """
    if not MIN_SOURCE_RATE <= source_rate <= MAX_SOURCE_RATE:
        raise AudioError(
            label,
            f"sample rate {source_rate} Hz in the header, expected {MIN_SOURCE_RATE} to "
            f"{MAX_SOURCE_RATE} Hz (a garbled header?)",
        )
    limit = max_audio_seconds()
    if not 0 <= source_samples <= limit * source_rate:
        raise AudioError(
            label,
            f"{source_samples} samples at {source_rate} Hz ({source_samples / source_rate:.0f} "
            f"s), expected 0 to {limit:g} s ({MAX_AUDIO_SECONDS_ENV}; raise it for longer audio)",
        )


def _check_rate(path: object, rate: int) -> None:
    check_audio_size(path, rate, 0)


def _read_frames(f: sf.SoundFile, size: int, label: object) -> np.ndarray:
    """All frames of an open file as (N, channels) float32.

    soundfile sizes its output from the header's frame count, which a garbled header can set to
    billions; when the count is beyond what ``size`` bytes could plausibly decode to (1000 frames
    per byte, more than FLAC gives for silence), read in blocks so memory follows the data.
    """
    if f.frames * f.channels <= 1000 * size:
        check_audio_size(label, f.samplerate, f.frames)
        return f.read(dtype="float32", always_2d=True)
    blocks, total = [], 0
    while True:
        block = f.read(READ_BLOCK, dtype="float32", always_2d=True)
        if block.shape[0] == 0:
            break
        total += block.shape[0]
        check_audio_size(label, f.samplerate, total)  # memory follows the data, up to the cap
        blocks.append(block)
    return np.concatenate(blocks) if blocks else np.zeros((0, f.channels), np.float32)


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
    _check_wav_data_chunk(path)
    try:
        info = sf.info(os.fsencode(path))  # bytes: names that are not UTF-8 open too
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise _open_error(path, err) from err
    check_audio_size(path, info.samplerate, info.frames)
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
        AudioError: missing, not audio, empty, truncated (fewer frames than the header
            promises), fewer than ``min_samples`` samples after resampling, or NaN/inf samples.
    """
    path = Path(path)
    _check_file(path)
    _check_wav_data_chunk(path)
    try:
        with sf.SoundFile(os.fsencode(path)) as f:
            promised, source_rate = f.frames, f.samplerate
            _check_rate(path, source_rate)
            data = _read_frames(f, path.stat().st_size, path)  # (N, channels)
    except AudioError:
        raise
    except Exception as err:
        raise _open_error(path, err) from err
    if 0 < data.shape[0] < promised:
        raise AudioError(
            path, f"truncated: the header promises {promised} frames, decoding gave {data.shape[0]}"
        )
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
        with sf.SoundFile(io.BytesIO(encoded)) as f:
            source_rate = f.samplerate
            _check_rate(label, source_rate)
            data = _read_frames(f, len(encoded), label)  # (N, channels), within the cap
    except AudioError:
        raise
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
    check_audio_size(path, source_rate, data.shape[0])
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
