"""lhotse CutSet / RecordingSet manifests as audio sources: one cut or recording, read by lhotse.

lhotse is an optional extra (``pip install 'cpcspeech[lhotse]'``): it is imported only when a
manifest is read, so this module imports without it. The ``"cpc"`` FeatureExtractor, which
subclasses lhotse's base class, lives in ``cpcspeech.lhotse_ext``.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from cpcspeech.errors import AudioError, CPCSpeechError
from cpcspeech.io.audio import AudioInfo, check_audio_size, resampled_length, to_mono
from cpcspeech.io.trust import TRUSTED_LHOTSE_SOURCES, commands_allowed, refuse
from cpcspeech.runtime import one_line

MANIFEST_SUFFIXES = (".jsonl.gz", ".jsonl")


def is_manifest(path: Path) -> bool:
    """True for a name lhotse manifests have (``.jsonl.gz``, ``.jsonl``)."""
    return path.name.lower().endswith(MANIFEST_SUFFIXES)


@dataclass(frozen=True, eq=False)
class LhotseAudio:
    """The audio of one cut or recording of a lhotse manifest, read by lhotse."""

    manifest: str
    item: object  # a lhotse Cut or Recording
    kind: ClassVar[str] = "lhotse"

    @property
    def label(self) -> str:
        return f"{self.manifest}#{self.item.id}"

    @property
    def speaker(self) -> str | None:
        """The speaker of a cut's first supervision; None for a recording or an unlabelled cut."""
        for supervision in getattr(self.item, "supervisions", None) or ():
            if supervision.speaker is not None:
                return str(supervision.speaker)
        return None

    def info(self, sample_rate: int, min_samples: int) -> AudioInfo:
        """Length from the manifest (no audio read)."""
        rate, count = int(self.item.sampling_rate), int(self.item.num_samples)
        check_audio_size(self.label, rate, count)
        num_samples = resampled_length(count, rate, sample_rate)
        if num_samples < min_samples:
            raise AudioError(
                self.label,
                f"too short: {num_samples} samples at {sample_rate} Hz, need at least "
                f"{min_samples} for one frame",
            )
        return AudioInfo(self.label, rate, count, int(self.item.num_channels), num_samples)

    def load(self, sample_rate: int, min_samples: int) -> np.ndarray:
        """Returns wav: (N,) float32 mono at ``sample_rate``."""
        check_audio_size(self.label, self.item.sampling_rate, self.item.num_samples)
        try:
            samples = self.item.load_audio()  # (channels, n) float32 at the item's rate
        except Exception as err:  # lhotse raises many types for missing or unreadable audio
            raise AudioError(
                self.label, f"lhotse could not load the audio ({one_line(err)})"
            ) from err
        data = np.asarray(samples, dtype=np.float32).T  # (n, channels)
        return to_mono(self.label, data, int(self.item.sampling_rate), sample_rate, min_samples)


def _require_lhotse(manifest: Path):
    try:
        import lhotse
    except ImportError as err:
        raise CPCSpeechError(
            f"{manifest}: lhotse manifests need lhotse, found it not installed ({err}): "
            "pip install 'cpcspeech[lhotse]'"
        ) from err
    return lhotse


def _recordings(item) -> list:
    """The lhotse Recordings a cut (a mixed cut's tracks too) or a recording reads."""
    if hasattr(item, "sources"):  # a Recording
        return [item]
    found = [item.recording] if getattr(item, "recording", None) is not None else []
    for track in getattr(item, "tracks", None) or ():
        found += _recordings(track.cut)
    return found


def _check_item(where: str, item, allow_commands: bool) -> None:
    """Refuse an item whose sources run or fetch something without the opt-in, or whose rate or
    length is out of bounds; before anything is read."""
    for recording in _recordings(item):
        for source in recording.sources:
            if source.type not in TRUSTED_LHOTSE_SOURCES and not allow_commands:
                what = f"recording {recording.id!r} has an audio source of type {source.type!r}:"
                raise refuse(where, what, str(source.source))
    check_audio_size(f"{where} ({item.id})", item.sampling_rate, item.num_samples)


def manifest_inputs(
    path: str | os.PathLike, allow_commands: bool = False
) -> list[tuple[str, LhotseAudio]]:
    """A CutSet or RecordingSet manifest -> (cut or recording id, its audio), in manifest order.

    Sources of a type other than ``file`` and ``memory`` (``command``, ``url`` incl. ``pipe:``
    urls, ...) are refused unless ``allow_commands`` (see :mod:`cpcspeech.io.trust`); every
    item's rate and length go through :func:`cpcspeech.io.audio.check_audio_size`. Both are
    checked for every line before any audio is read.
    """
    path = Path(path)
    allow_commands = commands_allowed(allow_commands)
    lhotse = _require_lhotse(path)
    try:
        manifest = lhotse.load_manifest(path)
    except Exception as err:
        raise CPCSpeechError(
            f"{path}: expected a lhotse CutSet or RecordingSet manifest, lhotse could not read "
            f"it ({one_line(err)})"
        ) from err
    if not isinstance(manifest, lhotse.CutSet | lhotse.RecordingSet):
        raise CPCSpeechError(
            f"{path}: expected a lhotse CutSet or RecordingSet manifest, found a "
            f"{type(manifest).__name__}"
        )
    items = []
    for lineno, item in enumerate(manifest, start=1):  # one item per line of a .jsonl(.gz)
        if "/" in item.id or "\\" in item.id or item.id in (".", ".."):
            raise CPCSpeechError(f"{path}: id {item.id!r} must not contain a path separator")
        if isinstance(manifest, lhotse.CutSet) and not item.has_recording:
            raise CPCSpeechError(f"{path}: cut {item.id!r} expected to have audio, found none")
        _check_item(f"{path}:{lineno}", item, allow_commands)
        items.append((item.id, LhotseAudio(str(path), item)))
    if not items:
        raise CPCSpeechError(f"{path}: expected at least one cut or recording, found none")
    return items
