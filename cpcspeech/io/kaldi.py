"""Kaldi I/O through kaldiio: piped wav.scp entries, ``segments`` cut from recordings read once,
and ``ark,scp:`` feature output written atomically.

kaldiio is an optional extra (``pip install 'cpcspeech[kaldi]'``); it is imported only when used.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from cpcspeech.errors import AudioError, CorpusError, CPCSpeechError
from cpcspeech.files import read_text, temp_sibling
from cpcspeech.io.audio import (
    MAX_AUDIO_SECONDS_ENV,
    AudioInfo,
    audio_info,
    decode_audio,
    load_audio,
    max_audio_seconds,
    max_command_bytes,
)

MAX_OVERSHOOT_SECONDS = 0.5
"""A segment ending less than this past its recording is cut at the end (Kaldi's
``extract-segments --max-overshoot``); one ending further out is an error."""
COMMAND_READ_BLOCK = 1 << 20  # bytes per read of a piped command's output


def require_kaldiio():
    """Import kaldiio, or say which extra installs it."""
    try:
        import kaldiio
    except ImportError as err:
        raise CPCSpeechError(
            "Kaldi input/output needs kaldiio, found it not installed: "
            "pip install 'cpcspeech[kaldi]'"
        ) from err
    return kaldiio


# ----- piped wav.scp entries -----


@dataclass(frozen=True)
class CommandAudio:
    """A wav.scp entry ``UTT COMMAND |``: a shell command whose standard output is an audio file.

    The command runs in a shell (``/bin/sh``) in the current working directory, exactly as Kaldi
    runs it, through kaldiio's reader (``kaldiio.open_like_kaldi``). Its output is decoded by
    soundfile like a file on disk (WAV, FLAC, OGG...), never unpickled. Its length is unknown
    until it has run, so :meth:`info` reports 0 samples.
    """

    command: str  # including the trailing '|'
    kind: ClassVar[str] = "command"

    @property
    def label(self) -> str:
        return self.command

    def info(self, sample_rate: int, min_samples: int) -> AudioInfo:
        return AudioInfo(self.command, sample_rate, 0, 0, 0)

    def load(self, sample_rate: int, min_samples: int) -> np.ndarray:
        """Run the command once. Returns wav: (N,) float32 mono at ``sample_rate``.

        Its output is read in blocks up to :func:`cpcspeech.io.audio.max_command_bytes`; a
        command writing more (``cat /dev/zero |``) is stopped there (its pipe is closed) and
        refused, so memory stays bounded whatever it writes.
        """
        kaldiio = require_kaldiio()
        limit = max_command_bytes()
        encoded = bytearray()
        stream = kaldiio.open_like_kaldi(self.command, "rb")
        try:
            while block := stream.read(COMMAND_READ_BLOCK):
                if len(encoded) + len(block) > limit:
                    raise AudioError(
                        self.command,
                        f"the command wrote more than {limit} bytes, expected at most "
                        f"{max_audio_seconds():g} s of audio ({MAX_AUDIO_SECONDS_ENV}); stopped "
                        "reading it",
                    )
                encoded += block
        finally:
            status = stream.close()  # a writer still running gets SIGPIPE
        if status:  # kaldiio returns the exit status shifted left by 8, like os.popen
            raise AudioError(self.command, f"command failed with exit status {status >> 8}")
        return decode_audio(bytes(encoded), self.command, sample_rate, min_samples)


# ----- segments -----


@dataclass(eq=False)
class Recording:
    """One wav.scp recording shared by its segments: decoded once, dropped after its last segment.

    ``path`` is an audio file, or ``command`` a piped entry (see :class:`CommandAudio`). With
    ``keep`` False the waveform is never kept: each segment decodes the recording again, which
    bounds memory when segments are read in any order and more than once (training windows).
    """

    label: str
    path: Path | None = None
    command: CommandAudio | None = None
    pending: int = 0  # segments that will still ask for the waveform
    keep: bool = True
    _info: AudioInfo | None = None
    _wav: np.ndarray | None = None
    _error: AudioError | None = None

    def num_samples(self, sample_rate: int) -> int | None:
        """Length at ``sample_rate`` from the file header; None for a command (unknown)."""
        if self.path is None:
            return None
        if self._info is None:
            self._info = audio_info(self.path, sample_rate, min_samples=1)
        return self._info.num_samples

    def take(self, sample_rate: int) -> np.ndarray:
        """The whole recording, (N,) float32 at ``sample_rate``; decoded on the first call only."""
        if self._error is not None:
            raise self._error
        if self._wav is not None:
            return self._wav
        try:
            if self.command is not None:
                wav = self.command.load(sample_rate, min_samples=1)
            else:
                wav = load_audio(self.path, sample_rate, min_samples=1)
        except AudioError as err:
            self._error = err
            raise
        if self.keep:
            self._wav = wav
        return wav

    def release(self) -> None:
        """One segment is done with the recording; the last one frees the waveform."""
        self.pending -= 1
        if self.pending <= 0:
            self._wav = None


@dataclass(frozen=True)
class SegmentAudio:
    """One ``segments`` line ``SEG REC START END``: samples int(START * sr) to int(END * sr) of the
    recording at the model's rate sr, as Kaldi's ``extract-segments`` cuts (END = -1: to the end).

    The recording is resampled once as a whole and then cut, so a segment of a 44.1 kHz recording
    may differ from the same span cut first and resampled after by the resampler's edge effects.
    """

    segment_id: str
    recording: Recording
    start: float  # seconds
    end: float  # seconds, or -1 for the end of the recording
    kind: ClassVar[str] = "segment"

    @property
    def label(self) -> str:
        end = "end" if self.end == -1 else f"{self.end:g} s"
        return f"{self.recording.label} [{self.start:g} s, {end}] (segment {self.segment_id})"

    def _bounds(self, total: int | None, sample_rate: int) -> tuple[int, int | None]:
        """(first, stop) sample at sample_rate; stop None = the end (unknown length)."""
        first = int(self.start * sample_rate)
        stop = None if self.end == -1 else int(self.end * sample_rate)
        if total is None:
            return first, stop
        if first >= total:
            raise AudioError(
                self.label,
                f"starts at sample {first}, expected before the recording's end ({total} samples)",
            )
        if stop is None:
            return first, total
        if stop > total:
            if stop - total >= int(MAX_OVERSHOOT_SECONDS * sample_rate):
                raise AudioError(
                    self.label,
                    f"ends at sample {stop}, expected at most {MAX_OVERSHOOT_SECONDS} s past the "
                    f"recording's end ({total} samples)",
                )
            stop = total
        return first, stop

    def _check(self, num_samples: int, sample_rate: int, min_samples: int) -> None:
        if num_samples < min_samples:
            raise AudioError(
                self.label,
                f"too short: {num_samples} samples at {sample_rate} Hz, need at least "
                f"{min_samples} for one frame",
            )

    def info(self, sample_rate: int, min_samples: int) -> AudioInfo:
        """Segment length from the recording's header (0 when the recording is a command)."""
        try:
            first, stop = self._bounds(self.recording.num_samples(sample_rate), sample_rate)
            length = 0 if stop is None else stop - first
            if stop is not None:
                self._check(length, sample_rate, min_samples)
        except AudioError:
            self.recording.release()  # a segment that fails here is never loaded
            raise
        return AudioInfo(self.label, sample_rate, length, 1, length)

    def load(self, sample_rate: int, min_samples: int) -> np.ndarray:
        """Returns wav: (N,) float32, a copy of the segment's samples (the recording is shared)."""
        try:
            wav = self.recording.take(sample_rate)
            first, stop = self._bounds(wav.shape[0], sample_rate)
            self._check(stop - first, sample_rate, min_samples)
            return wav[first:stop].copy()
        finally:
            self.recording.release()


def read_segments(
    segments: Path, recordings: dict[str, Recording]
) -> list[tuple[str, SegmentAudio]]:
    """Read a Kaldi ``segments`` file into (segment_id, SegmentAudio), in file order.

    Each line is ``SEGMENT_ID RECORDING_ID START END`` (seconds; END = -1 means to the end).
    Every recording's ``pending`` count is set to its number of segments.
    """
    found: list[tuple[str, SegmentAudio]] = []
    seen: dict[str, int] = {}
    limit = max_audio_seconds()  # no recording is longer, so no segment ends later
    for lineno, raw in enumerate(read_text(segments, CorpusError).splitlines(), start=1):
        parts = raw.split()
        if not parts:
            continue
        where = f"{segments}:{lineno}"
        if len(parts) != 4:
            raise CPCSpeechError(
                f"{where}: expected 'SEGMENT_ID RECORDING_ID START END', found {raw.strip()!r}"
                + (" (a 5th channel field is not supported)" if len(parts) == 5 else "")
            )
        seg, rec, start_text, end_text = parts
        try:
            start, end = float(start_text), float(end_text)
        except ValueError:
            raise CPCSpeechError(
                f"{where}: expected START and END in seconds, found {start_text!r} {end_text!r}"
            ) from None
        if not (0 <= start < limit and (end == -1 or start < end <= limit)):
            raise CPCSpeechError(
                f"{where}: expected 0 <= START < END <= {limit:g} (or END = -1; seconds, "
                f"at most {MAX_AUDIO_SECONDS_ENV}), found {start:g} {end:g}"
            )
        if rec not in recordings:
            raise CPCSpeechError(
                f"{where}: recording {rec!r} of segment {seg!r} expected in wav.scp, "
                "found no such id"
            )
        if "/" in seg or "\\" in seg or seg in (".", ".."):
            raise CPCSpeechError(f"{where}: segment id {seg!r} must not contain a path separator")
        if seg in seen:
            raise CPCSpeechError(f"{where}: segment id {seg!r} already used on line {seen[seg]}")
        seen[seg] = lineno
        recordings[rec].pending += 1
        found.append((seg, SegmentAudio(seg, recordings[rec], start, end)))
    if not found:
        raise CPCSpeechError(f"{segments}: expected at least one segment, found none")
    return found


# ----- ark,scp output -----


@dataclass(frozen=True)
class ArkScpTarget:
    """The files of an ``ark,scp:FEATS.ark,FEATS.scp`` wspecifier, as given (relative or not)."""

    ark: str
    scp: str


def is_wspecifier(text: str) -> bool:
    """True for Kaldi write specifiers such as ``ark,scp:a.ark,a.scp`` or ``ark:a.ark``."""
    head, sep, _ = text.partition(":")
    return bool(sep) and "ark" in head.split(",")


def parse_wspecifier(text: str) -> ArkScpTarget:
    """``ark,scp:FEATS.ark,FEATS.scp`` -> its two paths (parsed by kaldiio.parse_specifier)."""
    kaldiio = require_kaldiio()
    expected = "expected ark,scp:FEATS.ark,FEATS.scp (a Kaldi archive and its index)"
    try:
        spec = kaldiio.parse_specifier(text)
    except ValueError as err:
        raise CPCSpeechError(f"--out {text!r}: {expected}; kaldiio says: {err}") from err
    options = sorted(k for k, v in spec.items() if v and k not in ("ark", "scp"))
    if spec["scp"] is None or options:
        raise CPCSpeechError(f"--out {text!r}: {expected}, found options {options or 'ark only'}")
    if os.path.realpath(spec["ark"]) == os.path.realpath(spec["scp"]):
        raise CPCSpeechError(
            f"--out {text!r}: {expected}, found one path for both (the index would replace the "
            "archive)"
        )
    for name in (spec["ark"], spec["scp"]):
        if name.strip() in ("", "-") or name.strip().startswith("|") or name.strip().endswith("|"):
            raise CPCSpeechError(
                f"--out {text!r}: {expected} as file paths (written under a temporary name, then "
                f"renamed), found {name!r}"
            )
    return ArkScpTarget(spec["ark"], spec["scp"])


class ArkScpWriter:
    """Kaldi float matrices (T, D) into an archive + index, through kaldiio.WriteHelper.

    Both files are written under temporary names beside their targets; :meth:`commit` points the
    index at the final archive name and renames the archive, then the index. :meth:`abort` (any
    failure) removes both, so no archive or index that looks complete is left.
    """

    def __init__(self, target: ArkScpTarget) -> None:
        kaldiio = require_kaldiio()
        self.target = target
        self.ark = Path(target.ark)
        self.scp = Path(target.scp)
        self.temps: list[Path] = []
        try:
            for path in (self.ark, self.scp):
                path.parent.mkdir(parents=True, exist_ok=True)
                self.temps.append(temp_sibling(path))  # umask mode, not mkstemp's 0600
            self.helper = kaldiio.WriteHelper(f"ark,scp:{self.temps[0]},{self.temps[1]}")
        except BaseException:
            for tmp in self.temps:
                tmp.unlink(missing_ok=True)
            raise

    def write(self, key: str, feats: np.ndarray) -> None:
        """feats: (T, D) float32, stored as a Kaldi float matrix under ``key``."""
        if not key or any(ch.isspace() for ch in key):
            raise CPCSpeechError(f"Kaldi key {key!r}: expected no whitespace, found some")
        self.helper(key, np.ascontiguousarray(feats, dtype=np.float32))

    def commit(self) -> None:
        """Close, rewrite the index to name the final archive, rename both into place."""
        self.helper.close()
        tmp_ark, tmp_scp = self.temps
        prefix = f"{tmp_ark}:"
        final_scp = temp_sibling(self.scp)
        self.temps.append(final_scp)
        with open(tmp_scp, encoding="utf-8") as src, open(final_scp, "w", encoding="utf-8") as dst:
            for line in src:
                key, location = line.rstrip("\n").split(" ", 1)
                if not location.startswith(prefix):
                    raise RuntimeError(f"kaldiio wrote {location!r}, expected {prefix}OFFSET")
                dst.write(f"{key} {self.target.ark}:{location[len(prefix) :]}\n")
        os.replace(tmp_ark, self.ark)
        os.replace(final_scp, self.scp)
        tmp_scp.unlink()
        self.temps.clear()

    def abort(self) -> None:
        """Close and remove every temporary file."""
        try:
            self.helper.close()
        finally:
            for tmp in self.temps:
                tmp.unlink(missing_ok=True)
            self.temps.clear()
