"""The supervised baseline's saved state, so that a run longer than one sitting can go on: the
model, the head and Adam's moments (safetensors), and the step, the batch generator's state, the
budget and the test curve (JSON). Written atomically after every evaluation point."""

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cpcspeech.errors import CPCSpeechError
from cpcspeech.files import read_text, replace_folder, temp_dir, umask_mode, write_text_atomic

FORMAT = 1
WEIGHTS = "state.safetensors"
META = "state.json"
CURVE = "curve.json"
# budget fields that must match to continue a run (steps and eval_every may change)
SAME_BUDGET = ("batch_size", "window", "lr", "seed", "norm")


def has_state(folder: str | os.PathLike) -> bool:
    return (Path(folder) / META).is_file() and (Path(folder) / WEIGHTS).is_file()


def save_state(folder, step: int, budget, model: nn.Module, optimizer, rng) -> None:
    """Write the state after ``step`` into ``folder`` (replaced whole, never half-written)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    opt = optimizer.state_dict()
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for index, moments in opt["state"].items():
        for name, value in moments.items():
            tensors[f"adam.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    meta = {
        "format": FORMAT,
        "step": step,
        "budget": asdict(budget),
        "rng": rng.bit_generator.state,
        "param_groups": opt["param_groups"],
    }
    tmp = temp_dir(folder.parent, f".{folder.name}.")
    save_file(tensors, str(tmp / WEIGHTS))
    os.chmod(tmp / WEIGHTS, umask_mode())  # safetensors creates its files with mode 0600
    write_text_atomic(tmp / META, json.dumps(meta, allow_nan=False) + "\n")
    if (folder / CURVE).is_file():
        write_text_atomic(tmp / CURVE, read_text(folder / CURVE, CPCSpeechError))
    replace_folder(tmp, folder)


def load_state(folder, budget, model: nn.Module, optimizer, rng: np.random.Generator) -> int:
    """Restore model, optimizer and ``rng`` from ``folder``; returns the step it was saved at.

    Raises CPCSpeechError when the state is unreadable or was made with another budget."""
    folder = Path(folder)
    try:
        meta = json.loads(read_text(folder / META, CPCSpeechError))
        tensors = load_file(str(folder / WEIGHTS))
    except (ValueError, OSError) as err:
        raise CPCSpeechError(f"{folder}: supervised state unreadable ({err})") from None
    if meta.get("format") != FORMAT:
        raise CPCSpeechError(
            f"{folder}: supervised state format: expected {FORMAT}, found {meta.get('format')!r}"
        )
    saved, current = meta["budget"], asdict(budget)
    differ = [f"{k}: saved {saved.get(k)!r}, now {current[k]!r}" for k in SAME_BUDGET
              if saved.get(k) != current[k]]  # fmt: skip
    if differ:
        raise CPCSpeechError(
            f"{folder}: cannot continue the supervised run with another budget "
            f"({'; '.join(differ)}); remove the folder to start afresh"
        )
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    moments: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("adam."):
            _, index, name = key.split(".", 2)
            moments.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": moments, "param_groups": meta["param_groups"]})
    rng.bit_generator.state = meta["rng"]
    return int(meta["step"])


def read_curve(folder) -> list[list[float]]:
    """The test curve saved beside the state ([] when there is none)."""
    path = Path(folder) / CURVE
    if not path.is_file():
        return []
    try:
        return [list(point) for point in json.loads(read_text(path, CPCSpeechError))]
    except ValueError as err:
        raise CPCSpeechError(f"{path}: expected a JSON list of [step, accuracy], ({err})") from None


def write_curve(folder, curve: list[list[float]]) -> None:
    write_text_atomic(Path(folder) / CURVE, json.dumps(curve, allow_nan=False) + "\n")
