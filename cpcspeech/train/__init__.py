"""Training: InfoNCE loss, augmentation, training windows, checkpoints, run log and the loop."""

from cpcspeech.train.loop import TrainResult, train

__all__ = ["TrainResult", "train"]
