"""Import CPC_audio / Libri-light checkpoints: tensors-only loading and a strict name map.

Two source formats: a release file ``{"config": args, "weights": state_dict}`` (CPC_audio's
torch.hub and the Libri-light checkpoints) and a CPC_audio run folder (``checkpoint_N.pt`` +
``checkpoint_args.json``). Nothing is ever unpickled beyond tensors and plain containers.
"""

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cpcspeech.config import ModelConfig
from cpcspeech.errors import ConfigError, ModelLoadError
from cpcspeech.files import check_output_apart, file_sha256, read_json, replace_folder, temp_dir
from cpcspeech.model import WEIGHTS_NAME, CPCModel
from cpcspeech.model.serialization import check_finite, check_model_size, expected_shapes
from cpcspeech.weights.card import CARD_NAME, card_header, config_table, usage_section

ARGS_NAME = "checkpoint_args.json"
_RUN_CHECKPOINT = re.compile(r"checkpoint_(\d+)\.pt")

# CPC_audio's defaults (cpc/cpc_default_config.py) for the settings that shape the model; a
# release config or checkpoint_args.json that leaves one out means this value.
CPC_AUDIO_DEFAULTS: dict[str, Any] = {
    "hiddenEncoder": 256,
    "hiddenGar": 256,
    "normMode": "layerNorm",
    "arMode": "LSTM",
    "nLevelsGRU": 1,
    "cpc_mode": None,
    "encoder_type": "cpc",
    "load": None,
}
NORM_MODES = {
    "layerNorm": "channel",
    "ID": "none",
    "batchNorm": "batch",
    "instanceNorm": "instance",
}
AR_MODES = {"GRU": "gru", "LSTM": "lstm", "RNN": "rnn"}
SIZE_SETTINGS = ("hiddenEncoder", "hiddenGar", "nLevelsGRU")  # -> encoder_channels, context_*

# Entries of a run checkpoint that are not the feature model: the InfoNCE criterion (with the
# W_k predictor), the optimizer state and the best epoch's copy of the model. Ignored on purpose.
IGNORED_ENTRIES = ("cpcCriterion", "optimizer", "best")
# Tensor-name prefixes ignored inside a state dict, for the same reason.
IGNORED_PREFIXES = ("cpcCriterion.",)

LICENCE_NOTE = (
    "CPC_audio (facebookresearch/CPC_audio), whose code defines this architecture and its "
    "checkpoint format, is MIT licensed. The weights are under whatever terms their publisher "
    "gives: the Libri-light checkpoints are linked from facebookresearch/libri-light (code MIT; "
    "no separate licence is stated for the checkpoint files) and were trained on Libri-light, "
    "whose audio comes from LibriVox public-domain audiobooks."
)


CARD_SUMMARY = [
    "A CPC_audio checkpoint converted by `cpcspeech convert`: the strided CNN encoder",
    "(z_t, 10 ms frames at 16 kHz) and the recurrent context network (c_t). Loaded with",
    "`torch.load(weights_only=True)` and mapped tensor by tensor (every source tensor used",
    "once, every model tensor filled, shapes checked).",
]
"""The converted model card's opening paragraph, one item per line."""


@dataclass(frozen=True)
class CPCAudioCheckpoint:
    """A CPC_audio checkpoint read safely: its original config and the feature model's tensors.

    ``kind`` is "release" ({"config", "weights"}) or "run" (checkpoint_N.pt + args json);
    ``ignored`` names the entries and tensors left out on purpose.
    """

    path: Path
    kind: str
    sha256: str
    config: dict[str, Any]
    weights: dict[str, Tensor]
    ignored: tuple[str, ...]


@dataclass(frozen=True)
class ConvertResult:
    out_dir: Path
    checkpoint: CPCAudioCheckpoint
    weights_sha256: str


def is_cpc_audio_source(path: str | os.PathLike) -> bool:
    """True for a ``*.pt``/``*.pth`` file or a folder holding ``checkpoint_args.json``."""
    path = Path(path)
    if path.is_file():
        return path.suffix in (".pt", ".pth")
    return path.is_dir() and (path / ARGS_NAME).is_file()


def load_tensors_only(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers, nothing else.

    A file whose pickle names any other callable (which a full unpickle would run) is refused
    before that callable is touched.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (not a torch file), EOFError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"{path}: refused; expected a checkpoint of tensors and plain containers that loads "
            f"with torch.load(weights_only=True), found one that does not ({first}). cpcspeech "
            "never unpickles anything else, since unpickling can run arbitrary code"
        ) from err


def _holds_tensors(value: Any) -> bool:
    if isinstance(value, Tensor):
        return True
    if isinstance(value, dict):
        return any(_holds_tensors(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_tensors(v) for v in value)
    return False


def pick_run_checkpoint(folder: Path, name: str | None = None) -> Path:
    """A CPC_audio run folder -> its newest ``checkpoint_N.pt`` (largest N), or ``name``."""
    if name is not None:
        path = folder / name
        if not path.is_file():
            raise ModelLoadError(f"{folder}: expected a checkpoint file {name!r}, found none")
        return path
    found = [
        (int(m.group(1)), p) for p in folder.iterdir() if (m := _RUN_CHECKPOINT.fullmatch(p.name))
    ]
    if not found:
        raise ModelLoadError(
            f"{folder}: expected checkpoint_N.pt files beside {ARGS_NAME}, found none"
        )
    return max(found)[1]


def read_cpc_audio(source: str | os.PathLike, checkpoint: str | None = None) -> CPCAudioCheckpoint:
    """Read a release file or a run folder (its newest checkpoint unless ``checkpoint`` names one).

    Raises:
        ModelLoadError: unsafe, unreadable or unrecognised file; missing config.
    """
    source = Path(source)
    if source.is_dir():
        args_path = source / ARGS_NAME
        if not args_path.is_file():
            raise ModelLoadError(f"{source}: expected a CPC_audio run folder with {ARGS_NAME}")
        path = pick_run_checkpoint(source, checkpoint)
        config = read_json(args_path, ModelLoadError)
    elif source.is_file():
        if checkpoint is not None:
            raise ModelLoadError(f"{source}: a checkpoint name applies only to a run folder")
        path, config = source, None
    else:
        raise ModelLoadError(f"{source}: no such checkpoint file or run folder")
    data = load_tensors_only(path)
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a dict checkpoint, found {type(data).__name__}")
    if config is None:  # a release file carries its own config
        extra = sorted(str(k) for k in data if k not in ("config", "weights"))
        if (
            "config" not in data
            or "weights" not in data
            or any(_holds_tensors(data[k]) for k in extra)
        ):
            raise ModelLoadError(
                f"{path}: expected a CPC_audio release file with the keys ['config', 'weights'] "
                f"(and no other tensors), found {sorted(map(str, data))}; a run checkpoint "
                f"(checkpoint_N.pt) is read from its folder, beside {ARGS_NAME}"
            )
        kind, config, weights = "release", data["config"], data["weights"]
        ignored = [f"{key} (whole entry, no tensors)" for key in extra]
    else:
        unknown = sorted(set(map(str, data)) - {"gEncoder", *IGNORED_ENTRIES})
        if "gEncoder" not in data or unknown:
            raise ModelLoadError(
                f"{path}: expected a CPC_audio run checkpoint with 'gEncoder' (and optionally "
                f"{list(IGNORED_ENTRIES)}), found keys {sorted(map(str, data))}"
            )
        kind, weights = "run", data["gEncoder"]
        ignored = [f"{key} (whole entry)" for key in IGNORED_ENTRIES if key in data]
    if not isinstance(config, dict):
        raise ModelLoadError(
            f"{path}: expected the config as a dict, found {type(config).__name__}"
        )
    if not isinstance(weights, dict) or not all(isinstance(v, Tensor) for v in weights.values()):
        raise ModelLoadError(f"{path}: expected the weights as a dict of tensors")
    kept = {}
    for name, value in weights.items():
        if name.startswith(IGNORED_PREFIXES):
            ignored.append(name)
        else:
            kept[name] = value
    return CPCAudioCheckpoint(
        path=path,
        kind=kind,
        sha256=file_sha256(path),
        config=config,
        weights=kept,
        ignored=tuple(ignored),
    )


def model_config_from_cpc_audio(args: dict[str, Any]) -> ModelConfig:
    """CPC_audio's argparse settings -> our ModelConfig, or ConfigError naming what cannot be.

    The encoder geometry is CPC_audio's fixed one (kernels 10,8,4,4,4, strides 5,4,2,2,2,
    paddings 3,2,1,1,1), which is our default.
    """
    values = {**CPC_AUDIO_DEFAULTS, **{k: v for k, v in args.items() if k in CPC_AUDIO_DEFAULTS}}
    if values["encoder_type"] != "cpc":
        raise ConfigError(
            f"CPC_audio encoder_type: expected 'cpc' (the strided CNN), found "
            f"{values['encoder_type']!r}, which cpcspeech cannot express"
        )
    if values["cpc_mode"] not in (None, "none"):
        what = {"reverse": "a reversed (right-to-left) AR", "bert": "a bidirectional AR"}
        raise ConfigError(
            f"CPC_audio cpc_mode: expected None or 'none', found {values['cpc_mode']!r} "
            f"({what.get(values['cpc_mode'], 'unknown')}), which cpcspeech cannot express"
        )
    if values["arMode"] not in AR_MODES:
        raise ConfigError(
            f"CPC_audio arMode: expected one of {list(AR_MODES)}, found {values['arMode']!r}, "
            "which cpcspeech cannot express"
        )
    if values["normMode"] not in NORM_MODES:
        raise ConfigError(
            f"CPC_audio normMode: expected one of {list(NORM_MODES)}, found {values['normMode']!r}"
        )
    load = values["load"]
    if isinstance(load, list) and len(load) > 1:
        raise ConfigError(
            f"CPC_audio load: expected at most one checkpoint, found {len(load)} (a concatenation "
            "of models), which cpcspeech cannot express"
        )
    for key in SIZE_SETTINGS:
        if not isinstance(values[key], int) or isinstance(values[key], bool) or values[key] < 1:
            raise ConfigError(f"CPC_audio {key}: expected an integer >= 1, found {values[key]!r}")
    try:  # ModelConfig checks config.RANGES, exactly as for a config.json or a YAML file
        return ModelConfig(
            encoder_channels=values["hiddenEncoder"],
            norm=NORM_MODES[values["normMode"]],
            context_type=AR_MODES[values["arMode"]],
            context_dim=values["hiddenGar"],
            context_layers=values["nLevelsGRU"],
        )
    except ConfigError as err:
        sizes = ", ".join(f"{key}={values[key]!r}" for key in SIZE_SETTINGS)
        raise ConfigError(f"CPC_audio settings {sizes}: {err}") from None


def target_name(source_name: str) -> str | None:
    """CPC_audio tensor name -> ours; None if it is not a feature-model tensor we know.

    gEncoder.conv{i}.* -> encoder.convs.{i}.*, gEncoder.batchNorm{i}.* (whatever the norm)
    -> encoder.norms.{i}.*, gAR.baseNet.* -> context.*.
    """
    if m := re.fullmatch(r"gEncoder\.conv(\d+)\.(\w+)", source_name):
        return f"encoder.convs.{m.group(1)}.{m.group(2)}"
    if m := re.fullmatch(r"gEncoder\.batchNorm(\d+)\.(\w+)", source_name):
        return f"encoder.norms.{m.group(1)}.{m.group(2)}"
    if m := re.fullmatch(r"gAR\.baseNet\.(\w+)", source_name):
        return f"context.{m.group(1)}"
    return None


def map_weights(
    weights: dict[str, Tensor], expected: dict[str, tuple[int, ...]], source: str
) -> dict[str, Tensor]:
    """Rename every source tensor onto the model's tensor names, strictly.

    ``expected`` is each model tensor's shape (from the ``meta`` device, see
    :func:`cpcspeech.model.serialization.expected_shapes`). Every source tensor is used exactly
    once and every target filled with the same shape; otherwise ModelLoadError lists the
    leftover names on each side.
    """
    mapped: dict[str, Tensor] = {}
    unknown = []
    for name, value in weights.items():
        target = target_name(name)
        if target is None or target not in expected:
            unknown.append(name)
        else:
            mapped[target] = value
    missing = sorted(set(expected) - set(mapped))
    if unknown or missing:
        raise ModelLoadError(
            f"{source}: tensors do not match the model its config describes; unused source "
            f"tensors {sorted(unknown)}, unfilled model tensors {missing}"
        )
    for key, shape in expected.items():
        if tuple(mapped[key].shape) != tuple(shape):
            raise ModelLoadError(
                f"{source}: tensor {key} expected shape {tuple(shape)}, found "
                f"{tuple(mapped[key].shape)}"
            )
    return mapped


def convert_checkpoint(
    source: str | os.PathLike, checkpoint: str | None = None
) -> tuple[CPCModel, CPCAudioCheckpoint]:
    """Convert in memory: a release file or run folder -> (CPCModel in eval mode, what was read).

    The settings go through the ModelConfig ranges and the model's size cap, and the tensors are
    matched against the model built on the ``meta`` device, all before the model is allocated:
    a small file asking for a huge model fails in milliseconds, as a config.json does.
    """
    ckpt = read_cpc_audio(source, checkpoint)
    try:
        config = model_config_from_cpc_audio(ckpt.config)
        check_model_size(CPCModel, config)
    except ConfigError as err:
        raise ModelLoadError(f"{ckpt.path}: {err}") from None
    state = map_weights(ckpt.weights, expected_shapes(CPCModel, config), str(ckpt.path))
    check_finite(state, str(ckpt.path))  # the loader's rule, before anything is written
    model = CPCModel(config)
    model.load_state_dict(state, strict=True)
    return model.eval(), ckpt


def convert(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    checkpoint: str | None = None,
    overwrite: bool = False,
) -> ConvertResult:
    """Write ``out_dir`` = config.json + model.safetensors + README.md from a CPC_audio checkpoint.

    The folder is assembled in a temporary sibling and renamed into place, so an interrupted run
    leaves no half-written model directory. ``overwrite`` replaces an existing ``out_dir``, but
    never one that is, holds or lies inside ``source`` (:func:`cpcspeech.files.check_output_apart`).
    """
    out_dir = Path(out_dir)
    if os.path.lexists(out_dir) and not overwrite:
        raise ModelLoadError(f"convert: {out_dir} already exists; choose a new folder or overwrite")
    if os.path.lexists(out_dir):
        check_output_apart(out_dir, [source], "convert")
    model, ckpt = convert_checkpoint(source, checkpoint)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(out_dir.parent, prefix=f".tmp-{out_dir.name}-")
    try:
        model.save_pretrained(tmp)
        weights_sha = file_sha256(tmp / WEIGHTS_NAME)
        card = model_card(out_dir.name, model.config, ckpt, weights_sha)
        (tmp / CARD_NAME).write_text(card, encoding="utf-8")
        replace_folder(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return ConvertResult(out_dir=out_dir, checkpoint=ckpt, weights_sha256=weights_sha)


def model_card(name: str, config: ModelConfig, ckpt: CPCAudioCheckpoint, weights_sha: str) -> str:
    """README.md of a converted model: source file and sha256, original config, licence."""
    original = json.dumps(ckpt.config, indent=2, sort_keys=True, default=str)
    ignored = ckpt.ignored or ("none",)
    lines = [
        *card_header(name, CARD_SUMMARY),
        *usage_section(name, "wav: (N,) float32 at 16 kHz -> (T, D), T = (N + 1) // 160"),
        "Layers: `z`, `c` (top recurrent layer) and `c1`..`cN` (one recurrent layer each).",
        "",
        "## Source",
        "",
        "| | |",
        "|---|---|",
        f"| file | `{ckpt.path.name}` |",
        f"| format | {ckpt.kind} |",
        f"| sha256 | `{ckpt.sha256}` |",
        f"| converted weights | `{WEIGHTS_NAME}`, sha256 `{weights_sha}` |",
        "",
        "Ignored on purpose (the criterion with its W_k predictor, the optimizer state and the",
        "best epoch's copy; none of them is part of the feature model): "
        + ", ".join(f"`{n}`" for n in ignored),
        "",
        *config_table(asdict(config)),
        "Original CPC_audio configuration:",
        "",
        "```json",
        original,
        "```",
        "",
        "## Licence",
        "",
        LICENCE_NOTE,
        "",
    ]
    return "\n".join(lines)
