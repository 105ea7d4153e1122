"""Distances between ABX tokens: per-frame distances (angular, euclidean, KL) and the
path-length-normalised DTW of Libri-light, batched in torch over many token pairs at once.
"""

import math

import numpy as np
import torch
from torch import Tensor

from cpcspeech.errors import CPCSpeechError
from cpcspeech.eval.items import Tokens
from cpcspeech.runtime import progress_bar

DISTANCES = ("angular", "euclidean", "kl")
KL_EPSILON = 1e-6  # smoothing of KL's distributions, so one-hot units give finite distances


def prepare_frames(frames: Tensor, distance: str) -> Tensor:
    """Per-frame transform before :func:`frame_distances`: unit length for "angular" (zero rows
    stay zero), smoothed and normalised distributions for "kl", unchanged for "euclidean"."""
    check_distance(distance)
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
    with progress_bar(enabled=progress) as bar:
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


def check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise CPCSpeechError(
            f"ABX distance: expected one of {', '.join(DISTANCES)}, found {distance!r}"
        )
