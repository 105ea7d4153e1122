"""Audio sources: one utterance's audio wherever it lives (a file, a piped wav.scp command, a Kaldi
segment, a lhotse cut or recording), and :func:`find_sources`, the one function that finds them.

Every command reads audio through :meth:`AudioSource.load`, so what extract reads, training,
probes, ABX, units and t-SNE read too. No audio is decoded while finding sources.
"""

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from cpcspeech.errors import CorpusError
from cpcspeech.files import read_text
from cpcspeech.io import kaldi
from cpcspeech.io.audio import (
    AUDIO_EXTENSIONS,
    MIN_SAMPLES,
    SAMPLE_RATE,
    AudioInfo,
    audio_info,
    load_audio,
)
from cpcspeech.io.lhotse import is_manifest, manifest_inputs
from cpcspeech.io.tables import read_kaldi_table, read_utt_list
from cpcspeech.io.trust import commands_allowed, refuse


class AudioReader(Protocol):
    """One kind of audio: a label for messages and indexes, a header-only info and a load.

    The kinds: :class:`FileAudio`, :class:`cpcspeech.io.kaldi.CommandAudio` (a piped wav.scp
    entry), :class:`cpcspeech.io.kaldi.SegmentAudio` (a Kaldi segment) and
    :class:`cpcspeech.io.lhotse.LhotseAudio` (a lhotse cut or recording).
    """

    kind: ClassVar[str]

    @property
    def label(self) -> str: ...

    def info(self, sample_rate: int, min_samples: int) -> AudioInfo: ...

    def load(self, sample_rate: int, min_samples: int) -> np.ndarray: ...


@dataclass(frozen=True)
class FileAudio:
    """An audio file on disk, read by :func:`cpcspeech.io.audio.load_audio`."""

    path: Path
    kind: ClassVar[str] = "file"

    @property
    def label(self) -> str:
        return str(self.path)

    def info(self, sample_rate: int, min_samples: int) -> AudioInfo:
        """The file header's length (no samples decoded)."""
        return audio_info(self.path, sample_rate, min_samples)

    def load(self, sample_rate: int, min_samples: int) -> np.ndarray:
        """Returns wav: (N,) float32 mono at ``sample_rate``."""
        return load_audio(self.path, sample_rate, min_samples)


@dataclass(frozen=True)
class AudioSource:
    """One utterance's audio, its ids and (where known) its speaker.

    ``utt_id`` names the utterance (index ``id`` column, Kaldi key, alignment and list lookups);
    ``key`` is where a folder output writes it (``OUT/<key>.npy``: the relative path without its
    audio extension for a scanned folder, else ``utt_id``). ``path`` is absolute: the audio file,
    or the list that names the audio (wav.scp of a command, ``segments``, a lhotse manifest).
    """

    utt_id: str
    path: Path
    speaker: str | None = None
    key: str = ""
    audio: AudioReader = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.utt_id)
        if self.audio is None:
            object.__setattr__(self, "audio", FileAudio(self.path))

    @property
    def id(self) -> str:
        """The utterance id (as ``utt_id``)."""
        return self.utt_id

    @property
    def kind(self) -> str:
        """``"file"``, ``"command"``, ``"segment"`` or ``"lhotse"``."""
        return self.audio.kind

    @property
    def label(self) -> str:
        """What messages and the index name: the file, the command or the segment."""
        return self.audio.label

    def info(self, sample_rate: int = SAMPLE_RATE, min_samples: int = MIN_SAMPLES) -> AudioInfo:
        """Header-only length at ``sample_rate`` (0 samples where only running a command can
        tell: see :meth:`measure`). Raises AudioError for a bad or too short input."""
        return self.audio.info(sample_rate, min_samples)

    def load(self, sample_rate: int = SAMPLE_RATE, min_samples: int = MIN_SAMPLES) -> np.ndarray:
        """Returns wav: (N,) float32 mono at ``sample_rate``. Raises AudioError."""
        return self.audio.load(sample_rate, min_samples)

    def measure(self, sample_rate: int = SAMPLE_RATE) -> AudioInfo:
        """:meth:`info` with the true length: where no header tells it (a piped command, a
        segment running to a command's end), the audio is loaded once and counted."""
        info = self.info(sample_rate, 0)
        if info.num_samples > 0 or self.kind not in ("command", "segment"):
            return info
        n = int(self.load(sample_rate, 0).shape[0])
        return AudioInfo(self.label, sample_rate, n, 1, n)


# ----- the parts of a corpus -----


def audio_files(root: Path) -> list[Path]:
    """Audio files under ``root`` (recursive; hidden files and folders skipped), sorted by their
    path relative to ``root``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS and not name.startswith("."):
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _check_id(where: str, kind: str, name: str) -> None:
    if "/" in name or "\\" in name or name in (".", ".."):
        raise CorpusError(f"{where}: {kind} {name!r} must not contain a path separator")


def read_wav_scp(scp: Path, allow_commands: bool = False) -> list[AudioSource]:
    """A Kaldi ``wav.scp``: ``UTT_ID PATH`` (relative paths from its folder) or ``UTT_ID COMMAND |``
    (a shell command writing audio to stdout, :class:`cpcspeech.io.kaldi.CommandAudio`), in order.

    A command line is refused (UntrustedInputError naming the line) unless ``allow_commands``
    or ``$CPCSPEECH_ALLOW_COMMANDS`` opts in (:mod:`cpcspeech.io.trust`); nothing runs here.
    """
    scp = Path(os.path.abspath(scp))
    allow_commands = commands_allowed(allow_commands)
    if not scp.is_file():
        raise CorpusError(f"expected a wav.scp at {scp}, found no such file")
    items: list[AudioSource] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(read_text(scp, CorpusError).splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise CorpusError(f"{scp}:{lineno}: expected 'UTT_ID PATH', found {line!r}")
        utt, target = parts[0], parts[1].strip()
        _check_id(f"{scp}:{lineno}", "utterance id", utt)
        if utt in seen:
            raise CorpusError(
                f"{scp}:{lineno}: duplicate utterance id {utt!r}, already used on line {seen[utt]}"
            )
        seen[utt] = lineno
        if target.endswith("|") and not allow_commands:
            raise refuse(f"{scp}:{lineno}", "a shell command", target)
        if target.endswith("|"):
            items.append(AudioSource(utt, scp, audio=kaldi.CommandAudio(target)))
        else:
            items.append(AudioSource(utt, Path(os.path.abspath(scp.parent / target))))
    return items


def read_data_dir(
    directory: Path, speakers: bool = False, allow_commands: bool = False
) -> list[AudioSource]:
    """A Kaldi data directory: its wav.scp, cut by its ``segments`` file when there is one.

    With ``speakers``, ``utt2spk`` is required and gives every utterance (or segment) its speaker.
    Extract reads each segment once, in order, so a recording is decoded once for all its
    segments; a corpus (``speakers``) is read in any order, so its recordings are not kept.
    wav.scp commands need ``allow_commands`` (see :func:`read_wav_scp`).
    """
    directory = Path(os.path.abspath(directory))
    if speakers and not (directory / "utt2spk").is_file():
        raise CorpusError(f"{directory} has wav.scp but no utt2spk; both are needed for speakers")
    items = read_wav_scp(directory / "wav.scp", allow_commands)
    if (directory / "segments").is_file():
        by_id = {
            item.utt_id: kaldi.Recording(
                item.label,
                item.path if item.kind == "file" else None,
                item.audio if item.kind == "command" else None,
                keep=not speakers,
            )
            for item in items
        }
        segments = Path(os.path.abspath(directory / "segments"))
        items = [
            AudioSource(seg, segments, audio=audio)
            for seg, audio in kaldi.read_segments(segments, by_id)
        ]
    if not speakers:
        return items
    utt2spk = read_kaldi_table(directory / "utt2spk")
    missing = [item.utt_id for item in items if item.utt_id not in utt2spk]
    if missing:
        raise CorpusError(
            f"{directory / 'utt2spk'}: no speaker for {len(missing)} utterance(s) in "
            f"{'segments' if (directory / 'segments').is_file() else 'wav.scp'}, e.g. {missing[:5]}"
        )
    return [_with_speaker(item, utt2spk[item.utt_id]) for item in items]


def _with_speaker(item: AudioSource, speaker: str | None) -> AudioSource:
    return AudioSource(item.utt_id, item.path, speaker, item.key, item.audio)


def _strip_audio_suffix(rel: str) -> str:
    root, ext = os.path.splitext(rel)
    return root if ext.lower() in AUDIO_EXTENSIONS else rel


def _is_librispeech(root: Path, files: list[Path]) -> bool:
    """LibriSpeech layout: SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.ext for every file."""
    for f in files:
        rel = f.relative_to(root).parts
        if len(rel) != 3 or not Path(rel[2]).stem.startswith(f"{rel[0]}-{rel[1]}-"):
            return False
    return bool(files)


def scan_folder(directory: Path, speakers: bool = False) -> list[AudioSource]:
    """Every audio file under ``directory``.

    Without ``speakers``: keyed by relative path without extension ("sub/b" for sub/b.flac),
    which is also the id. With ``speakers``: the id is the file's stem and the speaker is the top
    folder of a LibriSpeech tree (SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac), else the parent
    folder's name.
    """
    directory = Path(os.path.abspath(directory))
    files = audio_files(directory)
    if not files:
        raise CorpusError(
            f"{directory}: expected audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) or a "
            "wav.scp under this directory, found none (no audio files)"
        )
    if not speakers:
        keys = [_strip_audio_suffix(f.relative_to(directory).as_posix()) for f in files]
        return [AudioSource(key, f) for key, f in zip(keys, files, strict=True)]
    libri = _is_librispeech(directory, files)
    return [
        AudioSource(f.stem, f, f.relative_to(directory).parts[0] if libri else f.parent.name)
        for f in files
    ]


def read_manifest(manifest: Path, allow_commands: bool = False) -> list[AudioSource]:
    """A lhotse CutSet or RecordingSet: one source per cut or recording, keyed by its id; a cut's
    speaker is its first supervision's. Sources other than files and memory (commands, urls)
    need ``allow_commands`` (:func:`cpcspeech.io.lhotse.manifest_inputs`)."""
    path = Path(os.path.abspath(manifest))
    found = manifest_inputs(path, allow_commands)
    return [AudioSource(key, path, audio.speaker, audio=audio) for key, audio in found]


# ----- discovery -----


def _discover(path: Path, speakers: bool, allow_commands: bool) -> list[AudioSource]:
    """The sources behind one path a user gave."""
    if path.is_dir() and (path / "wav.scp").is_file():
        return read_data_dir(path, speakers, allow_commands)
    if path.is_dir():
        return scan_folder(path, speakers)
    if path.is_file() and is_manifest(path):
        return read_manifest(path, allow_commands)
    if speakers:
        raise CorpusError(
            f"expected a corpus directory (or a lhotse CutSet manifest), found no directory at "
            f"{path}"
        )
    if path.is_file() and (path.name == "wav.scp" or path.suffix.lower() == ".scp"):
        return read_wav_scp(path, allow_commands)
    if path.is_file() or path.suffix.lower() in AUDIO_EXTENSIONS:
        # A missing audio file is reported when read, with the usual AudioError.
        return [AudioSource(_strip_audio_suffix(path.name), Path(os.path.abspath(path)))]
    raise CorpusError(
        f"input {str(path)!r}: expected an audio file, a directory or a wav.scp, "
        "found nothing at that path"
    )


def check_files_exist(sources: Sequence[AudioSource]) -> None:
    """AudioError for the first source that is a plain file and is missing: one ``stat`` per
    file, so a command can fail on a typo before it loads a model. The error is the one the
    header pass (:meth:`AudioSource.info`) gives for that file."""
    for source in sources:
        if source.kind == "file" and not source.path.is_file():
            source.info()


def find_sources(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    utt_list: str | os.PathLike | None = None,
    speakers: bool = False,
    allow_commands: bool = False,
) -> list[AudioSource]:
    """Find the audio behind what a user passes: the one discovery rule of every command.

    Each input may be an audio file, a folder (searched recursively), a Kaldi ``wav.scp``, a
    Kaldi data directory (``wav.scp``, cut by ``segments`` if present; ``utt2spk``), a lhotse
    CutSet or RecordingSet manifest (``.jsonl.gz``, ``.jsonl``). wav.scp lines ending in ``|``
    are shell commands; they, and lhotse sources that run or fetch something (``command``,
    ``url``), are refused here, before anything runs, unless the caller opts in.

    Args:
        inputs: one path or several.
        utt_list: keep only the utterance ids listed in this file (first token per line), in its
            order.
        speakers: a training / evaluation corpus (``cpcspeech.io.corpus.find_utterances``):
            every input is a folder, a data directory or a manifest and every source has a
            speaker (a LibriSpeech tree's top folder, a plain folder's parent, ``utt2spk``, a
            cut's supervision); files are named by their stem; ids are unique and, without
            ``utt_list``, sorted. Without: inputs in the order given, folders sorted by relative
            path, wav.scp order kept, and one audio file may appear only once.
        allow_commands: run wav.scp commands and read lhotse ``command`` / ``url`` sources
            (also ``$CPCSPEECH_ALLOW_COMMANDS=1``; the CLI's ``--allow-commands``). Without it,
            UntrustedInputError names the first such line.

    Returns:
        the sources, each with an absolute ``path``.
    """
    specs = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    allow = commands_allowed(allow_commands)
    items = [item for spec in specs for item in _discover(Path(spec), speakers, allow)]
    if not items:
        raise CorpusError("expected at least one audio input, found none")
    if speakers:
        _check_corpus(items)
        items.sort(key=lambda item: item.utt_id)
    else:
        _check_files_once(items)
    if utt_list is None or str(utt_list) == "":
        return items
    return _select(items, utt_list, ", ".join(map(str, specs)))


def _check_files_once(items: list[AudioSource]) -> None:
    """The same audio file reached twice (a folder and a file inside it) is an error naming both,
    rather than a silent de-duplication. Commands, segments and cuts were checked when read."""
    first: dict[Path, AudioSource] = {}
    for item in items:
        if item.kind != "file":
            continue
        if item.path in first:
            raise CorpusError(
                f"{item.path}: listed twice (as {first[item.path].id!r} and {item.id!r}); "
                "each audio file may appear once"
            )
        first[item.path] = item


def _check_corpus(items: list[AudioSource]) -> None:
    by_id: dict[str, AudioSource] = {}
    for item in items:
        if item.speaker is None:
            raise CorpusError(
                f"{item.label}: expected a speaker for utterance {item.utt_id!r}, found none "
                "(speakers come from utt2spk, a LibriSpeech or plain folder, or a cut's "
                "supervisions)"
            )
        if item.utt_id in by_id:
            raise CorpusError(
                f"duplicate utterance id {item.utt_id!r}: {by_id[item.utt_id].label} and "
                f"{item.label}"
            )
        by_id[item.utt_id] = item


def _select(items: list[AudioSource], utt_list: str | os.PathLike, where: str) -> list[AudioSource]:
    by_id = {item.utt_id: item for item in items}
    wanted = read_utt_list(utt_list)
    unknown = [w for w in wanted if w not in by_id]
    if unknown:
        raise CorpusError(
            f"{utt_list}: {len(unknown)} utterance id(s) not found under {where}, e.g. "
            f"{unknown[:5]}"
        )
    return [by_id[w] for w in wanted]


def first_clash(
    sources: Sequence[AudioSource], key: Callable[[AudioSource], str]
) -> tuple[AudioSource, AudioSource] | None:
    """The first two sources with the same ``key`` (an output name, a Kaldi key, an utterance
    id), in order: (the earlier, the later); None when every key is unique. Writers and
    ``units apply`` refuse such inputs, since one would overwrite the other."""
    seen: dict[str, AudioSource] = {}
    for item in sources:
        name = key(item)
        if name in seen:
            return seen[name], item
        seen[name] = item
    return None
