"""Imports flow one way (docs/design.md): the model never imports loss, data or training code."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cpcspeech"

# module -> cpcspeech modules it must not import at module level
FORBIDDEN = {
    "config": {"model", "loss", "data", "train", "probes", "plots", "cli", "extract"},
    "model": {"loss", "data", "train", "probes", "plots", "cli", "extract", "corpus"},
    "loss": {"data", "train", "probes", "plots", "cli", "extract"},
    "convert": {"pretrained", "loss", "data", "train", "probes", "plots", "cli", "extract"},
    "published": {"pretrained", "loss", "data", "train", "probes", "plots", "cli", "extract"},
    "batched": {"extract", "pretrained", "loss", "data", "train", "probes", "plots", "cli"},
    "shards": {"model", "audio", "extract", "pretrained", "loss", "data", "train", "cli"},
    "audio": {"model", "loss", "data", "train", "probes", "plots", "cli"},
    "corpus": {"model", "loss", "data", "train", "probes", "plots", "cli"},
    "alignments": {"loss", "data", "train", "probes", "plots", "cli"},
    "augment": {"model", "loss", "data", "train", "probes", "plots", "cli", "extract"},
    "kaldi": {"model", "loss", "data", "train", "probes", "plots", "cli", "extract"},
    "lhotse_ext": {"loss", "data", "train", "probes", "plots", "cli", "extract"},
    "data": {"train", "probes", "plots", "cli"},
    "train": {"probes", "plots", "cli"},
    "features": {"loss", "data", "train", "probes", "plots", "abx", "units", "cli", "extract"},
    "probes": {"abx", "units", "cli"},
    "plots": {"cli"},
    "abx": {"train", "probes", "plots", "units", "cli"},
    "units": {"train", "plots", "cli"},
}


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in tree.body:  # module level only: function-level imports are deliberate
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cpcspeech"):
            found.add(node.module.split(".")[1] if "." in node.module else "")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cpcspeech."):
                    found.add(alias.name.split(".")[1])
    return found


def test_imports_flow_one_way():
    bad = {}
    for module, forbidden in FORBIDDEN.items():
        path = PACKAGE / f"{module}.py"
        if path.exists():
            hit = _top_level_imports(path) & forbidden
            if hit:
                bad[module] = sorted(hit)
    assert not bad, f"imports against the design's flow: {bad}"


def test_only_cli_imports_typer():
    users = [
        p.name
        for p in PACKAGE.glob("*.py")
        if p.name != "cli.py" and "import typer" in p.read_text(encoding="utf-8")
    ]
    assert users == []


def test_no_cuda_calls_or_non_strict_loads_in_library():
    offenders = []
    for p in PACKAGE.glob("*.py"):
        text = p.read_text(encoding="utf-8")
        if ".cuda()" in text or "strict=False" in text:
            offenders.append(p.name)
    assert offenders == []
