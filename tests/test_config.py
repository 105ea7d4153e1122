"""Config loading: round trips, unknown keys, type coercion, required paths, --set overrides."""

import dataclasses
from pathlib import Path

import pytest
import yaml
from paths import REPO

from cpcspeech.config import (
    CHOICES,
    RANGES,
    SECTION_NAMES,
    AugmentConfig,
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    load_config,
    save_config,
)
from cpcspeech.errors import ConfigError

RECIPES = sorted((REPO / "recipes").glob("*/*.yaml"))
SECTION_CLASSES = (ModelConfig, LossConfig, DataConfig, OptimConfig, TrainConfig, AugmentConfig)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_round_trip_equal(tmp_path):
    cfg = load_config(_write(tmp_path, "data:\n  root: /data\n"), ["optim.lr=3e-4"])
    save_config(cfg, tmp_path / "saved.yaml")
    again = load_config(tmp_path / "saved.yaml")
    assert again == cfg
    assert isinstance(again.model.encoder_kernels, tuple)


def test_unknown_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*learning_rate"):
        load_config(_write(tmp_path, "data:\n  root: /d\noptim:\n  learning_rate: 1\n"))
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(_write(tmp_path, "data:\n  root: /d\nwhatever:\n  a: 1\n"))


def test_scientific_notation_becomes_float(tmp_path):
    # PyYAML reads "1e-4" (no dot) as a string; the config coerces it by field type.
    cfg = load_config(_write(tmp_path, "data:\n  root: /d\noptim:\n  lr: 1e-4\n"))
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == pytest.approx(1e-4)


def test_missing_required_path_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.root is required"):
        load_config(_write(tmp_path, "data:\n  root: '???'\n"))


def test_set_overrides_and_relative_paths(tmp_path):
    path = _write(tmp_path, "data:\n  root: corpus\n")
    cfg = load_config(path, ["train.max_steps=7", "model.norm=channel", "data.window=2560"])
    assert (cfg.train.max_steps, cfg.model.norm, cfg.data.window) == (7, "channel", 2560)
    assert cfg.data.root == str((tmp_path / "corpus").resolve())
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(path, ["max_steps=7"])
    with pytest.raises(ConfigError, match="expected int"):
        load_config(path, ["train.max_steps=many"])


def test_bad_choice_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(_write(tmp_path, "data:\n  root: /d\n"), ["train.precision=fp8"])


@pytest.mark.parametrize("path", RECIPES, ids=[f"{p.parent.name}/{p.stem}" for p in RECIPES])
def test_recipes_parse(path):
    """Every recipe loads once its required paths are set, and holds only known keys."""
    overrides = [f"data.{key}=/x" for key in ("root", "train_list", "valid_list")]
    text = path.read_text(encoding="utf-8")
    cfg = load_config(path, [o for o in overrides if "???" in text])
    assert isinstance(cfg, Config)
    assert cfg.data.batch_size % max(cfg.data.speakers_per_batch, 1) == 0


def test_librispeech_recipe_needs_paths():
    path = REPO / "recipes" / "librispeech" / "conf.yaml"
    if not path.is_file():
        pytest.skip("recipes/librispeech/conf.yaml not written yet")
    with pytest.raises(ConfigError, match=r"data\.root is required"):
        load_config(path)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("model", "encoder_channels", 10**9, r"model\.encoder_channels must be in \[1, 4096\]"),
        ("model", "encoder_kernels", (10, 0, 4, 4, 4), r"model\.encoder_kernels must be in"),
        ("model", "norm", "groupNorm", r"model\.norm must be one of .*found 'groupNorm'"),
        ("loss", "num_negatives", 0, r"loss\.num_negatives must be in \[1, 100000\]; found 0"),
        ("loss", "negative_mode", "other", r"loss\.negative_mode must be one of"),
        ("data", "batch_size", -1, r"data\.batch_size must be in \[1, "),
        ("optim", "lr", 0.0, r"optim\.lr must be in \(0, 10\]; found 0"),
        ("optim", "betas", (0.9, 1.0), r"optim\.betas must be in \[0, 1\) \(each value\)"),
        ("train", "max_steps", 0, r"train\.max_steps must be in \[1, "),
        ("train", "precision", "fp8", r"train\.precision must be one of"),
        ("augment", "pitch_p", 1.5, r"augment\.pitch_p must be in \[0, 1\]; found 1.5"),
    ],
)
def test_python_built_config_is_checked_like_yaml(tmp_path, section, key, value, message):
    """Ranges and choices hold whenever a section is built: in Python, from YAML, from --set."""
    sections = {
        "model": ModelConfig,
        "loss": LossConfig,
        "data": DataConfig,
        "optim": OptimConfig,
        "train": TrainConfig,
        "augment": AugmentConfig,
    }
    with pytest.raises(ConfigError, match=message) as in_python:
        sections[section](**{key: value})
    listed = list(value) if isinstance(value, tuple) else value
    path = _write(tmp_path, yaml.safe_dump({"data": {"root": "/d"}, section: {key: listed}}))
    with pytest.raises(ConfigError, match=message) as from_yaml:
        load_config(path)
    assert str(in_python.value) == str(from_yaml.value)
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, "data:\n  root: /d\n"), [f"{section}.{key}={listed}"])


def test_python_built_config_rejects_non_numbers():
    with pytest.raises(ConfigError, match=r"model\.encoder_channels must be a number .*'512'"):
        ModelConfig(encoder_channels="512")
    with pytest.raises(ConfigError, match=r"model\.sample_rate must be a number .*True"):
        ModelConfig(sample_rate=True)
    with pytest.raises(ConfigError, match=r"optim\.grad_clip must be in \[0, inf\); found nan"):
        OptimConfig(grad_clip=float("nan"))
    assert ModelConfig(encoder_kernels=[10, 8, 4, 4, 4]).encoder_kernels == [10, 8, 4, 4, 4]


def test_every_range_and_choice_names_a_field_of_its_section():
    for table in (RANGES, CHOICES):
        for name, fields in table.items():
            cls = {c.__name__: c for c in SECTION_CLASSES}[name]
            assert set(fields) <= {f.name for f in dataclasses.fields(cls)}, name
    assert {c.__name__ for c in SECTION_CLASSES} == set(SECTION_NAMES)
