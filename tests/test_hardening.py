"""Bad input through the CLI, as a user would give it: exit 2, one line naming the problem, nothing
left behind. One test per case of issue 11, and the cases found while probing every command."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from cpcspeech.cli import app

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke" / "conf.yaml"
runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, *fragments: str) -> str:
    """Exit 2, no traceback, exactly one 'error:' line holding every fragment; returns it."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def noise_wav(path: Path, seconds: float = 0.5, rate: int = 16000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    sf.write(str(path), rng.normal(0, 0.1, int(rate * seconds)).astype(np.float32), rate)
    return path


# ----- item 6 and 7: configs -----


def _conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("optim.lr=-1", ["optim.lr must be in (0, 10]", "found -1.0"]),
        ("optim.lr=.nan", ["optim.lr must be in (0, 10]", "found nan"]),
        ("train.max_steps=0", ["train.max_steps must be in [1, 1000000000]", "found 0"]),
        ("train.max_steps=-5", ["train.max_steps", "found -5"]),
        ("train.log_every=0", ["train.log_every must be in [1, ", "found 0"]),
        ("train.max_steps=1e400", ["train.max_steps: expected int", "1e400"]),
        ("optim.betas=[0.9,1.5]", ["optim.betas must be in [0, 1) (each value)", "found 1.5"]),
        ("model.encoder_strides=[5,0,2,2,2]", ["model.encoder_strides must be in [1, 1024]"]),
        ("model.encoder_kernels=[10,-8,4,4,4]", ["model.encoder_kernels", "found -8"]),
        ("data.window=0", ["data.window must be in [1, ", "found 0"]),
        ("data.seed=-1", ["data.seed must be in [0, ", "found -1"]),
    ],
)
def test_out_of_range_settings_are_refused_at_load(tmp_path, override, fragments):
    run = tmp_path / "run"
    result = cli("train", str(SMOKE), "--set", f"data.root={tmp_path}", "--set", override,
                 "--set", f"train.out_dir={run}")  # fmt: skip
    assert_one_line_error(result, *fragments)
    assert not run.exists()


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("loss.prediction_steps=20", ["data.window = 2560 samples gives 16 frame(s)",
                                      "loss.prediction_steps = 20", "must be >= 3359"]),
        ("data.window=100", ["data.window = 100 samples gives 0 frame(s)"]),
    ],
)  # fmt: skip
def test_window_too_short_for_the_prediction_steps_fails_before_the_run_folder(
    tmp_path, override, fragments
):
    run = tmp_path / "run"
    result = cli("train", str(SMOKE), "--set", f"data.root={tmp_path}", "--set", override,
                 "--set", f"train.out_dir={run}")  # fmt: skip
    assert_one_line_error(result, *fragments)
    assert not run.exists()


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("- model\n- data\n", ["expected a mapping of sections, found list"]),
        ("42\n", ["expected a mapping of sections, found int 42"]),
        ("model: 3\n", ["config section 'model': expected a mapping of keys, found int 3"]),
        ("model:\n  norm: [channel\n", ["conf.yaml:", "expected valid YAML"]),
        ("data:\n\troot: x\n", ["conf.yaml:2: expected valid YAML"]),
        ("\xff\xfe", []),
    ],
)
def test_yaml_that_is_not_a_config_is_one_line(tmp_path, text, fragments):
    path = tmp_path / "conf.yaml"
    if text == "\xff\xfe":
        path.write_bytes(b"\xff\xfemodel: 1\n")
        fragments = ["expected UTF-8 text, found byte 0xff"]
    else:
        path.write_text(text, encoding="utf-8")
    assert_one_line_error(cli("train", str(path)), *fragments)


def test_bad_set_value_yaml_is_one_line(tmp_path):
    result = cli("train", str(SMOKE), "--set", "data.root=[a")
    assert_one_line_error(result, "--set 'data.root=[a'", "not valid YAML")


def test_every_numeric_field_has_a_range_that_holds_its_default():
    import dataclasses
    import typing

    from cpcspeech.config import RANGES, Config

    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        hints = typing.get_type_hints(cls)
        default = cls() if section.name != "data" else cls(root="/d")
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            args = typing.get_args(tp)
            numeric = tp in (int, float) or (args and args[0] in (int, float))
            if numeric:
                assert f.name in RANGES[cls.__name__], f"{section.name}.{f.name} has no range"
                RANGES[cls.__name__][f.name].check(f.name, getattr(default, f.name))
