"""hubconf.py through the real torch.hub: ``torch.hub.load(REPO, "cpc", source="local")``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from paths import REPO

from cpcspeech import load_model
from cpcspeech.config import ModelConfig
from cpcspeech.errors import ModelLoadError
from cpcspeech.model.cpc import CPCModel


def same_weights(a: CPCModel, b: CPCModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_default_is_the_shipped_model():
    model = torch.hub.load(str(REPO), "cpc", name="default", source="local")
    assert isinstance(model, CPCModel) and not model.training
    assert same_weights(model, load_model("default")[0])
    wav = torch.randn(16000 + 159)
    with torch.inference_mode():
        assert model.extract(wav).shape == (101, 256)  # (N + 1) // 160 frames of c_t


def test_any_load_model_spec_passes_through(tmp_path):
    torch.manual_seed(3)
    saved = CPCModel(ModelConfig(encoder_channels=16, context_dim=8))
    saved.save_pretrained(tmp_path / "small")
    model = torch.hub.load(str(REPO), "cpc", str(tmp_path / "small"), source="local")
    assert same_weights(model, saved)
    assert model.c_dim == 8
    with pytest.raises(ModelLoadError, match="no such path"):
        torch.hub.load(str(REPO), "cpc", name=str(tmp_path / "missing"), source="local")


def test_fresh_process_imports_this_checkout(tmp_path):
    """A new interpreter outside the repo gets the checkout's own cpcspeech through the hub."""
    code = (
        "import torch, sys\n"
        f"m = torch.hub.load({str(REPO)!r}, 'cpc', source='local')\n"
        "print(type(m).__name__, sys.modules['cpcspeech'].__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    name, module_file = result.stdout.split()
    assert name == "CPCModel"
    assert Path(module_file).resolve().is_relative_to(REPO)
