"""Configuration as plain dataclasses, loaded from one YAML file.

Unknown keys and missing required values are errors; values are coerced by field type, because
PyYAML reads ``1e-4`` as a string. Sections: model, loss, data, optim, train, augment.
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
from cpcspeech.ranges import (  # noqa: F401 - re-exported: config is where users look
    CHOICES,
    CONTEXT_TYPES,
    NEGATIVE_MODES,
    NORMS,
    OPTION_RANGES,
    PREDICTORS,
    RANGES,
    SECTION_NAMES,
    Range,
    check_options,
    check_section,
    short_value,
)
from cpcspeech.runtime import one_line

MISSING_PATH = "???"
"""Placeholder for a required path in a recipe; loading fails until it is set."""


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
        check_section(self)  # RANGES and CHOICES; here only what they cannot say
        n = len(self.encoder_kernels)
        if not (len(self.encoder_strides) == len(self.encoder_paddings) == n) or n == 0:
            raise ConfigError(
                "model.encoder_kernels, encoder_strides and encoder_paddings must have the same "
                f"non-zero length; found {len(self.encoder_kernels)}, "
                f"{len(self.encoder_strides)}, {len(self.encoder_paddings)}"
            )


@dataclass
class LossConfig:
    """InfoNCE (paper section 2.3): a predictor of z_{t+k} per step k = 1..prediction_steps."""

    prediction_steps: int = 12
    num_negatives: int = 128
    # Where negatives come from (paper Table 2): "mixed" (any window in the batch), "same_speaker",
    # "mixed_other_seq", "same_speaker_other_seq" or "same_seq".
    negative_mode: str = "mixed"
    # What predicts z_{t+k} from c_t: "linear" (the paper's W_k, one per step), "mlp" (one
    # hidden layer per step, as CPC_audio's "ffd") or "transformer" (one causal self-attention
    # layer over c shared by all steps, then a linear head per step, after CPC_audio's
    # transformer predictor; Riviere et al. 2020).
    predictor: str = "linear"
    predictor_hidden: int = (
        512  # hidden units of the "mlp" predictor (and the FFN of "transformer")
    )

    def __post_init__(self) -> None:
        check_section(self)


@dataclass
class DataConfig:
    """Where utterances come from and how training windows are cut."""

    root: str = MISSING_PATH  # LibriSpeech tree, Kaldi data dir or plain folder
    # Optional utterance-id lists (e.g. the CPC paper's train_split.txt); several lists are
    # joined in order (an id in two lists is an error). Empty = every utterance under root.
    train_list: tuple[str, ...] = ()
    valid_list: str = ""  # optional held-out list used for validation
    window: int = 20480  # samples per training window (1.28 s at 16 kHz)
    short_utterances: str = "drop"  # "drop" or "pad" utterances shorter than one window
    batch_size: int = 8  # windows per process (per GPU under DDP)
    speakers_per_batch: int = 0  # 0 = windows drawn freely; >0 groups each batch by speaker
    num_workers: int = 0
    seed: int = 0
    # Run wav.scp commands and lhotse command / url sources of root (cpcspeech.io.trust); the
    # CLI's train --allow-commands sets it. Off: such a line is refused before anything runs.
    allow_commands: bool = False

    def __post_init__(self) -> None:
        check_section(self)


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

    def __post_init__(self) -> None:
        check_section(self)


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
    # A compute budget: stop (with a checkpoint) once the run has used this many seconds, summed
    # over resumes; 0 = no budget, max_steps alone decides. "cpu" counts the training process's
    # CPU time (all its threads; not the data-loader workers), which a busy shared machine
    # disturbs far less than wall time; "wall" counts elapsed time.
    budget_seconds: float = 0.0
    budget_clock: str = "cpu"
    # Start the encoder and context from a trained model instead of random init (fine-tuning, or
    # going on from shipped weights that have no optimiser state): any --model spec (a shipped
    # name, a model directory, a checkpoint, a Hub id, a CPC_audio checkpoint). Its model config
    # must equal this one's; the W_k heads and the optimiser start fresh. Ignored once the run
    # has a checkpoint to resume. A path starting with ./ or ../ is relative to the YAML file.
    init_from: str = ""

    def __post_init__(self) -> None:
        check_section(self)


@dataclass
class AugmentConfig:
    """Time-domain augmentation of training windows (Kharitonov et al. 2020, arXiv:2007.00991).

    All off by default. ``side`` says which signal the model sees augmented: "past" augments
    the audio that the context c_t is computed from while the targets z_{t+k} come from the
    clean audio (two encoder passes), "future" the reverse, "both" feeds one augmented signal
    to both sides (one pass), "none" disables augmentation. Each transform is applied to a
    window with its own probability ``*_p``; ranges are drawn uniformly. See augment.py.
    """

    side: str = "none"
    pitch_p: float = 0.0
    pitch_semitones: float = 3.0  # shift drawn from [-x, x] semitones, duration kept
    reverb_p: float = 0.0
    reverb_rt60: tuple[float, float] = (0.2, 0.8)  # seconds, synthetic exponential-decay RIR
    reverb_wet: tuple[float, float] = (0.3, 1.0)  # reverberant part relative to the dry path
    band_reject_p: float = 0.0
    band_reject_hz: tuple[float, float] = (100.0, 6000.0)  # band centre range
    band_reject_width: tuple[float, float] = (0.1, 0.5)  # width as a fraction of the centre
    colored_noise_p: float = 0.0
    colored_noise_beta: tuple[float, float] = (0.0, 2.0)  # 1/f^beta: 0 white, 1 pink, 2 brown
    corpus_noise_p: float = 0.0  # another training utterance's window, mixed in (babble)
    folder_noise_p: float = 0.0  # a file from noise_dir (any soundfile format, any rate)
    noise_dir: str = ""
    noise_snr_db: tuple[float, float] = (5.0, 20.0)  # for all three additive noises
    time_dropout_p: float = 0.0
    time_dropout_ms: float = 50.0  # each dropped span is up to this long
    time_dropout_spans: int = 3  # up to this many spans per window

    def __post_init__(self) -> None:
        check_section(self)  # RANGES and CHOICES; here only what they cannot say
        for name in (
            "reverb_rt60",
            "reverb_wet",
            "band_reject_hz",
            "band_reject_width",
            "colored_noise_beta",
            "noise_snr_db",
        ):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(
                    f"augment.{name} must be a range [low, high] with low <= high; "
                    f"found {[low, high]}"
                )
        if self.folder_noise_p > 0 and not self.noise_dir:
            raise ConfigError("augment.folder_noise_p > 0 needs augment.noise_dir; found none")

    @property
    def enabled(self) -> bool:
        """True when some transform can fire on some side."""
        probabilities = (
            self.pitch_p,
            self.reverb_p,
            self.band_reject_p,
            self.colored_noise_p,
            self.corpus_noise_p,
            self.folder_noise_p,
            self.time_dropout_p,
        )
        return self.side != "none" and any(p > 0 for p in probabilities)


@dataclass
class Config:
    """The whole tree; each component receives only its own section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


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
    except (TypeError, ValueError, OverflowError):
        name = getattr(tp, "__name__", str(tp))
        raise ConfigError(f"{where}: expected {name}, found {value!r}") from None
    return value


def section_from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build one dataclass section from a mapping; unknown keys are errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, found {short_value(values)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    return cls(**kwargs)  # __post_init__ checks RANGES and CHOICES


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build a Config from a nested mapping (sections model, loss, data, optim, train)."""
    values = values or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config: expected a mapping of sections, found {short_value(values)}")
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
    values = values or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config: expected a mapping of sections, found {short_value(values)}")
    for name, section in values.items():
        if section is not None and not isinstance(section, dict):
            raise ConfigError(
                f"config section {name!r}: expected a mapping of keys, found {short_value(section)}"
            )
    out = {k: dict(v or {}) for k, v in values.items()}
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set expects section.key=value; found {item!r}")
        dotted, raw = item.split("=", 1)
        section, key = dotted.strip().split(".", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(
                f"--set {item!r}: the value is not valid YAML ({one_line(err)})"
            ) from None
        out.setdefault(section, {})[key] = value
    return out


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file; syntax and encoding errors become one-line ConfigErrors with the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or one_line(err)
        raise ConfigError(
            f"{where}: expected valid YAML, found a syntax error ({problem})"
        ) from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: expected UTF-8 text, found byte {err.object[err.start]:#x}"
        ) from None


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file, apply ``--set`` overrides and validate.

    Relative data paths (and a ``train.init_from`` path starting with ./ or ../) are resolved
    against the YAML file's folder. A path still equal to the
    placeholder ``???`` is an error that names the key.
    """
    path = Path(path)
    values = read_yaml(path)
    cfg = config_from_dict(apply_overrides(values, overrides or []))
    for key in ("root", "train_list", "valid_list"):
        value = getattr(cfg.data, key)
        values = value if isinstance(value, tuple) else (value,)
        if MISSING_PATH in values:
            raise ConfigError(
                f"data.{key} is required but still the placeholder {MISSING_PATH!r} in {path}; "
                f"set it in the file or with --set data.{key}=PATH"
            )
        resolved = tuple(
            str((path.parent / v).resolve()) if v and not os.path.isabs(v) else v for v in values
        )
        setattr(cfg.data, key, resolved if isinstance(value, tuple) else resolved[0])
    if cfg.train.init_from.startswith(("./", "../")):
        cfg.train.init_from = str((path.parent / cfg.train.init_from).resolve())
    if cfg.augment.noise_dir and not os.path.isabs(cfg.augment.noise_dir):
        cfg.augment.noise_dir = str((path.parent / cfg.augment.noise_dir).resolve())
    return cfg


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
