"""Resolve a model name to a local directory: a saved model directory (more sources to come)."""

from pathlib import Path

from cpcspeech.errors import ModelLoadError


def resolve_model_dir(name: str, revision: str | None = None) -> Path:
    """Return the local directory holding config.json + model.safetensors for ``name``."""
    path = Path(name)
    if path.is_dir():
        return path
    raise ModelLoadError(f"model {name!r}: expected a local model directory, found none")
