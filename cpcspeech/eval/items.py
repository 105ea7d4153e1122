"""ABX items and their frames: the ``.item`` format (Libri-light / ZeroSpeech 2021) read, written
and made from frame alignments, and the frames of every item cut out of an utterance's features.
"""

import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cpcspeech.errors import CPCSpeechError
from cpcspeech.files import read_text, write_text_atomic
from cpcspeech.io.alignments import FRAME_SHIFT_SECONDS, Alignment
from cpcspeech.runtime import progress_bar

ITEM_HEADER = "#file onset offset #phone prev-phone next-phone speaker"
NON_SPEECH = frozenset({"SIL", "SPN"})


# ----- item files -----


@dataclass
class Items:
    """ABX tokens: one phone occurrence each, in the ``.item`` format's columns.

    Attributes: parallel lists of length N; ``onsets`` and ``offsets`` are seconds from the start
    of ``files[i]`` (an utterance id); ``prev`` / ``next`` are the neighbouring phones that make
    the token's context.
    """

    files: list[str]
    onsets: list[float]
    offsets: list[float]
    phones: list[str]
    prev: list[str]
    next: list[str]
    speakers: list[str]
    reversed_rows: list[str] = field(default_factory=list)  # "path:line" of onset > offset rows

    def __len__(self) -> int:
        return len(self.files)

    def warnings(self) -> list[str]:
        """What reading left out, for the user: rows whose onset is after their offset."""
        if not self.reversed_rows:
            return []
        return [
            f"{len(self.reversed_rows)} item(s) with onset > offset left out (first: "
            f"{self.reversed_rows[0]})"
        ]

    def rows(self) -> Iterable[tuple]:
        return zip(
            self.files, self.onsets, self.offsets, self.phones, self.prev, self.next,
            self.speakers, strict=True,
        )  # fmt: skip


def read_item_file(path: str | os.PathLike) -> Items:
    """Read a Libri-light / ZeroSpeech ``.item`` file (a header line, then
    ``file onset offset phone prev-phone next-phone speaker`` per line).

    Times must be finite seconds >= 0; rows whose onset is after their offset are left out and
    listed in ``Items.reversed_rows`` (reported by the ABX result), not dropped silently.
    """
    path = Path(path)
    if not path.is_file():
        raise CPCSpeechError(f"{path}: expected an ABX .item file, found none")
    columns: list[list] = [[] for _ in range(7)]
    reversed_rows = []
    lines = read_text(path, CPCSpeechError).splitlines()
    for line_no, line in enumerate(lines[1:], 2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 7 or not (_is_time(parts[1]) and _is_time(parts[2])):
            raise CPCSpeechError(
                f"{path}:{line_no}: expected 'file onset offset phone prev next speaker' with "
                f"finite times >= 0, found {line.strip()[:80]!r}"
            )
        if float(parts[1]) > float(parts[2]):
            reversed_rows.append(f"{path}:{line_no}: {line.strip()[:60]!r}")
            continue
        for column, value in zip(columns, parts, strict=True):
            column.append(value)
    if not columns[0]:
        raise CPCSpeechError(
            f"{path}: expected ABX items after the header, found none"
            + (f" ({len(reversed_rows)} with onset > offset)" if reversed_rows else "")
        )
    files, onsets, offsets, phones, prev, nxt, speakers = columns
    return Items(
        files, [float(x) for x in onsets], [float(x) for x in offsets], phones, prev, nxt,
        speakers, reversed_rows,
    )  # fmt: skip


def write_item_file(items: Items, path: str | os.PathLike) -> None:
    """Write ``items`` in the ``.item`` format (atomically)."""
    lines = [ITEM_HEADER]
    for file, onset, offset, phone, prev, nxt, speaker in items.rows():
        lines.append(f"{file} {onset:.4f} {offset:.4f} {phone} {prev} {nxt} {speaker}")
    write_text_atomic(path, "\n".join(lines) + "\n")


def items_from_alignment(
    alignment: Alignment,
    speakers: Mapping[str, str],
    utterance_ids: Sequence[str] | None = None,
    skip: Iterable[str] = NON_SPEECH,
) -> Items:
    """One ABX token per phone segment of a frame alignment.

    A segment is a run of equal frame labels; frames [s, e) give onset ``s * 0.01`` and offset
    ``e * 0.01`` seconds. The context is the labels of the neighbouring segments. Segments whose
    phone is silence or noise (``skip``) are left out, as are the first and last segment of an
    utterance (they have no neighbour on one side); a neighbour may be silence.

    Args:
        alignment: per-frame labels (any format :func:`cpcspeech.alignments.read_alignment`
            reads); names come from ``alignment.phones``.
        speakers: utterance id -> speaker.
        utterance_ids: which utterances, in this order (default: all, sorted).
    """
    skip = set(skip)
    ids = sorted(alignment.labels) if utterance_ids is None else list(utterance_ids)
    items = Items([], [], [], [], [], [], [])
    for utt in ids:
        if utt not in alignment:
            raise CPCSpeechError(f"ABX items: expected labels for utterance {utt}, found none")
        labels = np.asarray(alignment[utt])
        if len(labels) == 0:
            continue
        change = np.flatnonzero(np.diff(labels)) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [len(labels)]])
        names = [alignment.phones[int(labels[s])] for s in starts]
        for k in range(1, len(starts) - 1):
            if names[k] in skip:
                continue
            items.files.append(utt)
            items.onsets.append(round(starts[k] * FRAME_SHIFT_SECONDS, 4))
            items.offsets.append(round(ends[k] * FRAME_SHIFT_SECONDS, 4))
            items.phones.append(names[k])
            items.prev.append(names[k - 1])
            items.next.append(names[k + 1])
            items.speakers.append(speakers[utt])
    return items


# ----- tokens: the frames of every item -----


@dataclass
class Tokens:
    """The frames of N ABX tokens, back to back, with integer ids of their labels.

    Attributes:
        frames: (F, D) float32, token i at rows starts[i] : starts[i] + lengths[i].
        starts, lengths: (N,) int64.
        context, phone, speaker: (N,) int64 ids into ``names["context"]`` etc.
    """

    frames: Tensor
    starts: Tensor
    lengths: Tensor
    context: np.ndarray
    phone: np.ndarray
    speaker: np.ndarray
    names: dict[str, list[str]]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.lengths)


def token_frames(onset: float, offset: float, num_frames: int, rate: float) -> tuple[int, int]:
    """Frames [start, end) of a token, by Libri-light's rule (CPC_audio ``ABXFeatureLoader``):
    start = ceil(rate * onset - 0.5), end = floor(rate * offset - 0.5), clipped to the
    utterance. With 10 ms frames a segment of frames [s, e) keeps frames s .. e - 2."""
    start = max(0, math.ceil(rate * onset - 0.5))
    end = min(num_frames, math.floor(rate * offset - 0.5))
    return start, end


def collect_tokens(
    items: Items,
    features: Callable[[str], np.ndarray],
    file_order: Sequence[str],
    rate: float = 1.0 / FRAME_SHIFT_SECONDS,
    progress: bool = False,
) -> Tokens:
    """Cut every item's frames out of its file's features.

    Files are visited in ``file_order`` and items of one file in item-file order (the order
    Libri-light uses, which fixes DTW's tie-breaking). Items whose frames are empty after
    :func:`token_frames` are skipped and counted.

    Args:
        features: file id -> (T, D) features at ``rate`` frames per second.
    """
    by_file: dict[str, list[int]] = defaultdict(list)
    for i, file in enumerate(items.files):
        by_file[file].append(i)
    missing = sorted(set(by_file) - set(file_order))
    if missing:
        raise CPCSpeechError(
            f"ABX: expected audio or features for every item file id, found none for "
            f"{len(missing)}, e.g. {missing[:5]}"
        )
    chunks, lengths, keep = [], [], []
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task("ABX features", total=len(by_file))
        for file in file_order:
            if file not in by_file:
                continue
            feats = np.asarray(features(file), dtype=np.float32)  # (T, D)
            for i in by_file[file]:
                start, end = token_frames(items.onsets[i], items.offsets[i], len(feats), rate)
                if start >= len(feats) or end <= start:
                    continue
                chunks.append(feats[start:end])
                lengths.append(end - start)
                keep.append(i)
            bar.advance(task)
    if not keep:
        raise CPCSpeechError("ABX: expected items with at least one frame, found none")
    names: dict[str, list[str]] = {}
    ids = {}
    for key, column in (
        ("context", [f"{items.prev[i]}+{items.next[i]}" for i in keep]),
        ("phone", [items.phones[i] for i in keep]),
        ("speaker", [items.speakers[i] for i in keep]),
    ):
        names[key], ids[key] = _factorize(column)
    lengths_t = torch.tensor(lengths, dtype=torch.int64)
    return Tokens(
        frames=torch.from_numpy(np.concatenate(chunks)),
        starts=torch.cumsum(lengths_t, 0) - lengths_t,
        lengths=lengths_t,
        context=ids["context"],
        phone=ids["phone"],
        speaker=ids["speaker"],
        names=names,
        skipped=len(items) - len(keep),
    )


# ----- helpers -----


def _factorize(values: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Names in order of first appearance and (N,) int64 ids."""
    index: dict[str, int] = {}
    ids = np.asarray([index.setdefault(v, len(index)) for v in values], dtype=np.int64)
    return list(index), ids


def _is_time(text: str) -> bool:
    """A finite number of seconds >= 0 (``inf``, ``nan`` and negative times are not)."""
    try:
        return 0 <= float(text) < math.inf
    except ValueError:
        return False
