"""CPCModel: frame geometry, causality, batching, chunked and bf16 extraction, strict save/load."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import REPO
from safetensors.torch import load_file, save_file
from samples import make_tiny_model

from cpcspeech.config import ModelConfig
from cpcspeech.errors import ModelLoadError
from cpcspeech.model import CONFIG_NAME, WEIGHTS_NAME, random_model
from cpcspeech.model.cpc import ChannelNorm, CPCModel, channel_norm_relu

NORMS = ("none", "channel", "layer")


def make_model(seed: int = 0, **overrides: object) -> CPCModel:
    torch.manual_seed(seed)
    return CPCModel(ModelConfig(**overrides)).eval()


def small_model(seed: int = 0, **overrides: object) -> CPCModel:
    """The default geometry (strides 5-4-2-2-2) with narrow layers, for fast tests."""
    return make_tiny_model(seed, **{"encoder_channels": 32, "context_dim": 16, **overrides})


def random_wav(num_samples: int, seed: int = 0, batch: int | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (num_samples,) if batch is None else (batch, num_samples)
    return 0.1 * torch.randn(shape, generator=generator)


def sampled_lengths() -> list[int]:
    rng = np.random.default_rng(0)
    edges = [159, 160, 161, 318, 319, 320, 321, 479, 480, 481, 4999, 5000]
    return sorted(set(edges + rng.integers(159, 5001, size=20).tolist() + [20480, 16000 * 3 + 7]))


# ----- geometry -----
def test_num_frames_formula_default() -> None:
    model = CPCModel()
    assert model.frame_shift == 160
    assert model.min_samples == 159
    for n in range(0, 50_000):
        assert model.num_frames(n) == (n + 1) // 160, n


def test_num_frames_matches_forward_default() -> None:
    model = small_model()
    with torch.no_grad():
        for n in sampled_lengths():
            z, c = model(random_wav(n, seed=n, batch=1))
            assert z.shape == (1, model.num_frames(n), 32), n
            assert c.shape == (1, (n + 1) // 160, 16), n


@pytest.mark.parametrize(
    ("kernels", "strides", "paddings"),
    [
        ((7, 5, 3), (3, 2, 2), (2, 1, 0)),
        ((4, 4), (2, 3), (0, 0)),
        ((10, 8, 4), (5, 4, 2), (0, 3, 1)),
    ],
)
def test_num_frames_matches_forward_other_geometry(kernels, strides, paddings) -> None:
    model = small_model(encoder_kernels=kernels, encoder_strides=strides, encoder_paddings=paddings)
    assert model.frame_shift == int(np.prod(strides))
    with torch.no_grad():
        for n in range(model.min_samples, model.min_samples + 300, 13):
            z, c = model(random_wav(n, batch=1))
            assert z.shape[1] == c.shape[1] == model.num_frames(n) >= 1, n
    assert model.num_frames(model.min_samples - 1) == 0


def test_receptive_field_default() -> None:
    # Frame t sees samples [160 t - 153, 160 t + 311]: 465 samples (CPC_audio's geometry).
    assert CPCModel().receptive_field == (153, 311)


# ----- causality -----
@pytest.mark.parametrize("context_type", ["gru", "lstm"])
@pytest.mark.parametrize("norm", NORMS)
def test_causal_and_receptive_field_exact(norm: str, context_type: str) -> None:
    model = small_model(norm=norm, context_type=context_type)
    left, right = model.receptive_field
    shift = model.frame_shift
    wav = random_wav(6000, batch=1)
    with torch.no_grad():
        z_ref, c_ref = model(wav)
        for t in (3, 11, 20):
            end = shift * t + right
            start = shift * t - left
            after = wav.clone()
            after[0, end + 1 :] += torch.randn(wav.shape[1] - end - 1)
            z, c = model(after)
            # Nothing after the receptive field's end reaches z_<=t or c_<=t.
            torch.testing.assert_close(z[:, : t + 1], z_ref[:, : t + 1], rtol=0, atol=1e-6)
            torch.testing.assert_close(c[:, : t + 1], c_ref[:, : t + 1], rtol=0, atol=1e-6)
            assert not torch.allclose(z[:, t + 1 :], z_ref[:, t + 1 :], atol=1e-4)
            # Sanity: the last and first samples of the receptive field do reach z_t ...
            for sample in (end, start):
                moved = wav.clone()
                moved[0, sample] += 1.0
                z, c = model(moved)
                assert (z[0, t] - z_ref[0, t]).abs().max() > 1e-4, sample
                assert (c[0, t] - c_ref[0, t]).abs().max() > 1e-6, sample
            # ... and a sample just before it reaches c_t (through earlier frames) but not z_t.
            moved = wav.clone()
            moved[0, start - 1] += 1.0
            z, c = model(moved)
            torch.testing.assert_close(z[0, t], z_ref[0, t], rtol=0, atol=1e-6)
            assert (c[0, t] - c_ref[0, t]).abs().max() > 1e-6


# ----- batching -----
@pytest.mark.parametrize("norm", NORMS)
def test_batch_equals_single_items(norm: str) -> None:
    model = small_model(norm=norm)
    wav = random_wav(8000, batch=3)
    with torch.no_grad():
        z_batch, c_batch = model(wav)
        for i in range(3):
            z, c = model(wav[i : i + 1])
            torch.testing.assert_close(z_batch[i : i + 1], z, rtol=0, atol=1e-5)
            torch.testing.assert_close(c_batch[i : i + 1], c, rtol=0, atol=1e-5)


# ----- chunked extraction -----
@pytest.mark.parametrize("norm", NORMS)
def test_chunked_extract_equals_full_pass(norm: str) -> None:
    model = make_model(norm=norm)
    wav = random_wav(16000 * 2 + 77)
    with torch.no_grad():
        z_full, c_full = model(wav[None])
    for chunk_seconds in (0.37, 1.0, 20.0):
        for layer, full in (("z", z_full[0]), ("c", c_full[0])):
            feats = model.extract(wav, layer=layer, chunk_seconds=chunk_seconds)
            assert feats.dtype == torch.float32
            torch.testing.assert_close(feats, full, rtol=0, atol=1e-4)


def test_extract_accepts_1_by_n_and_rejects_bad_options() -> None:
    model = small_model()
    wav = random_wav(4000)
    torch.testing.assert_close(model.extract(wav[None]), model.extract(wav))
    with pytest.raises(ValueError, match="layer"):
        model.extract(wav, layer="q")
    with pytest.raises(ValueError, match="precision"):
        model.extract(wav, precision="fp16")
    with pytest.raises(ValueError, match=r"\(N,\)"):
        model.extract(random_wav(4000, batch=2))


@pytest.mark.parametrize("norm", NORMS)
def test_gemm_encoder_fp32_equals_conv1d(norm: str) -> None:
    model = make_model(norm=norm)
    wav = random_wav(16000 + 13, batch=2)
    with torch.no_grad():
        z_conv = model.encoder(wav)
        z_gemm = model.encoder.forward_gemm(wav, model.encoder.gemm_weights(torch.float32))
    torch.testing.assert_close(z_gemm, z_conv, rtol=0, atol=1e-5)


# ----- channel norm at GEMM speed -----


def reference_encoder(model: CPCModel, wav: torch.Tensor) -> torch.Tensor:
    """The encoder as first written: channels-first Conv1d -> ChannelNorm module -> ReLU."""
    x = wav.unsqueeze(1)  # (B, 1, N)
    for conv, norm in zip(model.encoder.convs, model.encoder.norms, strict=True):
        x = torch.relu(norm(conv(x)))  # (B, C, T)
    return x.transpose(1, 2)  # (B, T, C)


def randomise_norms(model: CPCModel, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in model.encoder.norms:
            norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=generator))
            norm.bias.copy_(0.3 * torch.randn(norm.bias.shape, generator=generator))


@pytest.mark.parametrize("channels", [2, 3, 7, 512])
def test_fused_channel_norm_equals_unbiased_channel_norm(channels: int) -> None:
    # The correction sqrt((C-1)/C) and eps (C-1)/C matter most for few channels.
    generator = torch.Generator().manual_seed(channels)
    norm = ChannelNorm(channels)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(1, channels, 1, generator=generator))
        norm.bias.copy_(torch.randn(1, channels, 1, generator=generator))
    x = 3 * torch.randn(2, channels, 50, generator=generator) + 1  # (B, C, T)
    x[0, :, 0] = 0.5  # a constant frame: variance 0, so eps decides the scale
    expected = torch.relu(norm(x)).transpose(1, 2)  # (B, T, C)
    found = channel_norm_relu(x.transpose(1, 2).contiguous(), norm)
    torch.testing.assert_close(found, expected, rtol=0, atol=1e-5)


def test_channels_last_encoder_equals_reference_forward_and_gradients() -> None:
    model = make_model(norm="channel")
    wav = random_wav(16000 + 13, batch=2)
    with torch.no_grad():  # the bound, 1e-5, on the default init (unit norm weights)
        torch.testing.assert_close(
            model.encoder(wav), reference_encoder(model, wav), rtol=0, atol=1e-5
        )
    randomise_norms(model)
    with torch.no_grad():  # norm weights up to ~2.5 scale the outputs and their rounding
        expected = reference_encoder(model, wav)
        found = model.encoder(wav)
    torch.testing.assert_close(found, expected, rtol=0, atol=1e-5 * expected.abs().max().item())

    def grads(forward) -> list[torch.Tensor]:
        model.zero_grad()
        forward(wav).square().mean().backward()
        return [p.grad.clone() for p in model.encoder.parameters()]

    # The maths: in float64 the GEMM path's gradients are the reference's to rounding.
    found_grads = grads(model.encoder)  # float32, kept for the check below
    model.double()
    truth = grads(lambda w: reference_encoder(model, w.double()))
    for found, expected in zip(grads(lambda w: model.encoder(w.double())), truth, strict=True):
        scale = expected.abs().max().item()
        torch.testing.assert_close(found, expected, rtol=0, atol=1e-10 * scale)
    model.float()
    # float32 against that truth: mostly within 1e-6 of each tensor's largest entry. Where a
    # pre-ReLU value lies within float32 rounding of zero (with two threads, one of layer 1's
    # is +2.2e-7 in float64 and -2.0e-7 in float32), the ReLU passes the gradient on one side
    # and not the other, which moves the first two layers' gradients by up to ~4e-4. That is
    # the kink of the ReLU, not an error of the path, so the bound leaves room for it.
    for found, expected in zip(found_grads, truth, strict=True):
        scale = expected.abs().max().item()
        torch.testing.assert_close(found.double(), expected, rtol=0, atol=1e-3 * scale)


def test_channels_last_encoder_under_bf16_autocast_close_to_fp32() -> None:
    model = make_model(norm="channel")
    randomise_norms(model)
    wav = random_wav(8000, batch=2)
    with torch.no_grad():
        expected = reference_encoder(model, wav)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            found = model.encoder(wav).float()
    assert ((found - expected).norm() / expected.norm()).item() < 2e-2


@pytest.mark.parametrize("norm", NORMS)
def test_bf16_extract_close_to_fp32(norm: str) -> None:
    model = make_model(norm=norm)
    wav = random_wav(16000 + 91)
    for layer in ("z", "c"):
        fp32 = model.extract(wav, layer=layer)
        bf16 = model.extract(wav, layer=layer, precision="bf16")
        chunked = model.extract(wav, layer=layer, precision="bf16", chunk_seconds=0.41)
        assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
        relative = ((bf16 - fp32).norm() / fp32.norm()).item()
        assert relative < 2e-2, relative
        # Chunking does not change the bf16 result beyond GEMM rounding either.
        torch.testing.assert_close(chunked, bf16, rtol=0, atol=2e-2 * fp32.abs().max().item())


# ----- short input -----
def test_zero_frame_input() -> None:
    model = small_model()
    with pytest.raises(ValueError, match="at least 159 samples"):
        model(random_wav(158, batch=1))
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        model(random_wav(1000))
    assert model.extract(random_wav(158)).shape == (0, 16)
    assert model.extract(random_wav(158), layer="z").shape == (0, 32)
    assert model.extract(random_wav(159)).shape == (1, 16)


# ----- save / load -----
def test_save_load_roundtrip(tmp_path: Path) -> None:
    model = small_model(norm="channel", context_type="lstm", encoder_kernels=(10, 8, 4, 4, 4))
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded = CPCModel.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    wav = random_wav(5000, batch=2)
    with torch.no_grad():
        for a, b in zip(model(wav), loaded(wav), strict=True):
            assert torch.equal(a, b)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    directory = tmp_path / "saved"
    small_model().save_pretrained(directory)
    return directory


def _rewrite_weights(directory: Path, edit) -> None:
    state = load_file(str(directory / WEIGHTS_NAME))
    edit(state)
    save_file(state, str(directory / WEIGHTS_NAME))


def test_load_rejects_missing_tensor(saved: Path) -> None:
    _rewrite_weights(saved, lambda state: state.pop("context.bias_hh_l0"))
    with pytest.raises(ModelLoadError, match=r"missing \['context.bias_hh_l0'\]"):
        CPCModel.from_pretrained(saved)


def test_load_rejects_unexpected_tensor(saved: Path) -> None:
    _rewrite_weights(saved, lambda state: state.update(extra=torch.zeros(3)))
    with pytest.raises(ModelLoadError, match=r"unexpected \['extra'\]"):
        CPCModel.from_pretrained(saved)


def test_load_rejects_wrong_shape(saved: Path) -> None:
    _rewrite_weights(saved, lambda state: state.update({"encoder.convs.0.bias": torch.zeros(7)}))
    with pytest.raises(ModelLoadError, match=r"encoder.convs.0.bias expected shape \(32,\)"):
        CPCModel.from_pretrained(saved)


def test_load_rejects_wrong_model_type(saved: Path) -> None:
    meta = json.loads((saved / CONFIG_NAME).read_text())
    meta["model_type"] = "wav2vec2"
    (saved / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="found 'wav2vec2'"):
        CPCModel.from_pretrained(saved)


def test_load_rejects_unknown_config_key(saved: Path) -> None:
    meta = json.loads((saved / CONFIG_NAME).read_text())
    meta["dropout"] = 0.1
    (saved / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="dropout"):
        CPCModel.from_pretrained(saved)


def test_load_rejects_missing_files(tmp_path: Path, saved: Path) -> None:
    with pytest.raises(ModelLoadError, match="nowhere"):
        CPCModel.from_pretrained(tmp_path / "nowhere")
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(ModelLoadError, match=f"expected {WEIGHTS_NAME}"):
        CPCModel.from_directory(saved)


# ----- long audio -----
def test_two_minutes_chunked_equals_full_pass() -> None:
    model = make_model()
    wav = random_wav(16000 * 120 + 123)
    with torch.no_grad():
        _, c_full = model(wav[None])  # ~1.6 GB of first-layer activations; fine for 2 minutes
    torch.testing.assert_close(model.extract(wav), c_full[0], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_one_hour_chunked_bounded_memory(tmp_path: Path) -> None:
    """One hour of audio through ``extract``: bounded peak memory, chunk-size invariant.

    A literal full pass over one hour needs ~24 GB for the first conv's activations alone
    (3200 frames/s * 3600 s * 512 channels * 4 bytes), so the reference is the same audio with
    another chunk size (20 s in a fresh subprocess whose peak RSS is measured, 7.3 s here).
    The 2-minute test above checks chunking against the true full pass.
    """
    model = make_model()
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "c.npy"
    script = textwrap.dedent(
        f"""
        import numpy as np, torch
        from cpcspeech.model.cpc import CPCModel
        torch.set_num_threads(2)
        model = CPCModel.from_pretrained({str(tmp_path / "model")!r}).eval()
        wav = 0.1 * torch.randn(16000 * 3600 + 37, generator=torch.Generator().manual_seed(1))
        np.save({str(out)!r}, model.extract(wav, chunk_seconds=20.0).numpy())
        """
    )
    # A fresh parent whose only child is the worker, so RUSAGE_CHILDREN is that worker's peak.
    measure = (
        "import resource, subprocess, sys; "
        "subprocess.run([sys.executable, '-c', sys.argv[1]], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    result = subprocess.run(
        [sys.executable, "-c", measure, script],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,  # the worker imports cpcspeech from the clone
    )
    peak_kib = int(result.stdout.split()[-1])  # Linux reports KiB
    assert peak_kib * 1024 < 1.5e9, f"peak RSS {peak_kib / 1024:.0f} MiB"
    wav = 0.1 * torch.randn(16000 * 3600 + 37, generator=torch.Generator().manual_seed(1))
    reference = model.extract(wav, chunk_seconds=7.3)
    assert reference.shape == (360_000, 256)
    torch.testing.assert_close(torch.from_numpy(np.load(out)), reference, rtol=0, atol=1e-4)


def test_extract_accepts_numpy_from_load_audio():
    """The documented API: model.extract(cpcspeech.load_audio(path)) with a numpy array."""
    import numpy as np

    torch.manual_seed(0)
    model = CPCModel().eval()
    wav = np.random.default_rng(0).normal(0, 0.1, 4000).astype(np.float32)
    out = model.extract(wav)
    assert out.shape == (model.num_frames(4000), 256)
    torch.testing.assert_close(out, model.extract(torch.from_numpy(wav)))


@pytest.mark.parametrize(
    "overrides",
    [{}, {"norm": "channel", "context_type": "lstm", "context_layers": 2}, {"norm": "batch"}],
    ids=["paper", "channel-lstm2", "batch"],
)
def test_random_model_is_seeded_locally_and_equals_the_global_seed_recipe(overrides) -> None:
    """--model random: the weights of torch.manual_seed(s); CPCModel(), without touching the
    global RNG (so features of a seed stay what they were)."""
    config = ModelConfig(encoder_channels=32, context_dim=16, **overrides)
    for seed in (0, 3):
        torch.manual_seed(seed)
        expected = CPCModel(config).state_dict()
        torch.manual_seed(1234)
        before = torch.get_rng_state()
        found = random_model(seed, config).state_dict()
        assert torch.equal(torch.get_rng_state(), before)
        assert found.keys() == expected.keys()
        assert all(torch.equal(found[k], expected[k]) for k in expected)
    a, b = random_model(0, config).state_dict(), random_model(1, config).state_dict()
    assert not torch.equal(a["encoder.convs.0.weight"], b["encoder.convs.0.weight"])
