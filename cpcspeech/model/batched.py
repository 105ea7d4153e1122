"""Batched extraction: utterances of similar length padded into one forward pass (for GPUs).

Right-padding changes only the frames whose receptive field reaches past an utterance's end (the
conv layers' own zero padding differs from the padded batch's activations there). Those last
frames are recomputed from a short single pass over the utterance's tail, which starts on the
frame grid with a left margin, as chunked extraction does (``CPCModel.extract``); the context
network then runs over the exact z_t of every utterance, packed to its own length. Every frame
equals a single pass (tested to 1e-4).
"""

import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

from cpcspeech.model.cpc import CPCModel


def plan_batches(lengths: list[int], max_samples: int) -> list[list[int]]:
    """Group utterances of similar length: sorted by length, cut so B * longest <= max_samples.

    Args:
        lengths: samples of each utterance.
        max_samples: padded samples per batch (batch size x longest utterance); an utterance
            longer than this gets a batch of its own.

    Returns:
        batches of positions into ``lengths``; every position appears once.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        # Sorted ascending, so the new utterance is the longest of its batch.
        if batches and (len(batches[-1]) + 1) * lengths[i] <= max_samples:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _encode(model: CPCModel, wav: Tensor, weights: list | None) -> Tensor:
    """wav: (B, N) -> z: (B, T, C) float32, in fp32 or through the bf16 GEMM encoder."""
    if weights is None:
        return model.encoder(wav)
    return model.encoder.forward_gemm(wav, weights).float()


@torch.no_grad()
def extract_batch(
    model: CPCModel, wavs: list[Tensor], layer: str = "c", precision: str = "fp32"
) -> list[Tensor]:
    """Features of several utterances in one padded forward pass, each as a single pass gives.

    Args:
        wavs: B tensors of shape (N_i,), float32 samples at the model's rate, on its device;
            each at least ``model.min_samples`` long.
        layer: "c" (c_t) or "z" (z_t).
        precision: "fp32" or "bf16" (the encoder's GEMMs, as in :meth:`CPCModel.extract`).

    Returns:
        B tensors (T_i, D) float32, T_i = num_frames(N_i), D = c_dim or z_dim.
    """
    if layer not in ("c", "z"):
        raise ValueError(f"Expected layer 'c' or 'z'. Found: {layer!r}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"Expected precision 'fp32' or 'bf16'. Found: {precision!r}")
    short = [w.shape[0] for w in wavs if model.num_frames(w.shape[0]) < 1]
    if short:
        raise ValueError(f"Expected at least {model.min_samples} samples. Found: {short}")
    weights = model.encoder.gemm_weights(torch.bfloat16) if precision == "bf16" else None
    shift = model.frame_shift
    left, right = model.receptive_field
    margin_l = -(-left // shift) + 2
    margin_r = -(-right // shift) + 2
    frames = [model.num_frames(w.shape[0]) for w in wavs]
    z_padded = _encode(model, pad_sequence(wavs, batch_first=True), weights)  # (B, T_max, C)
    z_list = []
    for i, (wav, total) in enumerate(zip(wavs, frames, strict=True)):
        body = max(0, total - margin_r)  # frames that never see the padding
        start = max(0, body - margin_l)  # the tail's pass starts on the frame grid
        tail = _encode(model, wav[start * shift :].unsqueeze(0), weights)  # (1, T_tail, C)
        z_list.append(torch.cat([z_padded[i, :body], tail[0, body - start : total - start]]))
    if layer == "z":
        return z_list
    lengths = torch.tensor(frames)
    packed = pack_padded_sequence(
        pad_sequence(z_list, batch_first=True), lengths, batch_first=True, enforce_sorted=False
    )
    c_packed, _ = model.run_context(packed)
    c_padded, _ = pad_packed_sequence(c_packed, batch_first=True)  # (B, T_max, c_dim)
    return [c_padded[i, :total] for i, total in enumerate(frames)]
