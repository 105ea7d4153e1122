"""Configuration as plain dataclasses, loaded from one YAML file.

Unknown keys and missing required values are errors; values are coerced by field type, because
PyYAML reads ``1e-4`` as a string. Sections: model, loss, data, optim, train.
"""

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cpcspeech.errors import ConfigError
from cpcspeech.files import write_text_atomic

MISSING_PATH = "???"
"""Placeholder for a required path in a recipe; loading fails until it is set."""


NORMS = ("none", "channel", "layer", "batch", "instance")
CONTEXT_TYPES = ("gru", "lstm", "rnn")


@dataclass
class ModelConfig:
    """The CPC audio model (paper section 3.1). Flat on purpose: it round-trips through JSON.

    The defaults are the paper's: five strided Conv1d layers of 512 channels with ReLU, giving one
    frame per 160 samples at 16 kHz, and a 256-unit GRU as the autoregressive context network.
    """

    sample_rate: int = 16000
    encoder_channels: int = 512
    encoder_kernels: tuple[int, ...] = (10, 8, 4, 4, 4)
    encoder_strides: tuple[int, ...] = (5, 4, 2, 2, 2)
    encoder_paddings: tuple[int, ...] = (3, 2, 1, 1, 1)
    # "none" is the paper. "channel" is CPC_audio's ChannelNorm (per frame, over channels, unbiased
    # variance) and "layer" is nn.LayerNorm over channels per frame. Both are causal. "batch"
    # (nn.BatchNorm1d; inference uses its running statistics, so it is causal too) and "instance"
    # (nn.InstanceNorm1d with affine weights: normalises each channel over the whole utterance,
    # so it is NOT causal) exist to import CPC_audio checkpoints (its normMode "batchNorm" and
    # "instanceNorm"; its "layerNorm" is "channel" here and its "ID" is "none").
    norm: str = "none"
    context_type: str = "gru"  # "gru" (paper), "lstm" (CPC_audio's default) or "rnn" (tanh)
    context_dim: int = 256
    context_layers: int = 1  # stacked recurrent layers; --layer c1..cN selects one's output

    def __post_init__(self) -> None:
        n = len(self.encoder_kernels)
        if not (len(self.encoder_strides) == len(self.encoder_paddings) == n) or n == 0:
            raise ConfigError(
                "model.encoder_kernels, encoder_strides and encoder_paddings must have the same "
                f"non-zero length; found {len(self.encoder_kernels)}, "
                f"{len(self.encoder_strides)}, {len(self.encoder_paddings)}"
            )
        _check_choice("model.norm", self.norm, NORMS)
        _check_choice("model.context_type", self.context_type, CONTEXT_TYPES)
        for name in ("sample_rate", "encoder_channels", "context_dim", "context_layers"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be > 0; found {getattr(self, name)}")


@dataclass
class LossConfig:
    """InfoNCE (paper section 2.3): one linear W_k per future step k = 1..prediction_steps."""

    prediction_steps: int = 12
    num_negatives: int = 128
    # Where negatives come from (paper Table 2): "mixed" (any window in the batch), "same_speaker",
    # "mixed_other_seq", "same_speaker_other_seq" or "same_seq".
    negative_mode: str = "mixed"

    def __post_init__(self) -> None:
        _check_choice(
            "loss.negative_mode",
            self.negative_mode,
            ("mixed", "same_speaker", "mixed_other_seq", "same_speaker_other_seq", "same_seq"),
        )
        if self.prediction_steps < 1 or self.num_negatives < 1:
            raise ConfigError(
                "loss.prediction_steps and loss.num_negatives must be >= 1; found "
                f"{self.prediction_steps}, {self.num_negatives}"
            )


@dataclass
class DataConfig:
    """Where utterances come from and how training windows are cut."""

    root: str = MISSING_PATH  # LibriSpeech tree, Kaldi data dir or plain folder
    train_list: str = ""  # optional utterance-id list (e.g. the CPC paper's train_split.txt)
    valid_list: str = ""  # optional held-out list used for validation
    window: int = 20480  # samples per training window (1.28 s at 16 kHz)
    short_utterances: str = "drop"  # "drop" or "pad" utterances shorter than one window
    batch_size: int = 8  # windows per process (per GPU under DDP)
    speakers_per_batch: int = 0  # 0 = windows drawn freely; >0 groups each batch by speaker
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("data.short_utterances", self.short_utterances, ("drop", "pad"))
        if self.window <= 0 or self.batch_size <= 0:
            raise ConfigError(
                f"data.window and data.batch_size must be > 0; found {self.window}, "
                f"{self.batch_size}"
            )


@dataclass
class OptimConfig:
    """Adam (paper section 3.1: learning rate 2e-4)."""

    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up of the learning rate over this many updates
    # The W_k heads' learning rate; 0 means the same as ``lr``. A larger head rate with a slow
    # warm-up of the encoder + GRU shortens the initial plateau (recipes/speechocean762).
    head_lr: float = 0.0
    warmup_heads: bool = True  # False: the heads start at full rate, only the model warms up
    grad_clip: float = 0.0  # 0 disables clipping


@dataclass
class TrainConfig:
    """The training loop: length, logging, checkpoints, precision."""

    out_dir: str = "runs/cpc"
    max_steps: int = 1000
    log_every: int = 10
    valid_every: int = 500
    valid_batches: int = 20
    checkpoint_every: int = 500
    keep_last: int = 3
    precision: str = "fp32"  # "fp32" or "bf16" (autocast)
    device: str = "auto"  # "auto", "cpu" or "cuda"
    tensorboard: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("train.precision", self.precision, ("fp32", "bf16"))
        _check_choice("train.device", self.device, ("auto", "cpu", "cuda"))


@dataclass
class Config:
    """The whole tree; each component receives only its own section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}; found {value!r}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/JSON value to the annotated field type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, found {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, found {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError(value)
        if tp is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return (
                int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
            )
        if tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError):
        name = getattr(tp, "__name__", str(tp))
        raise ConfigError(f"{where}: expected {name}, found {value!r}") from None
    return value


def section_from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build one dataclass section from a mapping; unknown keys are errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, found {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build a Config from a nested mapping (sections model, loss, data, optim, train)."""
    values = values or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config: expected a mapping of sections, found {values!r}")
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    hints = typing.get_type_hints(Config)
    unknown = sorted(set(values) - set(sections))
    if unknown:
        raise ConfigError(
            f"config: unknown section(s) {unknown}; allowed sections are {sorted(sections)}"
        )
    return Config(
        **{name: section_from_dict(hints[name], values.get(name) or {}, name) for name in sections}
    )


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples become lists) suitable for YAML or JSON."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested mapping; values are parsed as YAML."""
    out = {k: dict(v or {}) for k, v in (values or {}).items()}
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set expects section.key=value; found {item!r}")
        dotted, raw = item.split("=", 1)
        section, key = dotted.strip().split(".", 1)
        out.setdefault(section, {})[key] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file, apply ``--set`` overrides and validate.

    Relative data paths are resolved against the YAML file's folder. A path still equal to the
    placeholder ``???`` is an error that names the key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    cfg = config_from_dict(apply_overrides(values, overrides or []))
    for key in ("root", "train_list", "valid_list"):
        value = getattr(cfg.data, key)
        if value == MISSING_PATH:
            raise ConfigError(
                f"data.{key} is required but still the placeholder {MISSING_PATH!r} in {path}; "
                f"set it in the file or with --set data.{key}=PATH"
            )
        if value and not os.path.isabs(value):
            setattr(cfg.data, key, str((path.parent / value).resolve()))
    return cfg


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
