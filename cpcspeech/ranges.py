"""The allowed values of every setting: numeric ranges and string choices of the config sections,
and the ranges of the evaluation commands' numeric options. One place, checked whenever a config
section or an option dataclass is built (in Python and from YAML alike)."""

import math
import numbers
from dataclasses import dataclass
from typing import Any

from cpcspeech.errors import ConfigError

NORMS = ("none", "channel", "layer", "batch", "instance")
CONTEXT_TYPES = ("gru", "lstm", "rnn")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Range:
    """The allowed values of one numeric field: ``low <= value <= high`` (``>`` with ``low_open``).

    ``None`` leaves a side unbounded (but the value must be finite). For tuple fields the bound
    applies to each item, and ``max_items`` bounds the length.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    max_items: int | None = None

    def describe(self) -> str:
        low = "-inf" if self.low is None else _number(self.low)
        high = "inf" if self.high is None else _number(self.high)
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        return f"{left}{low}, {high}{right}"

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def check(self, name: str, value: Any) -> None:
        """Raise ConfigError naming the field, the allowed range and the value found.

        ``value`` is a number, or a tuple or list of numbers (each is checked); anything else
        (a string, a bool, None) is an error that says a number was expected.
        """
        many = isinstance(value, tuple | list)
        items = tuple(value) if many else (value,)
        if self.max_items is not None and len(items) > self.max_items:
            raise ConfigError(
                f"{name} must have at most {self.max_items} values; found {len(items)}"
            )
        for item in items:
            if isinstance(item, bool) or not isinstance(item, numbers.Real):
                raise ConfigError(
                    f"{name} must be a number in {self.describe()}; found {short_value(item)}"
                    + (f" in {list(value)}" if many else "")
                )
            if not self.contains(item):
                each = " (each value)" if many else ""
                raise ConfigError(
                    f"{name} must be in {self.describe()}{each}; found {item!r}"
                    + (f" in {list(value)}" if many else "")
                )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


_SIZE = 4096  # widest plausible layer; with the safetensors header check it bounds memory early
_SEED = Range(0, 2**32 - 1)
_COUNT = Range(0, 10**9)
_POSITIVE = Range(1, 10**9)
_PROBABILITY = Range(0, 1)
RANGES: dict[str, dict[str, Range]] = {
    "ModelConfig": {
        "sample_rate": Range(1000, 192000),
        "encoder_channels": Range(1, _SIZE),
        "encoder_kernels": Range(1, 1024, max_items=32),
        "encoder_strides": Range(1, 1024, max_items=32),
        "encoder_paddings": Range(0, 1024, max_items=32),
        "context_dim": Range(1, _SIZE),
        "context_layers": Range(1, 32),
    },
    "LossConfig": {
        "prediction_steps": Range(1, 1000),
        "num_negatives": Range(1, 100_000),
        "predictor_hidden": Range(1, _SIZE),
    },
    "DataConfig": {
        "window": Range(1, 16000 * 600),
        "batch_size": Range(1, 1_000_000),
        "speakers_per_batch": Range(0, 1_000_000),
        "num_workers": Range(0, 1024),
        "seed": _SEED,
    },
    "OptimConfig": {
        "lr": Range(0, 10, low_open=True),
        "betas": Range(0, 1, high_open=True),
        "weight_decay": Range(0, None),
        "warmup_steps": _COUNT,
        "head_lr": Range(0, 10),
        "grad_clip": Range(0, None),
    },
    "TrainConfig": {
        "max_steps": _POSITIVE,
        "log_every": _POSITIVE,
        "valid_every": _POSITIVE,
        "valid_batches": _COUNT,
        "checkpoint_every": _POSITIVE,
        "keep_last": _COUNT,
        "seed": _SEED,
        "budget_seconds": Range(0, 10**9),
    },
    "AugmentConfig": {
        **{
            name: Range(0, 1)
            for name in (
                "pitch_p",
                "reverb_p",
                "band_reject_p",
                "colored_noise_p",
                "corpus_noise_p",
                "folder_noise_p",
                "time_dropout_p",
            )
        },
        "pitch_semitones": Range(0, 12),
        "reverb_rt60": Range(0, 10, low_open=True),
        "reverb_wet": Range(0, 100),
        "band_reject_hz": Range(0, 96000, low_open=True),
        "band_reject_width": Range(0, 2, low_open=True),
        "colored_noise_beta": Range(-2, 4),
        "noise_snr_db": Range(-60, 120),
        "time_dropout_ms": Range(0, 10000, low_open=True),
        "time_dropout_spans": Range(1, 1000),
    },
}
"""The allowed range of every numeric field, by section class and field name; checked whenever a
section object is built (:func:`check_section`, from each section's ``__post_init__``), in Python
and from YAML, JSON or ``--set`` alike."""

NEGATIVE_MODES = ("mixed", "same_speaker", "mixed_other_seq", "same_speaker_other_seq", "same_seq")
PREDICTORS = ("linear", "mlp", "transformer")
CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "ModelConfig": {"norm": NORMS, "context_type": CONTEXT_TYPES},
    "LossConfig": {"negative_mode": NEGATIVE_MODES, "predictor": PREDICTORS},
    "DataConfig": {"short_utterances": ("drop", "pad")},
    "TrainConfig": {
        "precision": PRECISIONS,
        "device": ("auto", "cpu", "cuda"),
        "budget_clock": ("cpu", "wall"),
    },
    "AugmentConfig": {"side": ("none", "past", "future", "both")},
}
"""The allowed values of every string field that names one of a few options, like RANGES."""

OPTION_RANGES: dict[str, Range] = {
    "--seed": _SEED, "--k": Range(2, 1 << 16), "--max-frames": _POSITIVE,
    "--max-per-group": Range(1, 10**6), "--max-x-speakers": Range(1, 10**4),
    "--hidden": Range(0, 1 << 16), "--epochs": Range(1, 10**5), "--speakers": _POSITIVE,
    "--utts-per-speaker": _POSITIVE, "--perplexity": Range(0, 10**4, low_open=True),
}  # fmt: skip
"""The allowed range of the numeric options of the evaluation commands (their option
dataclasses check them when built, so the library refuses what the CLI refuses)."""


def check_options(**values: Any) -> None:
    """ConfigError for the first value outside its :data:`OPTION_RANGES` range; keys are option
    names with ``_`` for ``-`` (``max_per_group`` -> ``--max-per-group``), None is skipped."""
    for key, value in values.items():
        if value is not None:
            name = "--" + key.replace("_", "-")
            OPTION_RANGES[name].check(name, value)


SECTION_NAMES = {
    "ModelConfig": "model",
    "LossConfig": "loss",
    "DataConfig": "data",
    "OptimConfig": "optim",
    "TrainConfig": "train",
    "AugmentConfig": "augment",
}
"""The YAML section of each section class: the prefix of the keys its errors name."""


def check_section(section: Any) -> None:
    """ConfigError unless every field of ``section`` is within :data:`RANGES` and :data:`CHOICES`.

    Called by each section's ``__post_init__``, so ``ModelConfig(encoder_channels=10**9)`` fails
    exactly as ``model: {encoder_channels: 1000000000}`` in a YAML file does, naming the key
    (``model.encoder_channels``), what is allowed and what was found.
    """
    kind = type(section).__name__
    where = SECTION_NAMES[kind]
    for name, allowed in RANGES.get(kind, {}).items():
        allowed.check(f"{where}.{name}", getattr(section, name))
    for name, choices in CHOICES.get(kind, {}).items():
        value = getattr(section, name)
        if value not in choices:
            raise ConfigError(f"{where}.{name} must be one of {list(choices)}; found {value!r}")


def short_value(value: Any, limit: int = 60) -> str:
    """A value for an error message: its type and a repr cut to ``limit`` characters."""
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"
