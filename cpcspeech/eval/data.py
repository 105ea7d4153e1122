"""Evaluation data, resolved once: the corpus root, the train and test utterances, their frame
labels and speakers, from the options every evaluation command shares (--data, --labels,
--label-format, --phones, --train-list, --test-list). Probes, ABX and units all take an EvalData.
"""

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cpcspeech.config import load_config
from cpcspeech.errors import CPCSpeechError
from cpcspeech.io.alignments import Alignment, detect_format, label_frames, read_alignment
from cpcspeech.io.corpus import Utterance, find_utterances, speaker_ids

SPLITS = ("train", "test")
# The CPC paper's split files, looked for in the data dir when no list is given.
SPLIT_FILES = {"train": "train_split.txt", "test": "test_split.txt"}
SPLIT_OPTIONS = {"train": "--train-list", "test": "--test-list"}


@dataclass(frozen=True)
class EvalData:
    """What an evaluation reads, resolved once.

    Attributes:
        data_option: ``--data`` as given (a corpus, or a training config YAML naming ``data.root``).
        root: the corpus folder.
        train, test: the utterances of each split, in list order (empty when not asked for).
        alignment: per-frame phone ids and the phone table (None without ``--labels``).
        labels: ``--labels`` as given, or None.
        label_format: the labels' format ("cpc", "kaldi", "ctm", "textgrid"), given or detected.
        speakers: speaker name -> class id over both splits (sorted names).
    """

    data_option: str
    root: Path
    train: tuple[Utterance, ...]
    test: tuple[Utterance, ...]
    alignment: Alignment | None = None
    labels: str | None = None
    label_format: str | None = None
    speakers: dict[str, int] = field(default_factory=dict)

    @property
    def utterances(self) -> tuple[Utterance, ...]:
        """Both splits, train first."""
        return self.train + self.test

    def speaker_of(self) -> dict[str, str]:
        """Utterance id -> speaker name, over both splits."""
        return {u.utt_id: u.speaker for u in self.utterances}


def corpus_root(data: str | os.PathLike) -> Path:
    """``data`` itself, or ``data.root`` when ``data`` is a training config YAML."""
    path = Path(data)
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        return Path(load_config(path).data.root)
    return path


def split_list(root: Path, split: str, given: str | os.PathLike | None) -> Path | None:
    """The utterance list of ``split``: ``given``, else the split file in ``root`` when there
    is one (``train_split.txt`` / ``test_split.txt``), else None. The one place that knows the
    default split files."""
    if given is not None:
        return Path(given)
    default = root / SPLIT_FILES[split]
    return default if default.is_file() else None


def resolve_eval_data(
    data: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    label_format: str | None = None,
    phones: str | os.PathLike | None = None,
    train_list: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
    splits: Collection[str] = SPLITS,
    required: Collection[str] = SPLITS,
    allow_commands: bool = False,
) -> EvalData:
    """Find the corpus, its splits and its labels, once.

    Args:
        data: a data dir / corpus root, or a training config YAML (its ``data.root``).
        labels, label_format, phones: the alignment (see :func:`read_eval_labels`).
        train_list, test_list: utterance lists (default: the split files in the data dir).
        splits: which splits to resolve (the others stay empty).
        required: splits that must come from a list; a split that is not required and has no
            list holds every utterance of the corpus (ABX scores all, units fit on all).
        allow_commands: run wav.scp commands and lhotse command / url sources (see
            :func:`cpcspeech.io.sources.find_sources`).

    When both splits are required (a probe learns on one and is scored on the other), they
    must not share utterances.
    """
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise CPCSpeechError(f"eval splits: expected train and/or test, found {unknown}")
    root = corpus_root(data)
    found: dict[str, tuple[Utterance, ...]] = {"train": (), "test": ()}
    for split in SPLITS:
        if split not in splits:
            continue
        given = train_list if split == "train" else test_list
        path = split_list(root, split, given)
        if path is None and split in required:
            raise CPCSpeechError(
                f"{root}: expected {SPLIT_FILES[split]} (or pass {SPLIT_OPTIONS[split]}), "
                "found none"
            )
        found[split] = tuple(find_utterances(root, path, allow_commands))
    if set(SPLITS) <= set(splits) & set(required):
        _check_disjoint(found["train"], found["test"])
    everyone = found["train"] + found["test"]
    alignment = fmt = None
    if labels is not None:
        fmt = label_format or detect_format(labels)
        alignment = read_eval_labels(labels, fmt, phones, everyone)
    return EvalData(
        data_option=os.fspath(data), root=root, train=found["train"], test=found["test"],
        alignment=alignment, labels=None if labels is None else os.fspath(labels),
        label_format=fmt, speakers=speaker_ids(everyone),
    )  # fmt: skip


def read_eval_labels(
    labels: str | os.PathLike,
    label_format: str,
    phones: str | os.PathLike | None,
    utterances: Sequence[Utterance],
) -> Alignment:
    """Read the frame labels. CTM and TextGrid labels are rasterised to ``1 + (N - 400) // 160``
    frames per utterance of ``utterances``, N read from the audio header."""
    num_frames = None
    if label_format in ("ctm", "textgrid"):
        num_frames = {u.utt_id: label_frames(_num_samples(u)) for u in utterances}
    return read_alignment(labels, label_format, phones=phones, num_frames=num_frames)


def _num_samples(utterance: Utterance) -> int:
    """Samples of one utterance at 16 kHz, from its header (a piped command is run once)."""
    return utterance.measure().num_samples


def _check_disjoint(train: Sequence[Utterance], test: Sequence[Utterance]) -> None:
    overlap = {u.utt_id for u in train} & {u.utt_id for u in test}
    if overlap:
        raise CPCSpeechError(
            f"train and test lists share {len(overlap)} utterances, e.g. {sorted(overlap)[:5]}"
        )
