"""A training or evaluation corpus: utterances with speakers (LibriSpeech tree, Kaldi data
directory, plain folder, lhotse CutSet), utterance lists and speaker indices.

Utterances are :class:`cpcspeech.io.sources.AudioSource` items found by the one discovery rule,
:func:`cpcspeech.io.sources.find_sources`; no audio is decoded here.
"""

import os
from collections.abc import Iterable

from cpcspeech.io.audio import AUDIO_EXTENSIONS
from cpcspeech.io.sources import AudioSource, find_sources
from cpcspeech.io.tables import read_kaldi_table, read_utt_list

Utterance = AudioSource
"""An utterance of a corpus: an AudioSource whose ``speaker`` is set."""

AUDIO_SUFFIXES = tuple(sorted(AUDIO_EXTENSIONS))
"""Kept for old imports: the audio extensions (``cpcspeech.io.audio.AUDIO_EXTENSIONS``)."""

__all__ = [
    "AUDIO_SUFFIXES", "Utterance", "find_utterances", "read_kaldi_table", "read_utt_list",
    "speaker_ids",
]  # fmt: skip


def find_utterances(
    root: str | os.PathLike, utt_list: str | os.PathLike | None = None, allow_commands: bool = False
) -> list[AudioSource]:
    """Find the utterances of a corpus under ``root``, each with its speaker.

    Layouts, tried in this order:
      * Kaldi data directory: ``wav.scp`` + ``utt2spk`` (relative paths resolved against root),
        cut by ``segments`` when present; piped entries run as commands (with the opt-in);
      * LibriSpeech tree: ``SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac``, speaker = top folder;
      * plain folder: every audio file below root, speaker = its parent folder's name;
      * a lhotse CutSet manifest, speaker = each cut's first supervision's.

    With ``utt_list`` only the listed utterances are returned, in the list's order; otherwise
    utterances are sorted by id. Utterance ids must be unique. Read audio with ``u.load()``.
    wav.scp commands and lhotse command / url sources need ``allow_commands`` (see
    :func:`cpcspeech.io.sources.find_sources`).
    """
    return find_sources([root], utt_list, speakers=True, allow_commands=allow_commands)


def speaker_ids(utterances: Iterable[AudioSource]) -> dict[str, int]:
    """Map each speaker name (sorted) to an index 0..S-1."""
    return {spk: i for i, spk in enumerate(sorted({u.speaker for u in utterances}))}
