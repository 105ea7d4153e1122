"""Checkpoint folders of a training run: naming, atomic writing, sha256 verification, pruning,
best.txt, and which config changes a resume accepts.

A checkpoint is ``out_dir/checkpoints/step-NNNNNNNN/``: a model directory (config.json +
model.safetensors) plus heads.safetensors (W_k), trainer.pt, config.yaml and meta.json.
"""

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from cpcspeech.config import Config, config_from_dict, config_to_dict, read_yaml, save_config
from cpcspeech.errors import CPCSpeechError
from cpcspeech.files import (
    file_sha256,
    json_text,
    replace_folder,
    temp_dir,
    umask_mode,
    write_text_atomic,
)
from cpcspeech.runtime import one_line
from cpcspeech.train.objective import CPCObjective

TRAINER_NAME = "trainer.pt"
HEADS_NAME = "heads.safetensors"
META_NAME = "meta.json"
BEST_NAME = "best.txt"
# Keys that may differ when resuming: they change neither the maths nor the data order.
RESUMABLE_CHANGES = (
    "train.max_steps",
    "train.log_every",
    "train.tensorboard",
    "train.keep_last",
    "data.num_workers",
    "data.allow_commands",  # trusting the data's commands does not change the data
    "train.budget_seconds",
)


class TrainingError(CPCSpeechError):
    """Training cannot start or continue (no checkpoint to resume, config mismatch, NaN loss)."""


def checkpoint_name(step: int) -> str:
    """``step-NNNNNNNN``: the folder name of the checkpoint written after ``step`` steps."""
    return f"step-{step:08d}"


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders (step-NNNNNNNN) under out_dir/checkpoints, oldest first.

    Folders moved aside as corrupt (``step-NNNNNNNN.corrupt``) are not listed.
    """
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if p.is_dir() and re.fullmatch(r"step-\d+", p.name) and (p / TRAINER_NAME).is_file()
    ]
    return sorted(found, key=lambda p: p.name)


def write_checkpoint(
    out_dir: Path,
    step: int,
    objective: CPCObjective,
    trainer_state: dict[str, Any],
    meta: dict[str, Any],
    cfg: Config,
) -> Path:
    """Write checkpoints/step-NNNNNNNN into a temporary folder, then rename it into place.

    The folder is a model directory (config.json + model.safetensors, as save_pretrained writes
    them) plus heads.safetensors (W_k), trainer.pt, config.yaml and meta.json.
    """
    folder = out_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / checkpoint_name(step)
    tmp = temp_dir(folder, prefix=f".tmp-{final.name}-")
    objective.model.save_pretrained(tmp)
    heads = {k: v.detach().cpu().contiguous() for k, v in objective.loss.state_dict().items()}
    save_file(heads, str(tmp / HEADS_NAME), metadata={"format": "pt"})
    os.chmod(tmp / HEADS_NAME, umask_mode())  # safetensors creates its files with mode 0600
    torch.save(trainer_state, tmp / TRAINER_NAME)
    save_config(cfg, tmp / "config.yaml")
    # Resume verifies these (verify_checkpoint): a truncated or garbled file is caught before use.
    meta = {**meta, "sha256": {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}}
    (tmp / META_NAME).write_text(json_text(meta), encoding="utf-8")
    replace_folder(tmp, final)  # the same step may be written again (a finished run resumed)
    return final


def write_best_file(out_dir: Path, best_name: str) -> None:
    """checkpoints/best.txt names the checkpoint with the lowest validation loss (if any)."""
    if best_name:
        write_text_atomic(out_dir / "checkpoints" / BEST_NAME, best_name + "\n")


def restore_best_file(out_dir: Path, best_name: str) -> None:
    """Make checkpoints/best.txt agree with the resumed state (a newer best may be gone)."""
    best_file = out_dir / "checkpoints" / BEST_NAME
    if best_name and (out_dir / "checkpoints" / best_name).is_dir():
        write_text_atomic(best_file, best_name + "\n")
    else:
        best_file.unlink(missing_ok=True)


def prune_checkpoints(out_dir: Path, keep_last: int, best: str) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (0 keeps all); never the best."""
    if keep_last <= 0:
        return
    checkpoints = list_checkpoints(out_dir)
    for path in checkpoints[:-keep_last]:
        if path.name != best:
            shutil.rmtree(path, ignore_errors=True)


def clean_temporaries(out_dir: Path) -> None:
    """Remove the .tmp-* / .old-* folders an interrupted checkpoint write left behind."""
    folder = out_dir / "checkpoints"
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(p, ignore_errors=True)


def load_trainer_state(path: Path) -> dict[str, Any]:
    """trainer.pt, loaded with weights_only=True (plain tensors, dicts, lists, numbers)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise TrainingError(f"{path}: cannot load trainer state ({one_line(err)})") from err


# ----- resume -----
def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: Config, current: Config) -> list[str]:
    """Dotted keys whose values differ, except those in RESUMABLE_CHANGES."""
    a, b = _flatten(config_to_dict(saved)), _flatten(config_to_dict(current))
    return sorted(
        k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES
    )


def check_resumable(path: Path, saved: Config, current: Config) -> None:
    """Refuse to resume checkpoint ``path`` (written with ``saved``) under a ``current`` config
    that differs beyond RESUMABLE_CHANGES; the error names each key, saved -> current."""
    diff = config_differences(saved, current)
    if not diff:
        return
    before, now = _flatten(config_to_dict(saved)), _flatten(config_to_dict(current))
    detail = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in diff)
    raise TrainingError(
        f"cannot resume {path}: the config differs in {detail}; only "
        f"{', '.join(RESUMABLE_CHANGES)} may change on resume"
    )


@dataclass
class LoadedCheckpoint:
    """Everything resume needs from one verified checkpoint folder, read into memory."""

    path: Path
    config: Config
    model_state: dict[str, Tensor]
    heads_state: dict[str, Tensor]
    trainer_state: dict[str, Any]


def verify_checkpoint(path: Path) -> LoadedCheckpoint:
    """Check a checkpoint's files against the sha256 sums in its meta.json, then read them.

    Checkpoints written before the sums existed are only read. Any failure (missing, truncated
    or garbled file) raises TrainingError with a one-line reason.
    """
    try:
        meta = json.loads((path / META_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrainingError(f"{path.name}: {META_NAME} unreadable ({one_line(err)})") from None
    sums = meta.get("sha256", {}) if isinstance(meta, dict) else None
    if not isinstance(sums, dict):
        raise TrainingError(f"{path.name}: {META_NAME} expected a mapping, found {type(meta)}")
    for name, expected in sums.items():
        if not (path / name).is_file():
            raise TrainingError(f"{path.name}: {name} is missing")
        found = file_sha256(path / name)
        if found != expected:
            raise TrainingError(
                f"{path.name}: {name} sha256 expected {expected[:12]}..., found {found[:12]}..."
            )
    try:
        config = config_from_dict(read_yaml(path / "config.yaml"))
        model_state = load_file(str(path / "model.safetensors"))
        heads_state = load_file(str(path / HEADS_NAME))
    except Exception as err:  # safetensors raises several types for corrupt files
        raise TrainingError(f"{path.name}: unreadable ({one_line(err)})") from None
    state = load_trainer_state(path / TRAINER_NAME)
    return LoadedCheckpoint(path, config, model_state, heads_state, state)


def newest_verified_checkpoint(
    checkpoints: list[Path], say: Callable[..., None], move_aside: bool = True
) -> LoadedCheckpoint | None:
    """The newest checkpoint that verifies; each newer one that fails is renamed to
    ``step-NNNNNNNN.corrupt`` (rank 0 only: ``move_aside``) and reported in one line."""
    for path in reversed(checkpoints):
        try:
            return verify_checkpoint(path)
        except TrainingError as err:
            aside = path.with_name(path.name + ".corrupt")
            n = 1
            while aside.exists():
                n += 1
                aside = path.with_name(f"{path.name}.corrupt{n}")
            if move_aside:
                os.replace(path, aside)
            say(
                f"checkpoint {err}; moved aside to {aside.name}, trying the previous one",
                style="yellow",
                markup=False,
                highlight=False,
            )
    return None
