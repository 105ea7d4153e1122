"""The training loop's progress and random state, mapped to and from trainer.pt and meta.json in
one place, so a resumed run carries on exactly where the checkpoint left it."""

import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch

TRAINER_FORMAT = 1  # trainer.pt's "format_version"


@dataclass
class TrainProgress:
    """Everything the loop carries from step to step; a checkpoint saves all of it.

    ``train_loss`` and ``valid_accuracy`` go to meta.json only, so a resumed run starts them
    afresh (nan / None) until the next log or validation.
    """

    step: int = 0
    epoch: int = 0
    batch_index: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    loss_sum: float = 0.0
    accuracy_sum: list[float] = field(default_factory=list)  # (K,) since the last log
    count: int = 0
    best_name: str = ""
    best_loss: float = math.inf
    last_valid: float | None = None
    valid_accuracy: list[float] | None = None
    train_loss: float = math.nan

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "TrainProgress":
        """The progress saved in a trainer.pt (``to_state``'s keys; ``cpu_seconds`` is absent
        from checkpoints written before budgets existed and reads as 0)."""
        return cls(
            step=state["step"],
            epoch=state["epoch"],
            batch_index=state["batch_index"],
            audio_seconds=state["audio_seconds"],
            wall_seconds=state["wall_seconds"],
            cpu_seconds=state.get("cpu_seconds", 0.0),
            loss_sum=state["accumulator"]["loss_sum"],
            accuracy_sum=list(state["accumulator"]["accuracy_sum"]),
            count=state["accumulator"]["count"],
            best_name=state["best"]["name"],
            best_loss=state["best"]["valid_loss"],
            last_valid=state["best"]["last_valid_loss"],
        )

    def to_state(
        self, optimizer: dict[str, Any], scheduler: dict[str, Any], rng: dict[str, Any]
    ) -> dict[str, Any]:
        """trainer.pt's contents: this progress with the optimiser's, scheduler's and RNG's
        state dicts, keys in the order every checkpoint has had them."""
        return {
            "format_version": TRAINER_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "batch_index": self.batch_index,
            "audio_seconds": self.audio_seconds,
            "wall_seconds": self.wall_seconds,
            "cpu_seconds": self.cpu_seconds,
            "optimizer": optimizer,
            "scheduler": scheduler,
            "rng": rng,
            "accumulator": {
                "loss_sum": self.loss_sum,
                "accuracy_sum": list(self.accuracy_sum),
                "count": self.count,
            },
            "best": {
                "name": self.best_name,
                "valid_loss": self.best_loss,
                "last_valid_loss": self.last_valid,
            },
        }

    def to_meta(self, hardware: str) -> dict[str, Any]:
        """meta.json's fields (``write_checkpoint`` adds the files' sha256 sums)."""
        return {
            "step": self.step,
            "audio_seconds": self.audio_seconds,
            "wall_seconds": self.wall_seconds,
            "cpu_seconds": self.cpu_seconds,
            "hardware": hardware,
            "valid_loss": self.last_valid,
            "valid_accuracy": self.valid_accuracy or [],
            "train_loss": self.train_loss,
        }


def rng_state() -> dict[str, Any]:
    """The global RNGs' states (torch, Python's random, CUDA where present), for trainer.pt."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` saved (CUDA's only where this machine has CUDA)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
