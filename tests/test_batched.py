"""Batched extraction: padded batches give every utterance exactly a single pass's frames."""

import pytest
import torch

from cpcspeech.config import ModelConfig
from cpcspeech.model.batched import extract_batch, plan_batches
from cpcspeech.model.cpc import CPCModel

# Edges of the frame grid, lengths whose last frames' receptive field reaches the padding, and
# one long enough to be chunked by extract (3 s with chunk_seconds=1 below).
LENGTHS = [159, 160, 161, 319, 320, 479, 481, 1000, 1591, 4999, 5000, 16000 * 3 + 7]


def model_with(norm: str) -> CPCModel:
    torch.manual_seed(0)
    config = ModelConfig(norm=norm, encoder_channels=32, context_dim=16)
    model = CPCModel(config).eval()
    if norm == "channel":
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for module in model.encoder.norms:
                module.weight.copy_(1 + 0.5 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
    return model


def wavs_of(lengths: list[int]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return [0.1 * torch.randn(n, generator=generator) for n in lengths]


@pytest.mark.parametrize("norm", ["none", "channel"])
@pytest.mark.parametrize("layer", ["z", "c"])
def test_batched_equals_single_pass_for_every_frame(norm: str, layer: str) -> None:
    model = model_with(norm)
    wavs = wavs_of(LENGTHS)
    batched = extract_batch(model, wavs, layer=layer)
    for wav, found in zip(wavs, batched, strict=True):
        expected = model.extract(wav, layer=layer, chunk_seconds=1.0)
        assert found.shape == expected.shape == (model.num_frames(len(wav)), expected.shape[1])
        # Every frame, the last ones beside the padding included.
        torch.testing.assert_close(found, expected, rtol=0, atol=1e-4)


def test_batched_bf16_close_to_single_bf16() -> None:
    model = model_with("channel")
    wavs = wavs_of([3000, 8000, 16000])
    for wav, found in zip(wavs, extract_batch(model, wavs, precision="bf16"), strict=True):
        expected = model.extract(wav, precision="bf16")
        assert ((found - expected).norm() / expected.norm()).item() < 2e-2


def test_plan_batches_groups_similar_lengths_within_budget() -> None:
    lengths = [5, 100, 7, 90, 6, 400]
    batches = plan_batches(lengths, max_samples=200)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 200
    assert [0, 2, 4] in [sorted(b) for b in batches] and [5] in batches


def test_extract_batch_rejects_too_short() -> None:
    with pytest.raises(ValueError, match="at least"):
        extract_batch(model_with("none"), [torch.zeros(100)])
