"""Find utterances and their speakers: LibriSpeech tree, Kaldi data directory, or plain folder.

Plain, typed, idempotent functions (in the spirit of lhotse's recipes); no audio is decoded here.
"""

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cpcspeech.errors import CorpusError
from cpcspeech.files import read_text

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64")


@dataclass(frozen=True)
class Utterance:
    """One audio file with its utterance id and speaker label."""

    utt_id: str
    path: Path  # absolute
    speaker: str


def read_kaldi_table(path: str | os.PathLike) -> dict[str, str]:
    """Read a Kaldi ``KEY VALUE...`` text table (wav.scp, utt2spk, text) into {key: value}.

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


def _from_kaldi_dir(root: Path) -> list[Utterance]:
    if (root / "segments").is_file():
        # wav.scp then names recordings, not utterances; reading it as utterances would use
        # whole recordings under the wrong ids. Only extract cuts by segments.
        raise CorpusError(
            f"{root}: expected a data directory without a segments file, found "
            f"{root / 'segments'}; training, probes and ABX read whole files, so cut the "
            "recordings into one file per utterance first (cpcspeech extract does cut by segments)"
        )
    wav_scp = read_kaldi_table(root / "wav.scp")
    utt2spk = read_kaldi_table(root / "utt2spk")
    missing = sorted(set(wav_scp) - set(utt2spk))
    if missing:
        raise CorpusError(
            f"{root / 'utt2spk'}: no speaker for {len(missing)} utterance(s) in wav.scp, "
            f"e.g. {missing[:5]}"
        )
    utts = []
    for utt_id, value in wav_scp.items():
        if value.endswith("|"):
            raise CorpusError(
                f"{root / 'wav.scp'}: utterance {utt_id} is a piped command ({value!r}); "
                "only file paths are supported"
            )
        path = Path(value)
        if not path.is_absolute():
            path = root / path
        utts.append(Utterance(utt_id, path.resolve(), utt2spk[utt_id]))
    return utts


def _audio_files(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.lower().endswith(AUDIO_SUFFIXES) and not name.startswith("."):
                files.append(Path(dirpath) / name)
    return sorted(files)


def _is_librispeech(root: Path, files: list[Path]) -> bool:
    """LibriSpeech layout: SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.ext for every file."""
    if not files:
        return False
    for f in files:
        rel = f.relative_to(root).parts
        if len(rel) != 3:
            return False
        spk, chapter, name = rel
        if not Path(name).stem.startswith(f"{spk}-{chapter}-"):
            return False
    return True


def find_utterances(
    root: str | os.PathLike, utt_list: str | os.PathLike | None = None
) -> list[Utterance]:
    """Find utterances under ``root``.

    Layouts, tried in this order:
      * Kaldi data directory: ``wav.scp`` + ``utt2spk`` (relative paths resolved against root);
      * LibriSpeech tree: ``SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac``, speaker = top folder;
      * plain folder: every audio file below root, speaker = its parent folder's name.

    With ``utt_list`` only the listed utterances are returned, in the list's order; otherwise
    utterances are sorted by id. Utterance ids must be unique.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"expected a corpus directory, found no directory at {root}")
    root = root.resolve()
    if (root / "wav.scp").is_file():
        if not (root / "utt2spk").is_file():
            raise CorpusError(f"{root} has wav.scp but no utt2spk; both are needed for speakers")
        utts = _from_kaldi_dir(root)
    else:
        files = _audio_files(root)
        if not files:
            raise CorpusError(
                f"no audio files ({', '.join(AUDIO_SUFFIXES)}) found under {root}, and no wav.scp"
            )
        if _is_librispeech(root, files):
            utts = [Utterance(f.stem, f, f.relative_to(root).parts[0]) for f in files]
        else:
            utts = [Utterance(f.stem, f, f.parent.name) for f in files]
    by_id: dict[str, Utterance] = {}
    for u in utts:
        if u.utt_id in by_id:
            raise CorpusError(
                f"duplicate utterance id {u.utt_id!r}: {by_id[u.utt_id].path} and {u.path}"
            )
        by_id[u.utt_id] = u
    if utt_list is None or str(utt_list) == "":
        return sorted(by_id.values(), key=lambda u: u.utt_id)
    wanted = read_utt_list(utt_list)
    unknown = [w for w in wanted if w not in by_id]
    if unknown:
        raise CorpusError(
            f"{utt_list}: {len(unknown)} utterance id(s) not found under {root}, e.g. {unknown[:5]}"
        )
    return [by_id[w] for w in wanted]


def speaker_ids(utterances: Iterable[Utterance]) -> dict[str, int]:
    """Map each speaker name (sorted) to an index 0..S-1."""
    return {spk: i for i, spk in enumerate(sorted({u.speaker for u in utterances}))}
