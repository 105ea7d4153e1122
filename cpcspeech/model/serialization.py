"""The model directory format: config.json + model.safetensors, checked before anything loads.

``config.json`` carries ``model_type`` and ``format_version`` beside the flat ModelConfig; the
safetensors header is checked against the config on the ``meta`` device before any tensor is
allocated, and NaN/inf weights are refused. No pickle anywhere.
"""

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from cpcspeech.config import ModelConfig, section_from_dict
from cpcspeech.errors import ConfigError, ModelLoadError
from cpcspeech.files import (
    read_json,
    temp_sibling,
    umask_mode,
    write_json_atomic,
)
from cpcspeech.runtime import one_line

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "cpcspeech-cpc"
FORMAT_VERSION = 1


def is_model_dir(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds both files of a model directory (contents not checked)."""
    directory = Path(directory)
    return (directory / CONFIG_NAME).is_file() and (directory / WEIGHTS_NAME).is_file()


def save_model_dir(model: nn.Module, config: ModelConfig, directory: str | os.PathLike) -> Path:
    """Write ``config`` as config.json and ``model``'s state as model.safetensors (atomic per file).

    The weights are written first, so a directory whose config.json exists has whole weights.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION}
    meta.update(json.loads(json.dumps(dataclasses.asdict(config))))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = temp_sibling(directory / WEIGHTS_NAME)
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.chmod(tmp, umask_mode())  # safetensors creates its files with mode 0600
    os.replace(tmp, directory / WEIGHTS_NAME)
    write_json_atomic(directory / CONFIG_NAME, meta)
    return directory


def read_checked_weights(
    cls: type, config: ModelConfig, directory: str | os.PathLike, map_location: str | torch.device
) -> dict[str, Tensor]:
    """model.safetensors of ``directory``, checked against the model ``cls(config)`` would be.

    Nothing is allocated until the header agrees with the config: a config.json asking for huge
    layers fails here, in milliseconds, whatever the weights file holds. Then every tensor must be
    finite. Returns the state dict on ``map_location``.
    """
    directory = Path(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelLoadError(f"{directory}: expected {WEIGHTS_NAME}, found none")
    check_header_matches(cls, config, read_safetensors_header(weights), str(weights))
    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as err:  # safetensors raises several types for corrupt files
        raise ModelLoadError(f"{weights}: not a valid safetensors file ({one_line(err)})") from err
    check_finite(state, str(weights))
    return state


def read_model_config(directory: str | os.PathLike) -> ModelConfig:
    """Read and validate ``config.json`` written by :meth:`CPCModel.save_pretrained`."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ModelLoadError(f"{directory}: expected a cpcspeech {CONFIG_NAME}, found none")
    meta = read_json(path, ModelLoadError)
    if not isinstance(meta, dict) or meta.get("model_type") != MODEL_TYPE:
        found = meta.get("model_type") if isinstance(meta, dict) else type(meta).__name__
        raise ModelLoadError(
            f"{path}: expected model_type {MODEL_TYPE!r}, found {found!r}; "
            "this is not a cpcspeech model"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"{path}: expected format_version {FORMAT_VERSION}, found "
            f"{meta.get('format_version')!r}; upgrade cpcspeech"
        )
    values = {k: v for k, v in meta.items() if k not in ("model_type", "format_version")}
    try:
        return section_from_dict(ModelConfig, values, "model")
    except Exception as err:
        raise ModelLoadError(f"{path}: incompatible model config: {err}") from err


def _names(names: list[str], limit: int = 4) -> str:
    """A short list for an error message: the first few names and how many more."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{f', ... and {len(names) - limit} more' if len(names) > limit else ''}]"


def _compare_shapes(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], source: str
) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ModelLoadError(
            f"{source}: weights do not match the model config; missing {_names(missing)}, "
            f"unexpected {_names(unexpected)}"
        )
    for key, shape in expected.items():
        if tuple(found[key]) != tuple(shape):
            raise ModelLoadError(
                f"{source}: tensor {key} expected shape {tuple(shape)} (from the model config), "
                f"found {tuple(found[key])}"
            )


SAFETENSORS_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


def read_safetensors_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name -> (dtype, shape) from a safetensors file's header, without reading tensors.

    The format: 8 bytes little-endian header length n, then n bytes of JSON mapping each name to
    ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data after the header).
    Offsets and sizes are checked against the file size, so the tensors can be no larger than
    the file.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _not_safetensors(path, f"{size} bytes")
        length = int.from_bytes(prefix, "little")
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise _not_safetensors(path, f"header length {length} in a {size}-byte file")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _not_safetensors(path, f"header is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise _not_safetensors(path, "header is not a mapping")
    data_bytes = size - 8 - length
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = entry["dtype"], tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (TypeError, KeyError, ValueError):
            raise _not_safetensors(path, f"malformed entry {name!r}") from None
        if dtype not in SAFETENSORS_FLOAT_DTYPES:
            raise ModelLoadError(
                f"{path}: tensor {name} expected a float dtype {SAFETENSORS_FLOAT_DTYPES}, "
                f"found {dtype!r}"
            )
        itemsize = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}[dtype]
        if any(d < 0 for d in shape) or not 0 <= begin <= end <= data_bytes:
            raise _not_safetensors(
                path, f"tensor {name} at bytes {begin}..{end} of {data_bytes}; truncated?"
            )
        if math.prod(shape) * itemsize != end - begin:
            raise _not_safetensors(path, f"tensor {name} of shape {shape} in {end - begin} bytes")
        out[name] = (dtype, shape)
    return out


def _not_safetensors(path: Path, reason: str) -> ModelLoadError:
    return ModelLoadError(f"{path}: not a valid safetensors file ({reason})")


def expected_shapes(cls: type, config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape the model built from ``config`` holds, on the meta device.

    Built generically (no per-architecture arithmetic), and without allocating memory.
    """
    with torch.device("meta"):
        model = cls(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


MAX_PARAMETERS = 250_000_000
"""The most parameters (and buffers) a CPCModel may hold: 1 GB in float32, about 30x the largest
CPC_audio / Libri-light model. RANGES bound each size on its own; this bounds their product, so a
config asking for 32 layers of 4096 (17 GB) fails in milliseconds, before anything is allocated."""


def count_parameters(cls: type, config: ModelConfig) -> int:
    """How many values ``cls(config)``'s state dict holds, counted on the ``meta`` device."""
    with torch.device("meta"):
        model = cls(config)
    return sum(value.numel() for value in model.state_dict().values())


def check_model_size(cls: type, config: ModelConfig) -> None:
    """ConfigError unless ``cls(config)`` holds at most :data:`MAX_PARAMETERS` values.

    Built on the ``meta`` device first, so the check itself allocates nothing.
    """
    count = count_parameters(cls, config)
    if count > MAX_PARAMETERS:
        raise ConfigError(
            f"model: expected at most {MAX_PARAMETERS:,} parameters, found a config asking for "
            f"{count:,} ({4 * count / 1e9:.1f} GB in float32): encoder_channels "
            f"{config.encoder_channels}, context_dim {config.context_dim}, context_layers "
            f"{config.context_layers}"
        )


def check_header_matches(
    cls: type,
    config: ModelConfig,
    header: dict[str, tuple[str, tuple[int, ...]]],
    source: str,
) -> None:
    """ModelLoadError unless the header holds exactly the tensors ``config`` implies."""
    _compare_shapes(
        expected_shapes(cls, config), {k: shape for k, (_, shape) in header.items()}, source
    )


def check_finite(state: dict[str, Tensor], source: str) -> None:
    """ModelLoadError naming the first tensor that holds NaN or inf, and how many in all."""
    bad = {}
    for key, value in state.items():
        if value.is_floating_point():
            count = int(value.numel() - torch.isfinite(value).sum())
            if count:
                bad[key] = count
    if bad:
        first = next(iter(bad))
        raise ModelLoadError(
            f"{source}: expected finite weights, found {sum(bad.values())} NaN/inf value(s) in "
            f"{len(bad)} tensor(s) (first: {first}, {bad[first]} of {state[first].numel()})"
        )


def load_state_strict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """load_state_dict with strict=True, re-raised as ModelLoadError naming the tensors."""
    _compare_shapes(
        {k: tuple(v.shape) for k, v in model.state_dict().items()},
        {k: tuple(v.shape) for k, v in state.items()},
        source,
    )
    model.load_state_dict(state, strict=True)


def parameters_sha256(model: torch.nn.Module) -> str:
    """Hex sha256 of a model's parameters and buffers (name, then float32 bytes, in order): the
    weights' identity whatever file they came from (shard indexes, codebooks of random models)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
