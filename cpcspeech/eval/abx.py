"""Triphone ABX phone discriminability (Schatz et al. 2013, as scored by Libri-light and
ZeroSpeech 2021): item files, DTW-aligned frame distances in batched torch, within- and
across-speaker error averaged over contexts, then speakers, then phone pairs.
"""

import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cpcspeech.errors import CPCSpeechError
from cpcspeech.eval.features import FeatureSource, load_feature_source, progress_bar
from cpcspeech.files import write_text_atomic
from cpcspeech.io.alignments import (
    FRAME_SHIFT_SECONDS,
    Alignment,
    detect_format,
    label_frames,
    read_alignment,
)
from cpcspeech.io.audio import audio_info
from cpcspeech.io.corpus import Utterance, find_utterances

DISTANCES = ("angular", "euclidean", "kl")
MODES = ("within", "across")
ITEM_HEADER = "#file onset offset #phone prev-phone next-phone speaker"
NON_SPEECH = frozenset({"SIL", "SPN"})
KL_EPSILON = 1e-6  # smoothing of KL's distributions, so one-hot units give finite distances


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

    def __len__(self) -> int:
        return len(self.files)

    def rows(self) -> Iterable[tuple]:
        return zip(
            self.files, self.onsets, self.offsets, self.phones, self.prev, self.next,
            self.speakers, strict=True,
        )  # fmt: skip


def read_item_file(path: str | os.PathLike) -> Items:
    """Read a Libri-light / ZeroSpeech ``.item`` file (a header line, then
    ``file onset offset phone prev-phone next-phone speaker`` per line)."""
    path = Path(path)
    if not path.is_file():
        raise CPCSpeechError(f"{path}: expected an ABX .item file, found none")
    columns: list[list] = [[] for _ in range(7)]
    lines = path.read_text(encoding="utf-8").splitlines()
    for line_no, line in enumerate(lines[1:], 2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 7 or not (_is_float(parts[1]) and _is_float(parts[2])):
            raise CPCSpeechError(
                f"{path}:{line_no}: expected 'file onset offset phone prev next speaker', "
                f"found {line.strip()[:80]!r}"
            )
        for column, value in zip(columns, parts, strict=True):
            column.append(value)
    if not columns[0]:
        raise CPCSpeechError(f"{path}: expected ABX items after the header, found none")
    files, onsets, offsets, phones, prev, nxt, speakers = columns
    return Items(
        files, [float(x) for x in onsets], [float(x) for x in offsets], phones, prev, nxt, speakers
    )


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
    with progress_bar(progress) as bar:
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


# ----- frame distances and DTW -----


def prepare_frames(frames: Tensor, distance: str) -> Tensor:
    """Per-frame transform before :func:`frame_distances`: unit length for "angular" (zero rows
    stay zero), smoothed and normalised distributions for "kl", unchanged for "euclidean"."""
    _check_distance(distance)
    frames = frames.float()
    if distance == "angular":
        norm = frames.norm(dim=-1, keepdim=True)
        return torch.where(norm > 0, frames / norm.clamp_min(1e-30), torch.zeros_like(frames))
    if distance == "kl":
        if (frames < 0).any():
            raise CPCSpeechError(
                "KL distance: expected non-negative features (probabilities or one-hot units), "
                f"found a minimum of {frames.min().item():.3g}"
            )
        smoothed = frames + KL_EPSILON
        return smoothed / smoothed.sum(-1, keepdim=True)
    return frames


def frame_distances(x: Tensor, y: Tensor, distance: str) -> Tensor:
    """Distances between every frame of x and every frame of y, pair by pair.

    Args:
        x: (B, Lx, D), y: (B, Ly, D), both from :func:`prepare_frames`.

    Returns:
        (B, Lx, Ly) float32. "angular": arccos of the cosine / pi, in [0, 1] (a zero vector is at
        distance 1 from any other vector and 0 from another zero vector, as in Libri-light);
        "euclidean": L2; "kl": KL(x_t || y_s).
    """
    if distance == "angular":
        dot = torch.bmm(x, y.transpose(1, 2))  # (B, Lx, Ly)
        x_zero = (x == 0).all(-1)[:, :, None]
        y_zero = (y == 0).all(-1)[:, None, :]
        dot = torch.where(x_zero | y_zero, torch.where(x_zero & y_zero, 1.0, -1.0), dot)
        return torch.acos(dot.clamp(-1.0, 1.0)) / math.pi
    if distance == "euclidean":
        return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
    entropy = (x * x.log()).sum(-1)  # (B, Lx)
    return (entropy[:, :, None] - torch.bmm(x, y.log().transpose(1, 2))).clamp_min(0.0)


def dtw(distances: Tensor, x_lengths: Tensor, y_lengths: Tensor) -> Tensor:
    """Path-length-normalised DTW cost of a batch of frame-distance matrices.

    The recursion is cost[i, j] = d[i, j] + min(cost[i-1, j], cost[i-1, j-1], cost[i, j-1]);
    the result is cost[n-1, m-1] divided by the number of cells on the optimal path, where ties
    prefer the diagonal step, then the one along y (Libri-light's backtracking rule). Anti-
    diagonals are computed in one step each, so the loop runs Lx + Ly - 1 times per batch.

    Args:
        distances: (B, Lx, Ly) float32; pair b uses [:x_lengths[b], :y_lengths[b]].
        x_lengths, y_lengths: (B,) int64, each >= 1.

    Returns:
        (B,) float32.
    """
    batch, rows, cols = distances.shape
    # Padded by one row and column of +inf so the borders need no special case.
    cost = torch.full((batch, rows + 1, cols + 1), float("inf"), dtype=distances.dtype)
    length = torch.zeros((batch, rows + 1, cols + 1), dtype=torch.int64)
    cost[:, 1, 1] = distances[:, 0, 0]
    length[:, 1, 1] = 1
    for k in range(1, rows + cols - 1):
        i = torch.arange(max(0, k - cols + 1), min(k, rows - 1) + 1)
        j = k - i
        i1, j1 = i + 1, j + 1  # positions in the padded tables
        up, diag, left = cost[:, i, j1], cost[:, i, j], cost[:, i1, j]
        take_diag = (diag <= left) & (diag <= up)
        take_left = ~take_diag & (left <= up)
        best = torch.where(take_diag, diag, torch.where(take_left, left, up))
        best_length = torch.where(
            take_diag,
            length[:, i, j],
            torch.where(take_left, length[:, i1, j], length[:, i, j1]),
        )
        cost[:, i1, j1] = distances[:, i, j] + best
        length[:, i1, j1] = best_length + 1
    index = torch.arange(batch)
    return cost[index, x_lengths, y_lengths] / length[index, x_lengths, y_lengths]


def pair_distances(
    tokens: Tokens,
    firsts: Tensor,
    seconds: Tensor,
    distance: str,
    max_cells: int = 2_000_000,
    progress: bool = False,
) -> Tensor:
    """DTW distance between token firsts[p] (rows) and token seconds[p] (columns) for every p.

    Pairs are grouped by the length of their first token and cut into batches of at most
    ``max_cells`` padded distance cells, so padding, memory and DTW steps stay small.

    Returns:
        (P,) float32, in the order of the inputs.
    """
    frames = prepare_frames(tokens.frames, distance)
    lx, ly = tokens.lengths[firsts], tokens.lengths[seconds]
    order = torch.from_numpy(np.lexsort((ly.numpy(), lx.numpy())))
    out = torch.empty(len(firsts), dtype=torch.float32)
    sorted_lx = lx[order]
    bounds = torch.searchsorted(sorted_lx, torch.unique(sorted_lx), right=True).tolist()
    with progress_bar(progress) as bar:
        task = bar.add_task("ABX DTW pairs", total=len(firsts))
        start = 0
        for end in bounds:  # all pairs whose first token has one length
            group = order[start:end]
            rows, cols = int(lx[group[0]]), int(ly[group].max())
            batch_size = max(1, max_cells // ((rows + 1) * (cols + 1)))
            for offset in range(0, len(group), batch_size):
                batch = group[offset : offset + batch_size]
                x = _gather(frames, tokens.starts[firsts[batch]], lx[batch])  # (B, Lx, D)
                y = _gather(frames, tokens.starts[seconds[batch]], ly[batch])  # (B, Ly, D)
                out[batch] = dtw(frame_distances(x, y, distance), lx[batch], ly[batch])
                bar.advance(task, len(batch))
            start = end
    return out


def _gather(frames: Tensor, starts: Tensor, lengths: Tensor) -> Tensor:
    """(B, max(lengths), D) zero-padded token frames."""
    width = int(lengths.max())
    offsets = torch.arange(width)
    index = starts[:, None] + offsets[None, :]  # (B, W)
    valid = offsets[None, :] < lengths[:, None]
    out = frames[index.clamp_max(len(frames) - 1)]
    return out * valid[:, :, None]


# ----- scores -----


@dataclass
class ABXScore:
    """Within- or across-speaker ABX error (0 = perfect, 0.5 = chance), with its counts."""

    mode: str
    error: float
    n_phone_pairs: int
    n_cells: int


def abx_errors(
    tokens: Tokens,
    distance: str = "angular",
    modes: Sequence[str] = MODES,
    max_per_group: int = 10,
    max_x_speakers: int = 5,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, ABXScore]:
    """Triphone ABX error of ``tokens``.

    A and X share a phone, B has another phone, all three share the context (previous and next
    phone). Within: A, B and X from one speaker (X another token of A's cell). Across: A and B
    from one speaker, X from another speaker. For each cell (context, speaker, phone a, phone b,
    [X's speaker]) the score is the fraction of (a, b, x) triples with d(a, x) > d(b, x), ties
    counted 1/2; it is averaged over contexts (and X speakers), then speakers, then phone pairs.

    As in Libri-light, a (context, speaker, phone) cell uses at most ``max_per_group`` tokens and
    an across cell at most ``max_x_speakers`` X speakers; the random choice is made once, from
    ``seed``. Only the token pairs that some cell compares go through DTW, so the cost grows
    with the number of cells, not with the square of a context's size.

    Returns:
        mode -> ABXScore.
    """
    for mode in modes:
        if mode not in MODES:
            raise CPCSpeechError(f"ABX mode: expected within or across, found {mode!r}")
    _check_distance(distance)
    rng = np.random.default_rng(seed)
    cells = _plan_cells(tokens, _subsample(tokens, max_per_group, rng), modes, max_x_speakers, rng)
    if not cells:
        return {mode: ABXScore(mode, float("nan"), 0, 0) for mode in modes}
    # Every requested (rows token, columns token) pair, as one int64 key, computed once.
    n = len(tokens)
    requests = np.concatenate([key.ravel() for cell in cells for key in (cell.xa, cell.xb)])
    unique, inverse = np.unique(requests, return_inverse=True)
    firsts, seconds = torch.from_numpy(unique // n), torch.from_numpy(unique % n)
    found = pair_distances(tokens, firsts, seconds, distance, progress=progress).numpy()[inverse]
    errors: dict[str, dict[tuple, list[float]]] = {mode: defaultdict(list) for mode in modes}
    start = 0
    for cell in cells:
        d_xa = found[start : start + cell.xa.size].reshape(cell.xa.shape)
        start += cell.xa.size
        d_xb = found[start : start + cell.xb.size].reshape(cell.xb.shape)
        start += cell.xb.size
        errors[cell.mode][cell.key].append(_cell_error(d_xa, d_xb, cell.mode == "within"))
    return {mode: _average(mode, errors[mode]) for mode in modes}


@dataclass
class _Cell:
    """One (speaker, phone a, phone b) comparison in one context (and X speaker for across).

    xa: (Nx, Na) and xb: (Nx, Nb) int64 pair keys (rows token * N + columns token).
    """

    mode: str
    key: tuple[int, int, int]
    xa: np.ndarray
    xb: np.ndarray


def _subsample(tokens: Tokens, max_per_group: int, rng: np.random.Generator) -> np.ndarray:
    """Token indices kept: at most ``max_per_group`` per (context, speaker, phone), in order."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, key in enumerate(zip(tokens.context, tokens.speaker, tokens.phone, strict=True)):
        groups[key].append(i)
    keep = []
    for members in groups.values():
        if len(members) > max_per_group:
            members = sorted(rng.choice(members, size=max_per_group, replace=False).tolist())
        keep.extend(members)
    return np.sort(np.asarray(keep, dtype=np.int64))


def _plan_cells(
    tokens: Tokens,
    keep: np.ndarray,
    modes: Sequence[str],
    max_x_speakers: int,
    rng: np.random.Generator,
) -> list[_Cell]:
    """Every within and across cell, with the token pairs it compares.

    Within-speaker A-X distances put the earlier token in rows, as Libri-light's symmetric
    computation does; X is always in rows otherwise.
    """
    n = len(tokens)
    groups: dict[int, dict[tuple[int, int], list[int]]] = defaultdict(lambda: defaultdict(list))
    for i in keep.tolist():
        groups[int(tokens.context[i])][(int(tokens.speaker[i]), int(tokens.phone[i]))].append(i)
    cells = []
    for c in sorted(groups):
        local = {key: np.asarray(members) for key, members in groups[c].items()}
        by_speaker: dict[int, list[int]] = defaultdict(list)
        for s, phone in sorted(local):
            by_speaker[s].append(phone)
        for s, phones in by_speaker.items():
            if len(phones) < 2:
                continue
            for a in phones:
                group_a = local[(s, a)]
                if "within" in modes and len(group_a) > 1:
                    low = np.minimum.outer(group_a, group_a)
                    high = np.maximum.outer(group_a, group_a)
                    for b in phones:
                        if b != a:
                            xb = group_a[:, None] * n + local[(s, b)][None, :]
                            cells.append(_Cell("within", (s, a, b), low * n + high, xb))
                if "across" in modes:
                    others = [key for key in local if key[1] == a and key[0] != s]
                    if len(others) > max_x_speakers:
                        pick = rng.choice(len(others), size=max_x_speakers, replace=False)
                        others = [others[i] for i in sorted(pick)]
                    for key_x in others:
                        group_x = local[key_x]
                        xa = group_x[:, None] * n + group_a[None, :]
                        for b in phones:
                            if b != a:
                                xb = group_x[:, None] * n + local[(s, b)][None, :]
                                cells.append(_Cell("across", (s, a, b), xa, xb))
    return cells


def _cell_error(d_xa: np.ndarray, d_xb: np.ndarray, within: bool) -> float:
    """1 - P(d(x, a) < d(x, b)) over the cell's (x, a, b) triples, ties counted 1/2.

    d_xa: (Nx, Na); d_xb: (Nx, Nb). ``within``: X is A itself, so a == x is left out.
    """
    better = (d_xa[:, :, None] < d_xb[:, None, :]).astype(np.float64)
    ties = (d_xa[:, :, None] == d_xb[:, None, :]).astype(np.float64)
    score = better + 0.5 * ties  # (Nx, Na, Nb)
    if not within:
        return 1.0 - float(score.mean())
    na = d_xa.shape[0]
    score[np.arange(na), np.arange(na)] = 0.0
    return 1.0 - float(score.sum()) / (na * (na - 1) * d_xb.shape[1])


def _average(mode: str, cells: dict[tuple, list[float]]) -> ABXScore:
    """Mean over contexts (and X speakers) per (speaker, a, b), then over speakers per (a, b),
    then over phone pairs."""
    per_pair: dict[tuple, list[float]] = defaultdict(list)
    for (_, a, b), errors in cells.items():
        per_pair[(a, b)].append(float(np.mean(errors)))
    if not per_pair:
        return ABXScore(mode, float("nan"), 0, 0)
    error = float(np.mean([np.mean(v) for v in per_pair.values()]))
    return ABXScore(mode, error, len(per_pair), sum(len(v) for v in cells.values()))


# ----- the command -----


@dataclass
class ABXResult:
    """One row of the ABX table."""

    method: str
    model: str
    distance: str
    within: float
    across: float
    n_items: int
    n_tokens: int
    n_utterances: int
    seconds: float
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_abx_items(
    data: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    item_file: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
    label_format: str | None = None,
    phones: str | os.PathLike | None = None,
) -> tuple[list[Utterance], Items]:
    """The utterances to score (``test_list``, default ``test_split.txt`` in ``data`` when it
    exists, else all) and their items (read from ``item_file`` or made from ``labels``)."""
    root = Path(data)
    if test_list is None and (root / "test_split.txt").is_file():
        test_list = root / "test_split.txt"
    utterances = find_utterances(root, test_list)
    if item_file is not None:
        items = read_item_file(item_file)
        wanted = set(items.files)
        chosen = [u for u in utterances if u.utt_id in wanted or Path(u.path).stem in wanted]
        return chosen, items
    if labels is None:
        raise CPCSpeechError("ABX: expected phone labels (--labels) or an --item file, found none")
    fmt = label_format or detect_format(labels)
    num_frames = None
    if fmt in ("ctm", "textgrid"):
        num_frames = {u.utt_id: label_frames(audio_info(u.path).num_samples) for u in utterances}
    alignment = read_alignment(labels, fmt, phones=phones, num_frames=num_frames)
    speakers = {u.utt_id: u.speaker for u in utterances}
    ids = [u.utt_id for u in utterances]
    return utterances, items_from_alignment(alignment, speakers, ids)


def score_source(
    source: FeatureSource,
    utterances: Sequence[Utterance],
    items: Items,
    method: str,
    distance: str = "angular",
    max_per_group: int = 10,
    max_x_speakers: int = 5,
    seed: int = 0,
    progress: bool = True,
) -> ABXResult:
    """Features of ``utterances`` from ``source``, then within and across ABX error."""
    started = time.perf_counter()
    wanted = set(items.files)
    by_key: dict[str, Utterance] = {}  # item file id (utterance id or audio stem) -> utterance
    for u in utterances:
        key = u.utt_id if u.utt_id in wanted else Path(u.path).stem
        if key in wanted:
            by_key.setdefault(key, u)
    tokens = collect_tokens(
        items,
        lambda key: source.utterance_features(by_key[key]),
        list(by_key),
        progress=progress,
    )
    extracted = time.perf_counter()
    scores = abx_errors(
        tokens, distance, MODES, max_per_group, max_x_speakers, seed, progress=progress
    )
    return ABXResult(
        method=method,
        model=source.name,
        distance=distance,
        within=scores["within"].error,
        across=scores["across"].error,
        n_items=len(items),
        n_tokens=len(tokens),
        n_utterances=len(by_key),
        seconds=time.perf_counter() - started,
        details={
            "feature_seconds": extracted - started,
            "scoring_seconds": time.perf_counter() - extracted,
            "skipped_items": tokens.skipped,
            "within_phone_pairs": scores["within"].n_phone_pairs,
            "across_phone_pairs": scores["across"].n_phone_pairs,
            "within_cells": scores["within"].n_cells,
            "across_cells": scores["across"].n_cells,
            "max_per_group": max_per_group,
            "max_x_speakers": max_x_speakers,
            "seed": seed,
            "features": f"{source.dim}-d",
        },
    )


def run_abx(
    data: str | os.PathLike,
    model_specs: Sequence[str],
    labels: str | os.PathLike | None = None,
    item_file: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
    label_format: str | None = None,
    phones: str | os.PathLike | None = None,
    layer: str = "c",
    distance: str = "angular",
    max_per_group: int = 10,
    max_x_speakers: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[list[ABXResult], str]:
    """ABX within and across speakers for each of ``model_specs`` ("mfcc", "random", a model,
    a folder of ``.npy``).

    With ``out_dir``: writes ``abx.item`` (when made from labels), ``abx.json`` and ``abx.md``
    atomically.

    Returns:
        the results and the markdown table.
    """
    _check_distance(distance)
    utterances, items = resolve_abx_items(data, labels, item_file, test_list, label_format, phones)
    results = []
    for spec in model_specs:
        source = load_feature_source(spec, layer=layer, seed=seed, device=device)
        results.append(
            score_source(
                source,
                utterances,
                items,
                method_name(spec),
                distance,
                max_per_group,
                max_x_speakers,
                seed,
                progress,
            )  # fmt: skip
        )
    table = format_abx_table(results)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if item_file is None:
            write_item_file(items, out / "abx.item")
        write_text_atomic(out / "abx.md", table)
        payload = {
            "data": str(data),
            "labels": None if labels is None else str(labels),
            "item_file": str(item_file) if item_file else str(out / "abx.item"),
            "results": [r.to_dict() for r in results],
        }
        write_text_atomic(out / "abx.json", json.dumps(payload, indent=2) + "\n")
    return results, table


def format_abx_table(results: Sequence[ABXResult]) -> str:
    """Markdown: Method | ABX within | ABX across (error, %; lower is better)."""
    lines = ["| Method | ABX within (%) | ABX across (%) |", "|---|---|---|"]
    for r in results:
        lines.append(f"| {r.method} | {100 * r.within:.2f} | {100 * r.across:.2f} |")
    return "\n".join(lines) + "\n"


def method_name(spec: str) -> str:
    if spec == "random":
        return "Random initialization"
    if spec == "mfcc":
        return "MFCC features"
    return f"CPC ({spec})"


# ----- helpers -----


def _check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise CPCSpeechError(
            f"ABX distance: expected one of {', '.join(DISTANCES)}, found {distance!r}"
        )


def _factorize(values: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Names in order of first appearance and (N,) int64 ids."""
    index: dict[str, int] = {}
    ids = np.asarray([index.setdefault(v, len(index)) for v in values], dtype=np.int64)
    return list(index), ids


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
