"""--overwrite never deletes what the command did not create (issue 20, class 3).

The rule (cpcspeech.files.check_output_apart): an output that would be replaced must not be, hold
or lie inside any input, compared as given and as real paths (symlinks followed). Every command
with --overwrite (convert, export) is run through the CLI on a real input.
"""

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cpcspeech.cli import app
from cpcspeech.errors import CPCSpeechError
from cpcspeech.files import check_output_apart

REPO = Path(__file__).resolve().parents[1]
CPC_AUDIO = REPO / "tests" / "data" / "cpc_audio"
TRAIN_RUN = REPO / "tests" / "data" / "train_compat" / "run"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


def _refused(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for word in ("--overwrite", *words):
        assert word in lines[0], lines[0]


# ----- the rule -----


def test_rule_is_holds_lies_inside(tmp_path):
    src = tmp_path / "run"
    (src / "sub").mkdir(parents=True)
    for out, relation in ((src, "is"), (tmp_path, "holds"), (src / "sub", "lies inside")):
        with pytest.raises(CPCSpeechError, match=f"which {relation} the input"):
            check_output_apart(out, [src], "convert")
    check_output_apart(tmp_path / "elsewhere", [src], "convert")  # apart: fine
    check_output_apart(tmp_path / "run2", [src], "convert")  # a name prefix is not a parent


def test_rule_follows_symlinks_both_ways(tmp_path):
    src = tmp_path / "run"
    src.mkdir()
    link = tmp_path / "link"
    link.symlink_to(src)
    with pytest.raises(CPCSpeechError, match="which is the input"):
        check_output_apart(link, [src], "export")  # the output is a symlink to the input
    with pytest.raises(CPCSpeechError, match="which is the input"):
        check_output_apart(src, [link], "export")  # the input was given through a symlink
    inner = src / "inner-link"
    inner.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CPCSpeechError, match="lies inside"):
        check_output_apart(inner, [src], "export")  # the link itself is part of the input


# ----- convert -----


@pytest.fixture
def cpc_run(tmp_path) -> Path:
    run = tmp_path / "cpc_run"
    shutil.copytree(CPC_AUDIO / "run_instancenorm_lstm2", run)
    return run


def test_convert_run_onto_itself_keeps_the_run(cpc_run):
    before = _snapshot(cpc_run)
    _refused(_run("convert", str(cpc_run), str(cpc_run), "--overwrite"), str(cpc_run), "is")
    assert _snapshot(cpc_run) == before


def test_convert_into_a_folder_holding_the_source(tmp_path, cpc_run):
    release = tmp_path / "models" / "release.pt"
    release.parent.mkdir()
    shutil.copyfile(CPC_AUDIO / "release_id_rnn3.pt", release)
    _refused(_run("convert", str(release), str(release.parent), "--overwrite"), "holds")
    assert release.is_file()
    _refused(_run("convert", str(release), str(release), "--overwrite"), "is")
    assert release.is_file()
    (cpc_run / "converted").mkdir()
    _refused(_run("convert", str(cpc_run), str(cpc_run / "converted"), "--overwrite"), "inside")
    assert (cpc_run / "checkpoint_2.pt").is_file()


def test_convert_overwrite_through_a_symlink_is_refused(tmp_path, cpc_run):
    link = tmp_path / "alias"
    link.symlink_to(cpc_run)
    before = _snapshot(cpc_run)
    _refused(_run("convert", str(cpc_run), str(link), "--overwrite"), "is")
    assert _snapshot(cpc_run) == before and link.is_symlink()


def test_convert_overwrite_still_replaces_its_own_output(tmp_path, cpc_run):
    out = tmp_path / "converted"
    assert _run("convert", str(cpc_run), str(out)).exit_code == 0
    (out / "stale.txt").write_text("from before\n", encoding="utf-8")
    result = _run("convert", str(cpc_run), str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()


# ----- export -----


@pytest.fixture
def train_run(tmp_path) -> Path:
    run = tmp_path / "runs" / "x"
    shutil.copytree(TRAIN_RUN, run)
    return run


def test_export_run_onto_itself_keeps_the_run(train_run):
    before = _snapshot(train_run)
    _refused(_run("export", str(train_run), str(train_run), "--overwrite"), "is")
    assert _snapshot(train_run) == before


def test_export_into_the_checkpoint_or_above_the_run(train_run):
    before = _snapshot(train_run)
    checkpoint = train_run / "checkpoints" / "step-00000002"
    _refused(_run("export", str(train_run), str(checkpoint), "--overwrite"), "is")
    _refused(_run("export", str(checkpoint), str(train_run.parent), "--overwrite"), "holds")
    _refused(_run("export", str(train_run), str(train_run / "checkpoints"), "--overwrite"), "input")
    assert _snapshot(train_run) == before


def test_export_overwrite_replaces_an_unrelated_folder(tmp_path, train_run):
    out = tmp_path / "exported"
    out.mkdir()
    (out / "old.txt").write_text("old\n", encoding="utf-8")
    result = _run("export", str(train_run), str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (out / "old.txt").exists() and (out / "config.json").is_file()
    assert os.path.isdir(train_run / "checkpoints" / "step-00000002")
