"""Training: InfoNCE loss, augmentation, training windows, the objective, the loop's saved state,
checkpoints, run log and the loop."""

import importlib
import warnings

from cpcspeech.train.checkpoints import TrainingError
from cpcspeech.train.loop import TrainResult, train

__all__ = ["TrainResult", "TrainingError", "train"]

# Names the flat module cpcspeech/train.py held before the subpackages -> their new modules.
_MOVED_NAMES = {
    **dict.fromkeys(
        [
            "TRAINER_NAME",
            "HEADS_NAME",
            "META_NAME",
            "BEST_NAME",
            "RESUMABLE_CHANGES",
            "LoadedCheckpoint",
            "checkpoint_name",
            "list_checkpoints",
            "write_checkpoint",
            "prune_checkpoints",
            "load_trainer_state",
            "config_differences",
            "verify_checkpoint",
            "newest_verified_checkpoint",
        ],
        "cpcspeech.train.checkpoints",
    ),
    **dict.fromkeys(
        [
            "CPCObjective",
            "step_seed",
            "make_objective",
            "make_optimizer",
            "warmup_factor",
            "check_window",
            "validate",
        ],
        "cpcspeech.train.objective",
    ),
    "TRAINER_FORMAT": "cpcspeech.train.state",
    "RunLog": "cpcspeech.train.runlog",
    "VALID_SEED_OFFSET": "cpcspeech.train.loop",
    "resolve_device": "cpcspeech.runtime",
    "cpu_lacks_bf16": "cpcspeech.runtime",
}


def __getattr__(name: str):
    """``from cpcspeech.train import list_checkpoints`` (the old flat module's names) still
    works, with a warning naming the new module."""
    module = _MOVED_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'cpcspeech.train' has no attribute {name!r}")
    warnings.warn(
        f"cpcspeech.train.{name} moved to {module}.{name}: import it from there",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)
