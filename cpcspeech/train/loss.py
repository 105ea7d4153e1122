"""InfoNCE (van den Oord et al. 2018, section 2.3): a predictor of z_{t+k} for each step k = 1..K
(the paper's linear W_k, or a small MLP / a causal attention layer as options).

``sample_negatives`` draws the contrastive negatives (paper Table 2 modes) and stands alone.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cpcspeech.config import LossConfig
from cpcspeech.errors import CPCSpeechError

NEGATIVE_MODES = ("mixed", "same_speaker", "mixed_other_seq", "same_speaker_other_seq", "same_seq")
# the negative modes that draw by speaker, so need speaker labels (not eval.probes.SPEAKER_MODES)
NEGATIVE_MODES_NEEDING_SPEAKERS = ("same_speaker", "same_speaker_other_seq")


class NegativeSamplingError(CPCSpeechError, ValueError):
    """A negative mode cannot be satisfied by this batch (e.g. a speaker with a single window)."""


@dataclass
class Negatives:
    """Negatives drawn for every anchor frame (b, t); ``N = num_negatives``.

    vectors: (B, T, N, D) the frames z[batch_index, time_index].
    batch_index: (B, T, N) int64 window b' of each negative.
    time_index: (B, T, N) int64 frame t' of each negative.
    """

    vectors: Tensor
    batch_index: Tensor
    time_index: Tensor


@dataclass
class InfoNCEOutput:
    """loss: () mean over k of the per-step cross-entropy; loss_per_step: (K,);
    accuracy: (K,) fraction of (b, t) whose positive scores strictly highest (ties are wrong)."""

    loss: Tensor
    loss_per_step: Tensor
    accuracy: Tensor


def allowed_windows(batch_size: int, mode: str, speakers: Tensor | None, device=None) -> Tensor:
    """Which windows b' may give negatives to anchor window b.

    Args:
        batch_size: B.
        mode: one of NEGATIVE_MODES.
        speakers: (B,) int64 speaker ids; required for the speaker modes.

    Returns:
        (B, B) bool, row b = windows allowed for anchors in window b.
    """
    if mode not in NEGATIVE_MODES:
        raise NegativeSamplingError(
            f"negative mode must be one of {list(NEGATIVE_MODES)}; found {mode!r}"
        )
    eye = torch.eye(batch_size, dtype=torch.bool, device=device)
    if mode == "mixed":
        return torch.ones(batch_size, batch_size, dtype=torch.bool, device=device)
    if mode == "mixed_other_seq":
        return ~eye
    if mode == "same_seq":
        return eye
    if speakers is None:
        raise NegativeSamplingError(
            f"negative mode {mode!r} needs speakers: expected a (B,) = ({batch_size},) tensor of "
            "speaker ids, found None"
        )
    if speakers.shape != (batch_size,):
        raise NegativeSamplingError(
            f"speakers: expected shape ({batch_size},), found {tuple(speakers.shape)}"
        )
    speakers = speakers.to(device)
    same = speakers[:, None] == speakers[None, :]  # (B, B)
    return same if mode == "same_speaker" else same & ~eye


def sample_negatives(
    z: Tensor,
    num_negatives: int,
    mode: str,
    speakers: Tensor | None = None,
    generator: torch.Generator | None = None,
    window: int = 1,
) -> Negatives:
    """Draw ``num_negatives`` negatives for every anchor frame (b, t), uniformly with replacement.

    The pool of anchor (b, t) is every frame of the windows that ``mode`` allows for window b
    (see ``allowed_windows``), minus the positives (b, t+1) .. (b, t+window): the same negatives
    are shared by all prediction steps k = 1..window of that anchor (as CPC_audio does), and a
    negative must never be the positive z_{t+k} of any of them. The exclusion is by index, not
    by value: two distinct frames with equal vectors (e.g. digital silence) are kept, since they
    are different samples of the data distribution. Sampling is exactly uniform over the pool:
    a draw r in [0, |pool|) is shifted past the excluded run, so nothing is resampled or masked
    and every anchor always gets exactly N negatives. The price of sharing (one draw of
    (B, T, N) instead of K draws, K times less gather memory): for step k, the frames
    t+j (j != k, j <= window) are never negatives either; with T = 128 that is at most 11 of the
    pool's frames, and it only matters in "same_seq".

    Args:
        z: (B, T, D) encoder outputs.
        num_negatives: N >= 1.
        mode: "mixed", "same_speaker", "mixed_other_seq", "same_speaker_other_seq", "same_seq".
        speakers: (B,) int64 speaker id of each window; required for the speaker modes.
        generator: optional torch.Generator on z's device, for reproducible draws.
        window: K, the number of future steps sharing these negatives (>= 0).

    Returns:
        Negatives with vectors (B, T, N, D), batch_index (B, T, N), time_index (B, T, N).

    Raises:
        NegativeSamplingError: the mode is unknown, needs speakers that are missing, or leaves
            some anchor with an empty pool (e.g. a speaker with one window in
            "same_speaker_other_seq", or B = 1 in "mixed_other_seq").
    """
    if z.dim() != 3:
        raise ValueError(f"Expected z of shape (B, T, D). Found: {tuple(z.shape)}")
    batch_size, num_frames, _ = z.shape
    batch_index, time_index = sample_negative_indices(
        batch_size, num_frames, num_negatives, mode, speakers, generator, window, z.device
    )
    vectors = z[batch_index, time_index]  # (B, T, N, D)
    return Negatives(vectors=vectors, batch_index=batch_index, time_index=time_index)


def sample_negative_indices(
    batch_size: int,
    num_frames: int,
    num_negatives: int,
    mode: str,
    speakers: Tensor | None = None,
    generator: torch.Generator | None = None,
    window: int = 1,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """The indices of ``sample_negatives`` without gathering vectors (B = batch_size,
    T = num_frames): -> batch_index (B, T, N), time_index (B, T, N), int64 on ``device``."""
    if num_negatives < 1 or window < 0 or num_frames < 1:
        raise ValueError(
            "Expected num_negatives >= 1, window >= 0 and T >= 1. Found: "
            f"{num_negatives}, {window}, {num_frames}"
        )
    allowed = allowed_windows(batch_size, mode, speakers, device)  # (B, B)
    windows_per_anchor = allowed.sum(dim=1)  # (B,)
    if bool((windows_per_anchor == 0).any()):
        empty = torch.nonzero(windows_per_anchor == 0).flatten().tolist()
        detail = ""
        if speakers is not None and mode in NEGATIVE_MODES_NEEDING_SPEAKERS:
            detail = f" (speakers {speakers[empty].tolist()} have a single window in the batch)"
        raise NegativeSamplingError(
            f"negative mode {mode!r}: expected at least one window to draw negatives from for "
            f"every window; found none for window(s) {empty}{detail}"
        )
    # Allowed windows of each row first, in ascending order: pool item r of anchor window b is
    # frame r % T of window ordered[b, r // T].
    order_key = (~allowed).to(torch.int64) * batch_size + torch.arange(batch_size, device=device)
    ordered = torch.argsort(order_key, dim=1)  # (B, B)
    # Position of the anchor's own window in its ordered list (valid only where allowed).
    own_position = (
        allowed
        & (
            torch.arange(batch_size, device=device)[None, :]
            < torch.arange(batch_size, device=device)[:, None]
        )
    ).sum(dim=1)
    own_allowed = allowed.diagonal()  # (B,)

    time = torch.arange(num_frames, device=device)  # (T,)
    excluded = (num_frames - 1 - time).clamp(max=window)  # (T,) frames t+1..t+window that exist
    excluded = excluded[None, :] * own_allowed[:, None]  # (B, T)
    pool_size = windows_per_anchor[:, None] * num_frames - excluded  # (B, T)
    if bool((pool_size <= 0).any()):
        raise NegativeSamplingError(
            f"negative mode {mode!r}: expected a non-empty pool of frames for every anchor; "
            f"found an empty one with T = {num_frames} frames and window = {window}"
        )
    u = torch.rand(
        (batch_size, num_frames, num_negatives),
        generator=generator,
        device=device,
        dtype=torch.float64,
    )
    r = (u * pool_size[..., None]).floor().to(torch.int64)  # (B, T, N) in [0, pool)
    r = torch.minimum(r, pool_size[..., None] - 1)
    # Skip the excluded run: own window's frames t+1 .. t+excluded sit at
    # own_position*T + t + 1 .. in the ordered pool.
    start = own_position[:, None] * num_frames + time[None, :] + 1  # (B, T)
    r = r + (r >= start[..., None]).to(torch.int64) * excluded[..., None]
    position = r // num_frames
    time_index = r % num_frames  # (B, T, N)
    batch_index = torch.gather(ordered, 1, position.reshape(batch_size, -1)).reshape(
        batch_size, num_frames, num_negatives
    )  # (B, T, N)
    return batch_index, time_index


def info_nce_scores(
    predictions: Tensor, z: Tensor, batch_index: Tensor, time_index: Tensor
) -> Tensor:
    """Scores of every anchor, step and candidate; the positive is candidate 0.

    The positives z_{t+1..t+K} and the N shared negatives of anchor (b, t) are gathered in one
    index_select and scored with one batched matmul: (K, D) x (D, K + N) per anchor. The K x K
    block holds every step's positive; only its diagonal is kept (the off-diagonal entries are
    other steps' positives, which ``sample_negatives`` already keeps out of the negatives).

    Args:
        predictions: (B, T, K, D) W_k c_t for anchor t and step k = 1..K (index k - 1).
        z: (B, T, D) encoder outputs; the positive of (t, k) is z[:, t + k].
        batch_index: (B, T, N) window of each negative of anchor (b, t), shared by all k.
        time_index: (B, T, N) frame of each negative.

    Returns:
        (B, T, K, 1 + N) dot products, positive first; rows with t + k >= T hold a meaningless
        positive (clamped to the last frame) and must be ignored (``info_nce_from_scores``).
    """
    batch_size, num_frames, num_steps, dim = predictions.shape
    num_negatives = batch_index.shape[-1]
    device = z.device
    time = torch.arange(num_frames, device=device)
    steps = torch.arange(1, num_steps + 1, device=device)
    positive_time = (time[:, None] + steps[None, :]).clamp(max=num_frames - 1)  # (T, K)
    batch_offset = torch.arange(batch_size, device=device)[:, None, None] * num_frames
    positive_index = batch_offset + positive_time[None]  # (B, T, K) rows of z flattened
    negative_index = batch_index * num_frames + time_index  # (B, T, N)
    index = torch.cat([positive_index, negative_index], dim=-1)  # (B, T, K + N)
    candidates = z.reshape(batch_size * num_frames, dim).index_select(0, index.reshape(-1))
    candidates = candidates.view(batch_size * num_frames, num_steps + num_negatives, dim)
    scores = torch.bmm(
        predictions.reshape(batch_size * num_frames, num_steps, dim), candidates.transpose(1, 2)
    )  # (B * T, K, K + N)
    positive_scores = scores[:, steps - 1, steps - 1]  # (B * T, K) diagonal: step k vs z_{t+k}
    scores = torch.cat([positive_scores.unsqueeze(-1), scores[:, :, num_steps:]], dim=-1)
    return scores.view(batch_size, num_frames, num_steps, 1 + num_negatives)


def info_nce_from_scores(scores: Tensor) -> InfoNCEOutput:
    """Cross-entropy over the 1 + N candidates (positive at index 0), averaged per step k.

    Args:
        scores: (B, T, K, 1 + N); row (b, t, k-1) is used only where t + k < T.

    Returns:
        InfoNCEOutput with loss (), loss_per_step (K,), accuracy (K,); step k averages over
        the B * (T - k) valid anchors, and the loss is the mean over k.
    """
    batch_size, num_frames, num_steps, _ = scores.shape
    scores = scores.float()
    # The softmax runs over the candidate axis only (dim=-1), never over batch or time.
    per_anchor = torch.logsumexp(scores, dim=-1) - scores[..., 0]  # (B, T, K)
    # Ties count as wrong: the positive must beat every negative strictly.
    correct = scores[..., 0] > scores[..., 1:].amax(dim=-1)  # (B, T, K)
    time = torch.arange(num_frames, device=scores.device)
    steps = torch.arange(1, num_steps + 1, device=scores.device)
    valid = (time[:, None] + steps[None, :]) < num_frames  # (T, K)
    count = valid.sum(dim=0).clamp(min=1) * batch_size  # (K,)
    loss_per_step = (per_anchor * valid).sum(dim=(0, 1)) / count
    accuracy = (correct & valid).sum(dim=(0, 1)).float() / count
    return InfoNCEOutput(
        loss=loss_per_step.mean(), loss_per_step=loss_per_step, accuracy=accuracy.detach()
    )


class MLPHeads(nn.Module):
    """K independent one-hidden-layer predictors c_t -> z_{t+k} (CPC_audio's "ffd"), batched.

    Layer 1 is one matmul for all k: (B, T, c_dim) -> (B, T, K, hidden), ReLU; layer 2 is a
    batched matmul per k: (B, T, K, hidden) -> (B, T, K, z_dim). Initialised as K nn.Linear pairs.
    """

    def __init__(self, steps: int, c_dim: int, hidden: int, z_dim: int) -> None:
        super().__init__()
        first = [nn.Linear(c_dim, hidden) for _ in range(steps)]
        second = [nn.Linear(hidden, z_dim) for _ in range(steps)]
        self.weight1 = nn.Parameter(torch.stack([m.weight.data for m in first]))  # (K, H, C)
        self.bias1 = nn.Parameter(torch.stack([m.bias.data for m in first]))  # (K, H)
        self.weight2 = nn.Parameter(torch.stack([m.weight.data for m in second]))  # (K, Z, H)
        self.bias2 = nn.Parameter(torch.stack([m.bias.data for m in second]))  # (K, Z)

    def forward(self, c: Tensor) -> Tensor:
        """c: (B, T, c_dim) -> (B, T, K, z_dim)."""
        steps, hidden, _ = self.weight1.shape
        h = F.linear(c, self.weight1.flatten(0, 1), self.bias1.flatten())  # (B, T, K * H)
        h = F.relu(h.unflatten(-1, (steps, hidden)))  # (B, T, K, H)
        return torch.einsum("btkh,kzh->btkz", h, self.weight2) + self.bias2


class CausalAttentionLayer(nn.Module):
    """One pre-norm transformer layer over c with a causal mask: position t attends to <= t.

    No positional encoding: c_t comes from a recurrent context network, which already orders
    the frames, and the causal mask keeps the prediction of z_{t+k} free of the future.
    c: (B, T, c_dim) -> (B, T, c_dim).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        heads = next(h for h in (8, 4, 2, 1) if dim % h == 0)
        self.layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=hidden, dropout=0.0, batch_first=True, norm_first=True
        )

    def forward(self, c: Tensor) -> Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(c.shape[1], device=c.device)
        return self.layer(c, src_mask=mask, is_causal=True)


class InfoNCE(nn.Module):
    """The CPC objective with prediction heads W_1..W_K (paper eq. 3-4).

    For each k, W_k c_t (t = 0..T-1-k) is scored by dot product against the positive z_{t+k}
    and N negatives; the loss is the cross-entropy with the positive at index 0, averaged over
    (b, t) per step and then over k.
    """

    def __init__(self, config: LossConfig, z_dim: int = 512, c_dim: int = 256) -> None:
        super().__init__()
        self.config = config
        self.z_dim = z_dim
        self.c_dim = c_dim
        steps = config.prediction_steps
        # The paper's W_k is linear. We add a bias, as CPC_audio does: b_k^T z_{t+k} is a
        # context-free score per candidate (a learnt frame prior), so exp(z^T W_k c + b_k^T z)
        # is still a valid positive density ratio f_k (eq. 3); it costs nothing and keeps our
        # numbers comparable with CPC_audio's.
        if config.predictor == "mlp":
            self.heads: nn.Module = MLPHeads(steps, c_dim, config.predictor_hidden, z_dim)
        else:
            self.heads = nn.ModuleList([nn.Linear(c_dim, z_dim, bias=True) for _ in range(steps)])
        # "transformer": one causal self-attention layer over c, shared by every step, before
        # the per-step heads (CPC_audio's transformer predictor; Riviere et al. 2020, 2.2)
        self.predictor = (
            CausalAttentionLayer(c_dim, config.predictor_hidden)
            if config.predictor == "transformer"
            else None
        )
        self._steps = steps

    @property
    def prediction_steps(self) -> int:
        return self._steps

    def predict(self, c: Tensor) -> Tensor:
        """c: (B, T, c_dim) -> the prediction of z_{t+k} for all k at once: (B, T, K, z_dim)."""
        if self.predictor is not None:
            c = self.predictor(c)
        if isinstance(self.heads, MLPHeads):
            return self.heads(c)
        weight = torch.cat([head.weight for head in self.heads], dim=0)  # (K * z_dim, c_dim)
        bias = torch.cat([head.bias for head in self.heads], dim=0)  # (K * z_dim,)
        out = F.linear(c, weight, bias)  # (B, T, K * z_dim), one matmul for every W_k
        return out.unflatten(-1, (self.prediction_steps, self.z_dim))  # (B, T, K, z_dim)

    def forward(
        self,
        z: Tensor,
        c: Tensor,
        speakers: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> InfoNCEOutput:
        """z: (B, T, z_dim), c: (B, T, c_dim), speakers: (B,) int64 -> InfoNCEOutput.

        Negatives are drawn once per anchor frame (B, T, N) and shared by all k (see
        ``sample_negatives``); scores are computed in fp32 even under autocast.
        """
        if z.dim() != 3 or c.dim() != 3 or z.shape[:2] != c.shape[:2]:
            raise ValueError(
                "Expected z (B, T, z_dim) and c (B, T, c_dim) with the same B and T. Found: "
                f"{tuple(z.shape)}, {tuple(c.shape)}"
            )
        if z.shape[-1] != self.z_dim or c.shape[-1] != self.c_dim:
            raise ValueError(
                f"Expected z_dim {self.z_dim} and c_dim {self.c_dim}. Found: {z.shape[-1]}, "
                f"{c.shape[-1]}"
            )
        num_steps = self.prediction_steps
        if z.shape[1] <= num_steps:
            raise ValueError(
                f"Expected more than K = {num_steps} frames per window to predict step K. "
                f"Found: T = {z.shape[1]}"
            )
        batch_size, num_frames, _ = z.shape
        batch_index, time_index = sample_negative_indices(
            batch_size,
            num_frames,
            self.config.num_negatives,
            self.config.negative_mode,
            speakers=speakers,
            generator=generator,
            window=num_steps,
            device=z.device,
        )  # (B, T, N) each
        predictions = self.predict(c)  # (B, T, K, z_dim)
        with torch.autocast(z.device.type, enabled=False):
            scores = info_nce_scores(predictions.float(), z.float(), batch_index, time_index)
        return info_nce_from_scores(scores)
