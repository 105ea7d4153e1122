"""Importing CPC_audio checkpoints: equality with CPC_audio's own outputs, safety, strictness.

The fixtures in tests/data/cpc_audio/ were made with CPC_audio's real model code by
tests/fixtures/make_cpc_audio_fixtures.py (see its docstring and manifest.json there).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import REPO, TESTS_DATA
from typer.testing import CliRunner

from cpcspeech.cli import app
from cpcspeech.errors import ConfigError, ModelLoadError
from cpcspeech.io.audio import load_audio
from cpcspeech.model.cpc import CPCModel
from cpcspeech.weights.convert import (
    convert,
    convert_checkpoint,
    file_sha256,
    model_config_from_cpc_audio,
    read_cpc_audio,
)
from cpcspeech.weights.resolve import load_model, locate_model, resolve_model_dir

FIXTURES = TESTS_DATA / "cpc_audio"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8"))
VARIANTS = sorted(MANIFEST["variants"])
RUN = FIXTURES / "run_instancenorm_lstm2"
RELEASE = FIXTURES / "release_layernorm_lstm2.pt"
runner = CliRunner()


def invoke(args: list[str]):
    return runner.invoke(app, args, env={"COLUMNS": "300"})


def source_path(name: str) -> Path:
    return (
        FIXTURES / name
        if MANIFEST["variants"][name]["format"] == "run"
        else FIXTURES / f"{name}.pt"
    )


def long_signal(wav: np.ndarray) -> np.ndarray:
    """The fixture script's tiling of the example file."""
    total = MANIFEST["long_seconds"] * 16000
    return np.tile(wav, -(-total // wav.shape[0]))[:total]


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "reference.npz") as data:
        return dict(data)


# ----- equality with CPC_audio's own code -----
@pytest.mark.parametrize("name", VARIANTS)
def test_converted_model_reproduces_cpc_audio(name: str, reference) -> None:
    model, _ = convert_checkpoint(source_path(name))
    wav = load_audio(REPO / MANIFEST["audio"])
    long = long_signal(wav)
    step = MANIFEST["long_step"]
    for layer in ("z", "c"):
        full = model.extract(wav, layer=layer).numpy()
        np.testing.assert_allclose(full, reference[f"{name}/audio/{layer}"], rtol=0, atol=1e-5)
        # 30 s in chunks of 7.3 s: the recurrent state and the encoder margins carry across.
        chunked = model.extract(long, layer=layer, chunk_seconds=7.3).numpy()[::step]
        np.testing.assert_allclose(chunked, reference[f"{name}/long/{layer}"], rtol=0, atol=1e-5)


def test_config_mapping_of_the_fixtures() -> None:
    configs = {name: convert_checkpoint(source_path(name))[0].config for name in VARIANTS}
    assert (
        configs["release_layernorm_lstm2"].norm,
        configs["release_layernorm_lstm2"].context_type,
    ) == ("channel", "lstm")
    assert configs["release_batchnorm_gru"].norm == "batch"
    assert configs["release_batchnorm_gru"].context_dim == 12
    assert (configs["release_id_rnn3"].norm, configs["release_id_rnn3"].context_layers) == (
        "none",
        3,
    )
    assert configs["run_instancenorm_lstm2"].norm == "instance"


# ----- run folders -----
def test_run_folder_takes_the_newest_checkpoint_unless_named(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    data = torch.load(run / "checkpoint_2.pt", weights_only=True)
    older = {
        **data,
        "gEncoder": {k: v + 1 if v.is_floating_point() else v for k, v in data["gEncoder"].items()},
    }
    torch.save(older, run / "checkpoint_10.pt")  # newest by number, not by name order
    newest, ckpt = convert_checkpoint(run)
    assert ckpt.path.name == "checkpoint_10.pt"
    named, ckpt2 = convert_checkpoint(run, checkpoint="checkpoint_2.pt")
    assert ckpt2.path.name == "checkpoint_2.pt"
    wav = torch.randn(4000, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(newest.extract(wav), named.extract(wav))
    with pytest.raises(ModelLoadError, match="checkpoint_7.pt"):
        convert_checkpoint(run, checkpoint="checkpoint_7.pt")
    (run / "checkpoint_args.json").unlink()
    with pytest.raises(ModelLoadError, match="checkpoint_args.json"):
        read_cpc_audio(run)


def test_criterion_optimizer_and_best_are_ignored_and_named() -> None:
    ckpt = read_cpc_audio(RUN)
    assert ckpt.kind == "run"
    assert [n.split()[0] for n in ckpt.ignored] == ["cpcCriterion", "optimizer", "best"]
    assert all(n.startswith(("gEncoder.", "gAR.")) for n in ckpt.weights)
    assert read_cpc_audio(RELEASE).ignored == ()


# ----- safety -----
class _CreatesAFile:
    """A pickle payload: a full unpickle would call open(path, "w") and create the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    weights = read_cpc_audio(RELEASE).weights
    evil = tmp_path / "evil.pt"
    torch.save({"config": {"payload": _CreatesAFile(target)}, "weights": weights}, evil)
    assert not target.exists()
    with pytest.raises(ModelLoadError, match=r"refused.*weights_only=True"):
        convert_checkpoint(evil)
    with pytest.raises(ModelLoadError, match="refused"):
        load_model(str(evil))
    result = invoke(["convert", str(evil), str(tmp_path / "out")])
    assert result.exit_code == 2 and "refused" in result.output
    assert not target.exists()
    assert not (tmp_path / "out").exists()


def test_not_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelLoadError, match="refused"):
        convert_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(ModelLoadError, match=r"keys \['config', 'weights'\]"):
        convert_checkpoint(other)


# ----- strictness -----
def _release_with(tmp_path: Path, edit) -> Path:
    data = torch.load(RELEASE, weights_only=True)
    edit(data["weights"])
    path = tmp_path / "edited.pt"
    torch.save(data, path)
    return path


def test_missing_extra_and_misshapen_tensors_are_errors(tmp_path: Path) -> None:
    missing = _release_with(tmp_path, lambda w: w.pop("gAR.baseNet.bias_hh_l1"))
    with pytest.raises(ModelLoadError, match=r"unfilled model tensors \['context.bias_hh_l1'\]"):
        convert_checkpoint(missing)
    extra = _release_with(tmp_path, lambda w: w.update({"gAR.extra.weight": torch.zeros(2)}))
    with pytest.raises(ModelLoadError, match=r"unused source tensors \['gAR.extra.weight'\]"):
        convert_checkpoint(extra)
    # A tensor of a layer the config does not have (a third LSTM layer) is unused, not dropped.
    deeper = _release_with(
        tmp_path, lambda w: w.update({"gAR.baseNet.weight_ih_l2": torch.zeros(64, 16)})
    )
    with pytest.raises(
        ModelLoadError, match=r"unused source tensors \['gAR.baseNet.weight_ih_l2'\]"
    ):
        convert_checkpoint(deeper)
    shape = _release_with(tmp_path, lambda w: w.update({"gEncoder.conv1.bias": torch.zeros(17)}))
    with pytest.raises(
        ModelLoadError, match=r"encoder.convs.1.bias expected shape \(16,\), found \(17,\)"
    ):
        convert_checkpoint(shape)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        (
            "arMode",
            "transformer",
            r"arMode: expected one of \['GRU', 'LSTM', 'RNN'\], found 'transformer'",
        ),
        ("arMode", "no_ar", r"arMode: .*found 'no_ar'"),
        ("cpc_mode", "reverse", r"cpc_mode: .*found 'reverse' \(a reversed"),
        ("cpc_mode", "bert", r"cpc_mode: .*found 'bert' \(a bidirectional AR\)"),
        ("encoder_type", "mfcc", r"encoder_type: expected 'cpc' .*found 'mfcc'"),
        ("normMode", "groupNorm", r"normMode: .*found 'groupNorm'"),
        ("load", ["a.pt", "b.pt"], r"load: expected at most one checkpoint, found 2"),
        ("nLevelsGRU", 0, r"nLevelsGRU: expected an integer >= 1, found 0"),
    ],
)
def test_unsupported_architectures_are_named(setting: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        model_config_from_cpc_audio({setting: value})


def test_defaults_are_cpc_audios() -> None:
    config = model_config_from_cpc_audio({})
    assert (config.encoder_channels, config.norm, config.context_type) == (256, "channel", "lstm")
    assert (config.context_dim, config.context_layers) == (256, 1)


# ----- model directory, card, CLI, --model -----
def test_convert_command_writes_a_model_directory_with_its_card(tmp_path: Path) -> None:
    out = tmp_path / "converted"
    result = invoke(["convert", str(RUN), str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert file_sha256(RUN / "checkpoint_2.pt") in card
    assert "checkpoint_2.pt" in card and '"normMode": "instanceNorm"' in card
    assert "MIT" in card
    for entry in ("cpcCriterion", "optimizer", "best"):
        assert f"`{entry} (whole entry)`" in card
    loaded = CPCModel.from_pretrained(out)
    direct, _ = convert_checkpoint(RUN)
    wav = torch.randn(8000, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(loaded.extract(wav), direct.extract(wav), rtol=0, atol=0)
    again = invoke(["convert", str(RELEASE), str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    assert invoke(["convert", str(RELEASE), str(out), "--overwrite"]).exit_code == 0
    assert convert(RELEASE, tmp_path / "second").out_dir.is_dir()


def test_model_option_takes_a_checkpoint_file_or_run_folder(tmp_path: Path, reference) -> None:
    audio = REPO / MANIFEST["audio"]
    for spec, name in ((RELEASE, "release_layernorm_lstm2"), (RUN, "run_instancenorm_lstm2")):
        out = tmp_path / f"{name}.npy"
        result = runner.invoke(
            app,
            ["extract", str(audio), "--out", str(out), "--model", str(spec), "--layer", "z", "-q"],
        )
        assert result.exit_code == 0, result.output
        assert "CPC_audio checkpoint" in result.output
        np.testing.assert_allclose(np.load(out), reference[f"{name}/audio/z"], rtol=0, atol=1e-5)
    out = tmp_path / "c1.npy"
    result = runner.invoke(
        app,
        ["extract", str(audio), "--out", str(out), "--model", str(RELEASE), "--layer", "c1", "-q"],
    )
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == reference["release_layernorm_lstm2/audio/c"].shape
    assert locate_model(str(RUN)).kind == "cpc_audio"
    with pytest.raises(ModelLoadError, match="cpcspeech convert"):
        resolve_model_dir(str(RELEASE))
    model, source = load_model(str(RELEASE))
    assert model.config.context_layers == 2 and not model.training and source.kind == "cpc_audio"
    with pytest.raises(ModelLoadError, match=r"use cpcspeech\.load_model"):
        CPCModel.from_pretrained(str(RELEASE))


def test_export_points_cpc_audio_checkpoints_to_convert(tmp_path: Path) -> None:
    from cpcspeech.weights.export import export_model

    with pytest.raises(ModelLoadError, match="cpcspeech convert"):
        export_model(str(RELEASE), tmp_path / "out")
