"""CPCModel variants for imported checkpoints: batch/instance norm, RNN contexts, c1..cN."""

import pytest
import torch
from samples import make_tiny_model
from torch import nn

from cpcspeech.config import ModelConfig
from cpcspeech.errors import ConfigError
from cpcspeech.model.cpc import CPCModel


def small_model(seed: int = 0, **overrides: object) -> CPCModel:
    """The default geometry (strides 5-4-2-2-2) with narrow layers, for fast tests."""
    model = make_tiny_model(seed, **{"encoder_channels": 24, "context_dim": 12, **overrides})
    for norm in model.encoder.norms:
        if isinstance(norm, nn.BatchNorm1d):  # non-trivial running statistics
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
    return model


def random_wav(num_samples: int, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(num_samples, generator=torch.Generator().manual_seed(seed))


def test_config_accepts_the_new_choices_and_names_bad_ones() -> None:
    for norm in ("batch", "instance"):
        assert ModelConfig(norm=norm).norm == norm
    assert ModelConfig(context_type="rnn").context_type == "rnn"
    with pytest.raises(ConfigError, match=r"model.norm .*found 'layerNorm'"):
        ModelConfig(norm="layerNorm")
    with pytest.raises(ConfigError, match=r"model.context_type .*found 'transformer'"):
        ModelConfig(context_type="transformer")


def test_modules_and_state_dict_names() -> None:
    model = small_model(norm="batch", context_type="rnn", context_layers=2)
    assert isinstance(model.context, nn.RNN) and model.context.nonlinearity == "tanh"
    keys = set(model.state_dict())
    assert {"encoder.norms.0.running_mean", "encoder.norms.4.num_batches_tracked"} <= keys
    assert {"context.weight_ih_l1", "context.bias_hh_l1"} <= keys
    inst = small_model(norm="instance")
    assert tuple(inst.state_dict()["encoder.norms.0.weight"].shape) == (24,)
    assert "encoder.norms.0.running_mean" not in inst.state_dict()  # no running statistics


def test_layer_names_and_dims() -> None:
    model = small_model(context_layers=3)
    assert model.layers == ("z", "c", "c1", "c2", "c3")
    assert model.layer_dim("z") == 24 and model.layer_dim("c2") == 12
    with pytest.raises(ValueError, match=r"Expected layer in .*Found: 'c4'"):
        model.extract(random_wav(4000), layer="c4")


@pytest.mark.parametrize("context_type", ["gru", "lstm", "rnn"])
def test_per_layer_outputs_equal_a_stack_of_single_layer_models(context_type: str) -> None:
    """c_k of an N-layer context is what a k-layer model with the same first k layers gives."""
    model = small_model(context_type=context_type, context_layers=3)
    wav = random_wav(16000)
    with torch.no_grad():
        z, c_top = model(wav[None])
    torch.testing.assert_close(model.extract(wav, layer="c3"), c_top[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(model.extract(wav, layer="c"), c_top[0], rtol=0, atol=1e-6)
    for depth in (1, 2):
        reference = nn.ModuleDict({"rnn": type(model.context)(24, 12, depth, batch_first=True)})
        with torch.no_grad():
            for name, value in model.context.named_parameters():
                if int(name[-1]) < depth:
                    getattr(reference.rnn, name).copy_(value)
            expected, _ = reference.rnn(z)
        got = model.extract(wav, layer=f"c{depth}")
        torch.testing.assert_close(got, expected[0], rtol=0, atol=1e-6)
    keys = list(model.state_dict())
    model.context_stack(3)
    assert list(model.state_dict()) == keys  # the split layers are not registered


@pytest.mark.parametrize("norm", ["batch", "instance"])
@pytest.mark.parametrize("layer", ["z", "c", "c1"])
def test_chunked_extract_equals_full_pass(norm: str, layer: str) -> None:
    model = small_model(norm=norm, context_type="lstm", context_layers=2)
    wav = random_wav(16000 * 3 + 41)
    full = model.extract(wav, layer=layer, chunk_seconds=60.0)
    for chunk_seconds in (0.37, 1.0):
        chunked = model.extract(wav, layer=layer, chunk_seconds=chunk_seconds)
        torch.testing.assert_close(chunked, full, rtol=0, atol=1e-5)


def test_instance_norm_is_not_causal_and_extract_uses_the_whole_utterance() -> None:
    model = small_model(norm="instance")
    assert not model.causal and small_model(norm="batch").causal
    wav = random_wav(16000 * 2)
    with torch.no_grad():
        z_full, _ = model(wav[None])
        z_half, _ = model(wav[None, :16000])
    # A prefix's statistics differ from the utterance's, so chunking could not equal one pass.
    assert (z_half[0] - z_full[0, : z_half.shape[1]]).abs().max() > 1e-3
    torch.testing.assert_close(model.extract(wav, layer="z", chunk_seconds=0.5), z_full[0])


def test_extract_uses_running_statistics_and_leaves_them_alone() -> None:
    model = small_model(norm="batch").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wav = random_wav(8000)
    feats = model.extract(wav, layer="z")
    assert model.training  # put back as it was
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    with torch.no_grad():
        z_eval, _ = model.eval()(wav[None])
    torch.testing.assert_close(feats, z_eval[0], rtol=0, atol=1e-6)
