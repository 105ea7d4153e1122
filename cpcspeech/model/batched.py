"""Batched extraction: utterances of similar length padded into one forward pass (for GPUs).

:func:`plan_batches` groups utterances by length; :func:`extract_batch` runs a group through
:meth:`CPCModel.forward_padded`, where right-padding is made exact (the last frames beside the
padding recomputed from a short tail pass, the context packed to each length). Every frame
equals a single pass (tested to 1e-4).
"""

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

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
    short = [w.shape[0] for w in wavs if model.num_frames(w.shape[0]) < 1]
    if short:
        raise ValueError(f"Expected at least {model.min_samples} samples. Found: {short}")
    wav = pad_sequence(wavs, batch_first=True)  # (B, N_max)
    lengths = [w.shape[0] for w in wavs]
    if layer == "z":
        feats, frames = model.encode_padded(wav, lengths, precision)  # (B, T, C), (B,)
    else:
        _, feats, frames = model.forward_padded(wav, lengths, precision)  # (B, T, c_dim)
    return [feats[i, :total] for i, total in enumerate(frames.tolist())]
