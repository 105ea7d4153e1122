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


def padded(wavs: list[torch.Tensor], extra: int = 0) -> torch.Tensor:
    """(B, N_max + extra): each row an utterance, right-padded with zeros."""
    batch = torch.zeros(len(wavs), max(len(w) for w in wavs) + extra)
    for i, wav in enumerate(wavs):
        batch[i, : len(wav)] = wav
    return batch


@pytest.mark.parametrize(
    "overrides",
    [
        {"norm": "none"},
        {"norm": "channel"},
        {"norm": "instance", "context_type": "lstm", "context_layers": 2},
    ],
    ids=["none", "channel", "instance-lstm2"],
)
def test_forward_padded_rows_equal_single_utterances(overrides: dict) -> None:
    torch.manual_seed(0)
    model = CPCModel(ModelConfig(encoder_channels=32, context_dim=16, **overrides)).eval()
    lengths = [159, 160, 161, 481, 1591, 4999, 5000, 12007]
    if overrides["norm"] == "instance":  # nn.InstanceNorm1d refuses a single frame
        lengths = [n for n in lengths if model.num_frames(n) > 1]
    wavs = wavs_of(lengths)
    batch = padded(wavs, extra=700)  # padding past the longest row too
    with torch.no_grad():
        z, c, frame_lengths = model.forward_padded(batch, torch.tensor(lengths))
    total = model.num_frames(batch.shape[1])
    assert z.shape == (len(wavs), total, 32) and c.shape == (len(wavs), total, 16)
    assert frame_lengths.dtype == torch.long
    assert frame_lengths.tolist() == [model.num_frames(n) for n in lengths]
    for i, wav in enumerate(wavs):
        valid = int(frame_lengths[i])
        with torch.no_grad():
            z_one, c_one = model(wav.unsqueeze(0))  # (1, T_i, D)
        torch.testing.assert_close(z[i, :valid], z_one[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(c[i, :valid], c_one[0], rtol=0, atol=1e-5)
        assert not z[i, valid:].any() and not c[i, valid:].any()  # padding frames are zero


def test_forward_padded_rows_without_a_frame_are_empty() -> None:
    model = model_with("none")
    wavs = wavs_of([100, 3000, 0])
    with torch.no_grad():
        z, c, frame_lengths = model.forward_padded(padded(wavs), [100, 3000, 0])
        _, c_one = model(wavs[1].unsqueeze(0))
    assert frame_lengths.tolist() == [0, model.num_frames(3000), 0]
    assert not z[0].any() and not c[0].any() and not z[2].any() and not c[2].any()
    torch.testing.assert_close(c[1], c_one[0], rtol=0, atol=1e-5)
    with torch.no_grad():
        z, c, frame_lengths = model.forward_padded(torch.zeros(2, 100), [100, 50])
    assert z.shape == (2, 0, 32) and c.shape == (2, 0, 16) and frame_lengths.tolist() == [0, 0]


def test_forward_padded_checks_its_input() -> None:
    model = model_with("none")
    with pytest.raises(ValueError, match=r"Expected 2 lengths in \[0, 1000\]. Found: \[1000, 1"):
        model.forward_padded(torch.zeros(2, 1000), [1000, 1001])
    with pytest.raises(ValueError, match=r"Expected 2 lengths"):
        model.forward_padded(torch.zeros(2, 1000), [1000])
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        model.forward_padded(torch.zeros(1000), [1000])
    with pytest.raises(ValueError, match="precision"):
        model.forward_padded(torch.zeros(1, 1000), [1000], precision="fp16")


def test_forward_padded_keeps_autograd() -> None:
    model = model_with("channel").train()
    wavs = wavs_of([2000, 3500])
    z, c, _ = model.forward_padded(padded(wavs), [2000, 3500])
    (z.sum() + c.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())
