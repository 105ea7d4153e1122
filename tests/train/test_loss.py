"""InfoNCE and negative sampling: provenance of negatives per mode, the maths of the loss."""

import math

import pytest
import torch

from cpcspeech.config import LossConfig
from cpcspeech.errors import CPCSpeechError
from cpcspeech.train.loss import (
    InfoNCE,
    NegativeSamplingError,
    info_nce_from_scores,
    info_nce_scores,
    sample_negatives,
)

# (speakers of the windows in a batch, mode-independent): several layouts, all modes possible.
LAYOUTS = [
    [0, 0, 1, 1, 2, 2, 3, 3],
    [5, 5, 5, 2, 2],
    [1, 0, 1, 0, 1, 0],
    [7, 7],
]


def _check_provenance(mode, speakers, batch_index, time_index, num_frames, window):
    batch_size = len(speakers)
    spk = torch.tensor(speakers)
    anchor_b = torch.arange(batch_size)[:, None, None].expand_as(batch_index)
    anchor_t = torch.arange(num_frames)[None, :, None].expand_as(batch_index)
    assert batch_index.min() >= 0 and batch_index.max() < batch_size
    assert time_index.min() >= 0 and time_index.max() < num_frames
    same_seq = batch_index == anchor_b
    same_speaker = spk[batch_index] == spk[anchor_b]
    if mode == "same_seq":
        assert same_seq.all()
    if mode == "mixed_other_seq":
        assert not same_seq.any()
    if mode == "same_speaker":
        assert same_speaker.all()
    if mode == "same_speaker_other_seq":
        assert same_speaker.all() and not same_seq.any()
    # Never the positive of any step k = 1..window, checked by index.
    for k in range(1, window + 1):
        assert not (same_seq & (time_index == anchor_t + k)).any(), f"positive k={k} drawn"
    return same_seq, same_speaker


@pytest.mark.parametrize(
    "mode", ["mixed", "same_speaker", "mixed_other_seq", "same_speaker_other_seq", "same_seq"]
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_negatives_come_from_where_the_mode_says(mode, layout):
    num_frames, window, num_negatives = 16, 4, 64
    z = torch.randn(len(layout), num_frames, 3)
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        neg = sample_negatives(
            z, num_negatives, mode, torch.tensor(layout), generator=generator, window=window
        )
        assert neg.vectors.shape == (len(layout), num_frames, num_negatives, 3)
        assert neg.batch_index.shape == neg.time_index.shape == neg.vectors.shape[:3]
        assert torch.equal(neg.vectors, z[neg.batch_index, neg.time_index])
        same_seq, same_speaker = _check_provenance(
            mode, layout, neg.batch_index, neg.time_index, num_frames, window
        )
        # The permissive modes do reach outside the anchor's own sequence / speaker.
        if mode in ("mixed", "same_speaker"):
            assert (~same_seq).any() or len(set(layout)) == len(layout)
        if mode in ("mixed", "mixed_other_seq") and len(set(layout)) > 1:
            assert (~same_speaker).any()


def test_same_seq_never_draws_positives_but_draws_everything_else():
    # T = 6, window = 2: anchor t = 1 may draw {0, 1, 4, 5}, never {2, 3}; all four appear.
    z = torch.randn(1, 6, 2)
    neg = sample_negatives(
        z, 4000, "same_seq", generator=torch.Generator().manual_seed(0), window=2
    )
    drawn = neg.time_index[0, 1]
    assert set(drawn.tolist()) == {0, 1, 4, 5}
    counts = torch.bincount(drawn, minlength=6)[[0, 1, 4, 5]].float()
    assert (counts / 4000 - 0.25).abs().max() < 0.05  # uniform over the pool
    # The last anchor has no future frame, so its pool is the whole window.
    assert set(neg.time_index[0, 5].tolist()) == set(range(6))


def test_sampling_is_reproducible_with_a_generator():
    z = torch.randn(4, 10, 2)
    a = sample_negatives(z, 8, "mixed", generator=torch.Generator().manual_seed(3), window=2)
    b = sample_negatives(z, 8, "mixed", generator=torch.Generator().manual_seed(3), window=2)
    assert torch.equal(a.batch_index, b.batch_index) and torch.equal(a.time_index, b.time_index)


def test_impossible_modes_raise_naming_expected_and_found():
    z = torch.randn(3, 8, 2)
    with pytest.raises(NegativeSamplingError, match=r"speakers \[9\]"):
        sample_negatives(z, 4, "same_speaker_other_seq", torch.tensor([1, 1, 9]))
    with pytest.raises(CPCSpeechError, match="found None"):
        sample_negatives(z, 4, "same_speaker")
    with pytest.raises(ValueError, match=r"expected shape \(3,\), found \(2,\)"):
        sample_negatives(z, 4, "same_speaker", torch.tensor([1, 1]))
    with pytest.raises(NegativeSamplingError, match="window"):
        sample_negatives(torch.randn(1, 8, 2), 4, "mixed_other_seq")
    with pytest.raises(NegativeSamplingError, match="'bogus'"):
        sample_negatives(z, 4, "bogus")
    # One frame, window 1: the anchor's pool is its own frame only, which is allowed.
    neg = sample_negatives(torch.randn(1, 1, 2), 3, "same_seq", window=1)
    assert neg.time_index.eq(0).all()


def _perfect_inputs(batch_size, num_frames, num_steps, scale):
    """z: one-hot frames (all distinct, orthogonal); predictions W_k c_t = scale * z_{t+k}."""
    dim = batch_size * num_frames
    z = torch.eye(dim).reshape(batch_size, num_frames, dim)
    predictions = torch.zeros(batch_size, num_frames, num_steps, dim)
    for k in range(1, num_steps + 1):
        predictions[:, : num_frames - k, k - 1] = scale * z[:, k:]
    return z, predictions


@pytest.mark.parametrize("mode", ["mixed", "same_seq", "mixed_other_seq"])
def test_perfect_predictor_gives_loss_near_zero(mode):
    batch_size, num_frames, num_steps, num_negatives = 3, 20, 4, 16
    z, predictions = _perfect_inputs(batch_size, num_frames, num_steps, scale=30.0)
    neg = sample_negatives(
        z, num_negatives, mode, generator=torch.Generator().manual_seed(0), window=num_steps
    )
    out = info_nce_from_scores(info_nce_scores(predictions, z, neg.batch_index, neg.time_index))
    assert out.loss.item() < 1e-6
    assert torch.equal(out.accuracy, torch.ones(num_steps))


def test_perfect_heads_through_the_module_give_loss_near_zero():
    # c_t = z_t and W_k = scale * (shift by k): heads map the one-hot of frame t to that of t+k.
    batch_size, num_frames, num_steps = 2, 12, 3
    dim = num_frames
    z = torch.eye(dim).expand(batch_size, num_frames, dim).clone()  # same frames in each window
    loss = InfoNCE(
        LossConfig(prediction_steps=num_steps, num_negatives=8, negative_mode="same_seq")
    )
    loss = InfoNCE(loss.config, z_dim=dim, c_dim=dim)
    with torch.no_grad():
        for k, head in enumerate(loss.heads, start=1):
            head.weight.copy_(40.0 * torch.diag(torch.ones(dim - k), -k))
            head.bias.zero_()
    out = loss(z, z, generator=torch.Generator().manual_seed(0))
    assert out.loss.item() < 1e-6 and torch.equal(out.accuracy, torch.ones(num_steps))


def test_zero_heads_give_exactly_log_one_plus_n_and_zero_accuracy():
    config = LossConfig(prediction_steps=5, num_negatives=7, negative_mode="mixed")
    loss = InfoNCE(config, z_dim=6, c_dim=4)
    with torch.no_grad():
        for head in loss.heads:
            head.weight.zero_()
            head.bias.zero_()
    out = loss(torch.randn(3, 9, 6), torch.randn(3, 9, 4))
    expected = torch.full((5,), math.log(1 + 7))
    torch.testing.assert_close(out.loss_per_step, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.loss, torch.tensor(math.log(8.0)), rtol=0, atol=1e-6)
    assert torch.equal(out.accuracy, torch.zeros(5))  # all scores tie: a tie counts as wrong


def test_only_step_one_predicted_gives_accuracy_one_there_and_chance_elsewhere():
    batch_size, num_frames, num_steps, num_negatives = 4, 40, 3, 9
    z, predictions = _perfect_inputs(batch_size, num_frames, num_steps, scale=30.0)
    predictions[:, :, 1:] = 0.0  # steps 2 and 3: all scores tie
    neg = sample_negatives(
        z, num_negatives, "mixed", generator=torch.Generator().manual_seed(1), window=num_steps
    )
    out = info_nce_from_scores(info_nce_scores(predictions, z, neg.batch_index, neg.time_index))
    assert out.accuracy[0] == 1.0 and out.loss_per_step[0] < 1e-6
    assert torch.equal(out.accuracy[1:], torch.zeros(2))
    torch.testing.assert_close(out.loss_per_step[1:], torch.full((2,), math.log(10.0)))


def test_cross_entropy_is_over_candidates_and_matches_a_hand_computed_softmax():
    torch.manual_seed(0)
    batch_size, num_frames, num_steps, num_negatives, z_dim, c_dim = 3, 10, 3, 5, 6, 4
    config = LossConfig(num_steps, num_negatives, "same_speaker")
    loss = InfoNCE(config, z_dim=z_dim, c_dim=c_dim)
    z, c = torch.randn(batch_size, num_frames, z_dim), torch.randn(batch_size, num_frames, c_dim)
    speakers = torch.tensor([4, 4, 4])
    out = loss(z, c, speakers, generator=torch.Generator().manual_seed(7))
    # The same generator seed redraws the very same negatives.
    neg = sample_negatives(
        z, num_negatives, "same_speaker", speakers, torch.Generator().manual_seed(7), num_steps
    )
    losses, hits = torch.zeros(num_steps), torch.zeros(num_steps)
    for k in range(1, num_steps + 1):
        head = loss.heads[k - 1]
        rows = 0
        for b in range(batch_size):
            for t in range(num_frames - k):
                prediction = head(c[b, t])  # (z_dim,)
                candidates = torch.cat([z[b, t + k][None], neg.vectors[b, t]])  # (1 + N, z_dim)
                scores = candidates @ prediction
                probabilities = torch.exp(scores) / torch.exp(scores).sum()
                losses[k - 1] += -torch.log(probabilities[0])
                hits[k - 1] += float(scores[0] > scores[1:].max())
                rows += 1
        losses[k - 1] /= rows
        hits[k - 1] /= rows
    torch.testing.assert_close(out.loss_per_step, losses.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.accuracy, hits)
    torch.testing.assert_close(out.loss, losses.mean().detach(), rtol=1e-5, atol=1e-5)


def test_gradients_reach_heads_z_and_c():
    loss = InfoNCE(LossConfig(prediction_steps=3, num_negatives=4), z_dim=6, c_dim=5)
    z = torch.randn(2, 8, 6, requires_grad=True)
    c = torch.randn(2, 8, 5, requires_grad=True)
    loss(z, c).loss.backward()
    for tensor in [z, c, *loss.parameters()]:
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0
    assert len(loss.heads) == 3 and loss.heads[0].weight.shape == (6, 5)


def test_bf16_autocast_keeps_fp32_scores():
    loss = InfoNCE(LossConfig(prediction_steps=2, num_negatives=4), z_dim=8, c_dim=4)
    z, c = torch.randn(2, 6, 8), torch.randn(2, 6, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(z, c, generator=torch.Generator().manual_seed(0))
    reference = loss(z, c, generator=torch.Generator().manual_seed(0))
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss, reference.loss, rtol=0.05, atol=0.05)


def test_bad_shapes_are_errors():
    loss = InfoNCE(LossConfig(prediction_steps=4, num_negatives=2), z_dim=6, c_dim=5)
    with pytest.raises(ValueError, match=r"T = 4"):
        loss(torch.randn(2, 4, 6), torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="c_dim 5"):
        loss(torch.randn(2, 8, 6), torch.randn(2, 8, 3))
    with pytest.raises(ValueError, match="same B and T"):
        loss(torch.randn(2, 8, 6), torch.randn(2, 7, 5))
