"""Config loading: round trips, unknown keys, type coercion, required paths, --set overrides."""

from pathlib import Path

import pytest

from cpcspeech.config import Config, load_config, save_config
from cpcspeech.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*/conf.yaml"))


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


@pytest.mark.parametrize("path", RECIPES, ids=[p.parent.name for p in RECIPES])
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
