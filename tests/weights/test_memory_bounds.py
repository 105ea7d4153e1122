"""A small model file never exhausts memory (issue 20, class 2): every model config, whatever
format it came in (CPC_audio release file or run folder, config.json, Python), goes through the
ModelConfig ranges and the meta-device size cap before anything is allocated.

Each hostile case runs in a subprocess under a 3 GB address-space limit (RLIMIT_AS), so a
regression fails fast with MemoryError instead of taking the machine down.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cpcspeech.config import ModelConfig
from cpcspeech.errors import ConfigError
from cpcspeech.model import CPCModel
from cpcspeech.model.serialization import MAX_PARAMETERS, count_parameters

REPO = Path(__file__).resolve().parents[2]
AUDIO = REPO / "examples" / "audio" / "hello.flac"
LIMIT = 3 << 30  # bytes of address space for each hostile case

# CPC_audio settings: out of range one by one, and in range but huge together.
HOSTILE = {
    "levels": {"nLevelsGRU": 10000},
    "encoder": {"hiddenEncoder": 10**7},
    "gar": {"hiddenGar": 10**6},
    "product": {"hiddenEncoder": 4096, "hiddenGar": 4096, "nLevelsGRU": 32},
}
EXPECTED = {
    "levels": "nLevelsGRU=10000",
    "encoder": "hiddenEncoder=10000000",
    "gar": "hiddenGar=1000000",
    "product": f"at most {MAX_PARAMETERS:,} parameters",
}


def _release(path: Path, settings: dict) -> Path:
    """A tensors-only CPC_audio release file of a few hundred bytes asking for ``settings``."""
    weights = {
        "gEncoder.conv0.weight": torch.zeros(1, 1, 1),
        "gAR.baseNet.weight_ih_l0": torch.zeros(1),
    }
    torch.save({"config": {"arMode": "LSTM", **settings}, "weights": weights}, path)
    return path


def _run_folder(folder: Path, settings: dict) -> Path:
    """A CPC_audio run folder (checkpoint_args.json + checkpoint_1.pt) asking for ``settings``."""
    folder.mkdir()
    (folder / "checkpoint_args.json").write_text(json.dumps(settings), encoding="utf-8")
    torch.save({"gEncoder": {"gEncoder.conv0.weight": torch.zeros(1)}}, folder / "checkpoint_1.pt")
    return folder


def _capped(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose address space is capped at LIMIT."""
    prelude = f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, {LIMIT}))\n"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """The CLI in-process under the cap (as `cpcspeech ARGS`)."""
    return _capped(f"from cpcspeech.cli import app\napp({args!r}, prog_name='cpcspeech')", tmp_path)


def _one_error_line(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[-2000:])
    assert "MemoryError" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_convert_refuses_a_small_release_asking_for_a_huge_model(tmp_path, case):
    source = _release(tmp_path / f"{case}.pt", HOSTILE[case])
    assert source.stat().st_size < 4000  # a few kB
    result = _cli(["convert", str(source), str(tmp_path / "out")], tmp_path)
    _one_error_line(result, str(source), EXPECTED[case])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["levels", "product"])
def test_convert_refuses_a_run_folder_asking_for_a_huge_model(tmp_path, case):
    folder = _run_folder(tmp_path / "run", HOSTILE[case])
    _one_error_line(_cli(["convert", str(folder), str(tmp_path / "out")], tmp_path), EXPECTED[case])


@pytest.mark.parametrize("case", ["encoder", "product"])
def test_extract_model_option_refuses_it_before_reading_audio(tmp_path, case):
    source = _release(tmp_path / "hostile.pt", HOSTILE[case])
    args = ["extract", str(AUDIO), "--out", str(tmp_path / "f.npy"), "--model", str(source)]
    _one_error_line(_cli(args, tmp_path), EXPECTED[case])
    assert not (tmp_path / "f.npy").exists()


def test_load_model_refuses_it_for_every_caller(tmp_path):
    """cpcspeech.load_model is behind --model of abx, units, probe, tsne and train.init_from."""
    source = _release(tmp_path / "hostile.pt", HOSTILE["product"])
    result = _capped(
        f"""
        import cpcspeech
        from cpcspeech.errors import ModelLoadError
        try:
            cpcspeech.load_model({str(source)!r})
        except ModelLoadError as err:
            print("refused:", err)
        """,
        tmp_path,
    )
    assert result.returncode == 0 and "refused:" in result.stdout, result.stderr[-2000:]
    assert f"at most {MAX_PARAMETERS:,} parameters" in result.stdout


def test_a_config_json_of_a_huge_model_with_tiny_weights_is_refused(tmp_path):
    folder = tmp_path / "model"
    CPCModel(ModelConfig(encoder_channels=8, context_dim=8)).save_pretrained(folder)
    meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    meta.update(encoder_channels=4096, context_dim=4096, context_layers=32, context_type="lstm")
    (folder / "config.json").write_text(json.dumps(meta), encoding="utf-8")
    args = ["extract", str(AUDIO), "--out", str(tmp_path / "f.npy"), "--model", str(folder)]
    _one_error_line(_cli(args, tmp_path), "error:")


def test_building_a_huge_model_in_python_is_refused_before_allocation(tmp_path):
    result = _capped(
        """
        from cpcspeech.config import ModelConfig
        from cpcspeech.errors import ConfigError
        from cpcspeech.model import CPCModel
        config = ModelConfig(encoder_channels=4096, context_dim=4096, context_layers=32,
                             context_type="lstm")
        try:
            CPCModel(config)
        except ConfigError as err:
            print("refused:", err)
        """,
        tmp_path,
    )
    assert result.returncode == 0 and "refused: model: expected at most" in result.stdout, (
        result.stderr[-2000:]
    )


def test_the_cap_counts_on_meta_and_leaves_real_models_alone():
    assert count_parameters(CPCModel, ModelConfig()) == sum(
        t.numel() for t in CPCModel().state_dict().values()
    )
    big = ModelConfig(encoder_channels=4096, context_dim=4096, context_layers=32)
    assert count_parameters(CPCModel, big) > MAX_PARAMETERS
    with pytest.raises(ConfigError, match="parameters"):
        CPCModel(big)
    with torch.device("meta"):  # building on meta is never refused: it is how the cap counts
        assert CPCModel(big).context.weight_ih_l0.device.type == "meta"
