"""The InfoNCE predictor options: linear W_k (the paper's), one hidden layer per step ("mlp") and
a causal attention layer before the heads ("transformer")."""

import pytest
import torch
import torch.nn.functional as F

from cpcspeech.config import LossConfig
from cpcspeech.errors import ConfigError
from cpcspeech.train.loss import InfoNCE


def _loss(predictor: str, steps: int = 3, hidden: int = 16) -> InfoNCE:
    torch.manual_seed(0)
    cfg = LossConfig(prediction_steps=steps, num_negatives=4, predictor=predictor,
                     predictor_hidden=hidden)  # fmt: skip
    return InfoNCE(cfg, z_dim=6, c_dim=8)


def test_linear_predictor_keeps_the_paper_heads_and_their_checkpoint_names():
    loss = _loss("linear")
    assert sorted(loss.state_dict()) == sorted(
        f"heads.{k}.{p}" for k in range(3) for p in ("weight", "bias")
    )
    c = torch.randn(2, 5, 8)
    expected = torch.stack([head(c) for head in loss.heads], dim=2)  # (B, T, K, z)
    torch.testing.assert_close(loss.predict(c), expected)


def test_mlp_predictor_is_one_hidden_layer_per_step():
    loss = _loss("mlp")
    heads = loss.heads
    c = torch.randn(2, 5, 8)
    out = loss.predict(c)
    assert out.shape == (2, 5, 3, 6)
    for k in range(3):
        hidden = F.relu(F.linear(c, heads.weight1[k], heads.bias1[k]))
        torch.testing.assert_close(out[:, :, k], F.linear(hidden, heads.weight2[k], heads.bias2[k]))


def test_transformer_predictor_is_causal():
    loss = _loss("transformer").eval()
    c = torch.randn(2, 7, 8)
    changed = c.clone()
    changed[:, 4:] = torch.randn(2, 3, 8)  # the future of t = 3
    a, b = loss.predict(c), loss.predict(changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("predictor", ["linear", "mlp", "transformer"])
def test_every_predictor_trains(predictor):
    loss = _loss(predictor)
    z, c = torch.randn(2, 10, 6), torch.randn(2, 10, 8, requires_grad=True)
    out = loss(z, c, generator=torch.Generator().manual_seed(0))
    assert out.loss.isfinite() and out.accuracy.shape == (3,)
    out.loss.backward()
    assert c.grad is not None and c.grad.abs().sum() > 0
    assert all(p.grad is not None for p in loss.parameters())


def test_unknown_predictor_and_bad_hidden_are_config_errors():
    with pytest.raises(ConfigError, match="predictor"):
        LossConfig(predictor="rnn")
    with pytest.raises(ConfigError, match="predictor_hidden"):
        LossConfig(predictor_hidden=0)


def test_heads_count_toward_the_parameter_limit():
    """A config whose prediction heads alone would take 17 GB fails in make_objective, counted
    on the meta device, before anything is allocated; the shipped recipe's shape passes."""
    import time

    from cpcspeech.config import Config, ModelConfig
    from cpcspeech.train.objective import check_objective_size, make_objective

    huge = Config(
        model=ModelConfig(encoder_channels=2048, context_dim=2048),
        loss=LossConfig(prediction_steps=1000),
    )
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="in the predictor .loss.prediction_steps 1000"):
        make_objective(huge)
    assert time.perf_counter() - start < 10
    check_objective_size(Config())  # the paper's model and 12 linear heads
