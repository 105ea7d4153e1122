"""The default install stays lean: kaldiio and lhotse are optional extras, imported only when a
Kaldi output, a piped wav.scp entry or a lhotse manifest asks for them."""

import subprocess
import sys

import pytest
from paths import REPO

# Runs in a fresh interpreter where importing kaldiio or lhotse fails, as on a default install.
WITHOUT_EXTRAS = r"""
import sys
from importlib.abc import MetaPathFinder

class Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("kaldiio", "lhotse"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, Absent())
import numpy as np, soundfile as sf, torch
from cpcspeech import cli, extract, kaldi  # noqa: F401  importable without the extras
from cpcspeech.errors import CPCSpeechError
from cpcspeech.model.cpc import CPCModel

tmp = sys.argv[1]
sf.write(f"{tmp}/a.wav", np.zeros(3200, np.float32), 16000)
open(f"{tmp}/wav.scp", "w").write(f"u1 cat {tmp}/a.wav |\n")
open(f"{tmp}/cuts.jsonl.gz", "wb").write(b"")
torch.manual_seed(0)
model = CPCModel().eval()
print("plain", extract.extract_features(model, [f"{tmp}/a.wav"], f"{tmp}/f.npy").total_frames)
for inputs, out in (
    ([f"{tmp}/a.wav"], f"ark,scp:{tmp}/f.ark,{tmp}/f.scp"),
    ([f"{tmp}/wav.scp"], f"{tmp}/g.npy"),
    ([f"{tmp}/cuts.jsonl.gz"], f"{tmp}/h.npy"),
):
    try:
        extract.extract_features(model, inputs, out, allow_commands=True)
    except CPCSpeechError as err:
        print("error", err)
print("loaded", sorted(m for m in sys.modules if m.split(".")[0] in ("kaldiio", "lhotse")))
"""


def test_extras_are_declared_and_not_core():
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert "kaldiio" not in core and "lhotse" not in core
    extras = project["optional-dependencies"]
    assert extras["kaldi"] == ["kaldiio>=2.18"] and extras["lhotse"] == ["lhotse>=1.20"]
    assert "pocketsphinx" not in core and extras["align"] == ["pocketsphinx>=5.0,<6"]
    assert "pocketsphinx>=5.0,<6" in extras["dev"]


def test_without_the_extras_only_their_features_fail_with_an_install_hint(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "plain 20"  # (3200 + 1) // 160
    assert "pip install 'cpcspeech[kaldi]'" in lines[1]  # ark,scp output
    assert "pip install 'cpcspeech[kaldi]'" in lines[2]  # a piped wav.scp entry
    assert "pip install 'cpcspeech[lhotse]'" in lines[3]  # a lhotse manifest
    assert lines[4] == "loaded []"
