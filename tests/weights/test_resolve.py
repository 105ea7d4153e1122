"""Model specs -> local folders (model dirs, checkpoints, run dirs, shipped weights); export."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from paths import REPO
from samples import TINY, make_tiny_model
from typer.testing import CliRunner

from cpcspeech import load_model
from cpcspeech.cli import app
from cpcspeech.config import Config, ModelConfig, config_to_dict
from cpcspeech.errors import CPCSpeechError, ModelLoadError
from cpcspeech.model.cpc import CPCModel
from cpcspeech.weights.export import export_model, push_model
from cpcspeech.weights.resolve import (
    SHIPPED,
    describe_model_source,
    locate_model,
    resolve_model_dir,
    shipped_candidates,
    weights_sha256,
)

SMALL = ModelConfig(**TINY)


def outputs(model: CPCModel) -> tuple[torch.Tensor, torch.Tensor]:
    wav = torch.linspace(-1, 1, 1600).sin().unsqueeze(0)  # (1, 1600)
    with torch.no_grad():
        return model(wav)


def same_model(a: CPCModel, b: CPCModel) -> bool:
    za, ca = outputs(a)
    zb, cb = outputs(b)
    return torch.equal(za, zb) and torch.equal(ca, cb)


def write_checkpoint(folder: Path, step: int, seed: int) -> CPCModel:
    """A checkpoint folder as train.py writes it (model dir + meta.json + config.yaml)."""
    model = make_tiny_model(seed)
    model.save_pretrained(folder)
    meta = {
        "step": step,
        "audio_seconds": 1234.5,
        "wall_seconds": 600.0,
        "hardware": "NVIDIA H100 80GB HBM3",
        "valid_loss": 2.5,
        "valid_accuracy": [0.9, 0.8, 0.7],
        "train_loss": 2.25,
    }
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    cfg = config_to_dict(Config(model=SMALL))
    cfg["data"]["root"] = "/secret/machine/layout/speechocean762-train"
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    (folder / "heads.safetensors").write_bytes(b"not used here")
    (folder / "trainer.pt").write_bytes(b"not used here")
    return model


@pytest.fixture()
def run_dir(tmp_path: Path) -> tuple[Path, dict[int, CPCModel]]:
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    models = {
        step: write_checkpoint(ckpts / f"step-{step:08d}", step, seed=step) for step in (100, 200)
    }
    (run / "config.yaml").write_text("train: {}\n", encoding="utf-8")
    # Neither an unfinished temp folder nor a step folder without weights may be picked.
    write_checkpoint(ckpts / ".tmp-step-00000300-abcd", 300, seed=300)
    (ckpts / "step-00000300").mkdir()
    (ckpts / "step-00000300" / "config.json").write_text("{}", encoding="utf-8")
    return run, models


# ----- local folders -----
def test_model_directory_resolves_and_loads(tmp_path: Path) -> None:
    model = make_tiny_model(0)
    folder = model.save_pretrained(tmp_path / "m")
    assert resolve_model_dir(str(folder)) == folder
    source = locate_model(folder)
    assert source.kind == "directory"
    loaded = CPCModel.from_pretrained(str(folder))
    assert same_model(model, loaded)
    text = describe_model_source(str(folder))
    assert "local directory" in text and weights_sha256(folder)[:12] in text
    short = source.describe(short=True)  # for figure titles: no local paths
    assert short == f"directory weights 'm', sha256 {weights_sha256(folder)[:12]}..."
    assert str(tmp_path) not in short


def test_checkpoint_folder_is_a_model_directory(run_dir) -> None:
    run, models = run_dir
    folder = run / "checkpoints" / "step-00000100"
    source = locate_model(str(folder))
    assert source.kind == "checkpoint" and source.directory == folder
    assert same_model(CPCModel.from_pretrained(str(folder)), models[100])
    assert describe_model_source(str(folder)).startswith(f"checkpoint {folder}")


def test_run_dir_uses_latest_checkpoint_without_best(run_dir) -> None:
    run, models = run_dir
    source = locate_model(str(run))
    assert source.directory == run / "checkpoints" / "step-00000200"
    assert "latest checkpoint, step 200" in source.detail
    assert same_model(load_model(str(run))[0], models[200])
    # The checkpoints/ folder itself works too.
    assert resolve_model_dir(str(run / "checkpoints")) == source.directory


def test_run_dir_prefers_best_txt(run_dir) -> None:
    run, models = run_dir
    (run / "checkpoints" / "best.txt").write_text("step-00000100\n", encoding="utf-8")
    source = locate_model(str(run))
    assert source.directory == run / "checkpoints" / "step-00000100"
    assert "best.txt" in source.detail
    assert same_model(load_model(str(run))[0], models[100])
    assert "best.txt" in describe_model_source(str(run))


def test_from_pretrained_names_load_model_for_every_other_spec(run_dir, tmp_path, monkeypatch):
    """CPCModel.from_pretrained loads a model directory; the rest is cpcspeech.load_model's."""
    run, models = run_dir
    monkeypatch.chdir(tmp_path)
    for spec in ("default", "org/name", str(run), "librilight-60k", "missing"):
        with pytest.raises(ModelLoadError, match=re.escape(f"cpcspeech.load_model({spec!r})")):
            CPCModel.from_pretrained(spec)
    with pytest.raises(ModelLoadError, match=re.escape("load_model('org/name', revision='v1')")):
        CPCModel.from_pretrained("org/name", revision="v1")
    folder = run / "checkpoints" / "step-00000200"
    with pytest.raises(ModelLoadError, match="only a Hub repo id takes"):
        CPCModel.from_pretrained(folder, revision="v1")
    loaded = CPCModel.from_pretrained(folder)
    assert not loaded.training and same_model(loaded, load_model(folder)[0])


def test_best_txt_naming_a_missing_folder_is_an_error(run_dir) -> None:
    run, _ = run_dir
    (run / "checkpoints" / "best.txt").write_text("step-00000050\n", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="best.txt names 'step-00000050'"):
        resolve_model_dir(str(run))


def test_run_dir_without_checkpoints_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ModelLoadError, match="has training saved a checkpoint yet"):
        resolve_model_dir(str(tmp_path / "run"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="found neither"):
        resolve_model_dir(str(tmp_path / "empty"))


def test_file_instead_of_folder_is_an_error(tmp_path: Path) -> None:
    folder = make_tiny_model(0).save_pretrained(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="found a file"):
        resolve_model_dir(str(folder / "model.safetensors"))


def test_existing_path_wins_over_repo_id(tmp_path: Path, monkeypatch) -> None:
    model = make_tiny_model(3)
    model.save_pretrained(tmp_path / "org" / "name")
    monkeypatch.chdir(tmp_path)
    assert locate_model("org/name").kind == "directory"  # no network: it is a local folder
    assert same_model(CPCModel.from_pretrained("org/name"), model)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("foo", "accepted model specs"),
        ("a b/c", "accepted model specs"),
        ("org/na me", "accepted model specs"),
        ("a/b/c", "accepted model specs"),
        ("", "empty"),
        ("./missing-model", "no such path"),
        ("/nonexistent/model/dir", "no such path"),
        ("org/name@", "expected a revision after '@'"),
    ],
)
def test_unknown_specs_are_clear_errors(spec: str, message: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match=message):
        resolve_model_dir(spec)


def test_revision_rules(tmp_path: Path) -> None:
    folder = make_tiny_model(0).save_pretrained(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="applies only to Hub repo ids"):
        resolve_model_dir(str(folder), revision="v1")
    with pytest.raises(ModelLoadError, match="applies only to Hub repo ids"):
        resolve_model_dir("default", revision="v1")
    with pytest.raises(ModelLoadError, match="revision given twice and they differ"):
        resolve_model_dir("org/name@v1", revision="v2")


def test_default_is_the_shipped_weights_or_a_clear_error() -> None:
    entry = SHIPPED["cpc-speechocean762"]
    shipped = REPO / "pretrained" / entry.folder
    assert shipped in shipped_candidates(entry.folder)
    assert entry.hub_repo_id is None  # no Hub mirror exists; do not pretend one does
    if (shipped / "config.json").is_file() and (shipped / "model.safetensors").is_file():
        source = locate_model("default")
        assert source.kind == "shipped" and source.directory == shipped
        load_model("default")
        assert describe_model_source("default").startswith("shipped weights")
    else:
        with pytest.raises(ModelLoadError, match="shipped weights 'cpc-speechocean762' are not"):
            load_model("default")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_model_loads_by_name_and_its_card_names_its_bytes(name: str) -> None:
    """Each shipped folder loads strictly by its short name, and its model card gives the
    sha256 of the weights file it ships with (a card left stale by new weights fails here)."""
    folder = REPO / "pretrained" / SHIPPED[name].folder
    if not (folder / "model.safetensors").is_file():
        pytest.skip("weights not in this checkout")
    model, source = load_model(name)
    assert source.kind == "shipped" and source.directory == folder
    assert model.c_dim == 256
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert weights_sha256(folder) in card


# ----- export -----
def test_export_writes_a_loadable_directory_and_card(run_dir, tmp_path: Path) -> None:
    run, models = run_dir
    out = tmp_path / "exported" / "cpc-test"
    result = export_model(str(run), out)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    source_dir = run / "checkpoints" / "step-00000200"
    assert (out / "model.safetensors").read_bytes() == (
        source_dir / "model.safetensors"
    ).read_bytes()
    assert result.sha256 == weights_sha256(out)
    assert same_model(CPCModel.from_pretrained(str(out)), models[200])
    card = (out / "README.md").read_text(encoding="utf-8")
    for needle in (
        "library_name: cpcspeech",
        "| steps | 200 |",
        "1234 s (0.34 h)",
        "600 s (0.17 h)",
        "NVIDIA H100 80GB HBM3",
        "0.900, 0.800, 0.700",
        "## Probe results",
        "Not measured",
        "root: speechocean762-train",
        result.sha256,
    ):
        assert needle in card, needle
    assert "/secret/machine" not in card
    # Atomic: no temporary folder is left beside the output.
    assert [p.name for p in out.parent.iterdir()] == ["cpc-test"]
    with pytest.raises(CPCSpeechError, match="already exists"):
        export_model(str(run), out)
    export_model(str(run / "checkpoints" / "step-00000100"), out, overwrite=True)
    assert same_model(CPCModel.from_pretrained(str(out)), models[100])
    assert [p.name for p in out.parent.iterdir()] == ["cpc-test"]


def test_export_refuses_broken_weights_and_leaves_nothing(run_dir, tmp_path: Path) -> None:
    run, _ = run_dir
    ckpt = run / "checkpoints" / "step-00000200"
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    out = tmp_path / "exported" / "x"
    with pytest.raises(ModelLoadError, match="not a valid safetensors file"):
        export_model(str(ckpt), out)
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())
    with pytest.raises(ModelLoadError, match="expected a local checkpoint"):
        export_model("org/name", out)


def test_export_and_push_commands(run_dir, tmp_path: Path) -> None:
    run, _ = run_dir
    runner = CliRunner()
    out = tmp_path / "cli-export"
    result = runner.invoke(app, ["export", str(run), str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "latest checkpoint, step 200" in result.output
    result = runner.invoke(app, ["export", str(tmp_path / "nothing-here"), str(tmp_path / "y")])
    assert result.exit_code == 2
    # push validates the folder before any network use.
    result = runner.invoke(app, ["push", str(run), "org/name"])
    assert result.exit_code == 2


def test_push_validates_before_uploading(tmp_path: Path) -> None:
    folder = make_tiny_model(0).save_pretrained(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="expected a model card"):
        push_model(folder, "org/name")
    (folder / "README.md").write_text("card\n", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="accepted model specs"):
        push_model(folder, "not a repo id")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="expected model.safetensors"):
        push_model(folder, "org/name")
    with pytest.raises(ModelLoadError, match="found no folder"):
        push_model(tmp_path / "missing", "org/name")


# ----- packaging -----
@pytest.mark.slow
def test_wheel_ships_and_finds_the_weights(tmp_path: Path) -> None:
    """A non-editable install (built from a copy of the repo) includes pretrained/<name>/."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "cpcspeech", src / "cpcspeech", ignore=shutil.ignore_patterns("__pycache__")
    )
    shipped = src / "pretrained" / SHIPPED["cpc-speechocean762"].folder
    model = make_tiny_model(7)
    model.save_pretrained(shipped)
    (shipped / "README.md").write_text("# test card\n", encoding="utf-8")
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(dist), str(src)],
        check=True,
    )  # fmt: skip
    (wheel,) = dist.glob("cpcspeech-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("config.json", "model.safetensors", "README.md"):
        assert f"cpcspeech/shipped/cpc-speechocean762/{name}" in names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(target), str(wheel)],
        check=True,
    )  # fmt: skip
    script = (
        "import cpcspeech, json; from cpcspeech.weights.resolve import locate_model; "
        "s = locate_model('default'); cpcspeech.load_model('default'); "
        "print(json.dumps([cpcspeech.__file__, str(s.directory), s.kind]))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    package_file, directory, kind = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(package_file).is_relative_to(target)
    assert Path(directory) == target / "cpcspeech" / "shipped" / "cpc-speechocean762"
    assert kind == "shipped"
    loaded = CPCModel.from_directory(directory)
    assert same_model(loaded, model)
