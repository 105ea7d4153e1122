"""Kaldi text tables (``utt2spk``, ``text``: ``KEY VALUE...``) and utterance-id lists.

wav.scp has its own reader (``cpcspeech.io.sources.read_wav_scp``): its values are audio.
"""

import os
from pathlib import Path

from cpcspeech.errors import CorpusError
from cpcspeech.files import read_text


def read_kaldi_table(path: str | os.PathLike) -> dict[str, str]:
    """Read a Kaldi ``KEY VALUE...`` text table (utt2spk, text) into {key: value}.

    Blank lines are skipped; a line without a value or a duplicated key is a CorpusError.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"expected Kaldi table {path}, found no such file")
    table: dict[str, str] = {}
    for lineno, line in enumerate(read_text(path, CorpusError).splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise CorpusError(f"{path}:{lineno}: expected 'KEY VALUE', found {line!r}")
        key, value = parts
        if key in table:
            raise CorpusError(f"{path}:{lineno}: duplicate key {key!r}")
        table[key] = value.strip()
    return table


def read_utt_list(path: str | os.PathLike) -> list[str]:
    """Read an utterance-id list (first token per line, e.g. the CPC paper's train_split.txt)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"expected utterance list {path}, found no such file")
    ids = []
    for line in read_text(path, CorpusError).splitlines():
        parts = line.split()
        if parts:
            ids.append(parts[0])
    if not ids:
        raise CorpusError(f"utterance list {path} is empty")
    return ids
