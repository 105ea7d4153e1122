"""Small things several test files build: a narrow CPCModel, noise files, a speaker corpus.

Plain functions (importable as ``from samples import ...``); conftest.py wraps the common cases
as fixtures. Each function gives exactly what the copies it replaced gave, seed for seed.
"""

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from cpcspeech.config import ModelConfig
from cpcspeech.model.cpc import CPCModel

TINY = {"encoder_channels": 16, "context_dim": 8}

# speaker -> pitch (Hz) of the tone corpus written by speaker_corpus
SPEAKER_PITCH = {"alice": 220.0, "bob": 440.0, "carol": 880.0}


def make_tiny_model(seed: int = 0, **overrides: object) -> CPCModel:
    """A CPCModel in eval mode with the default geometry (strides 5-4-2-2-2) and narrow layers
    (16 encoder channels, 8-d context unless ``overrides`` say otherwise), seeded by ``seed``."""
    torch.manual_seed(seed)
    return CPCModel(ModelConfig(**{**TINY, **overrides})).eval()


def noise(
    path: Path,
    rate: int = 16000,
    seconds: float = 0.5,
    channels: int = 1,
    seed: int = 0,
    subtype: str | None = None,
) -> Path:
    """Write round(rate * seconds) samples of N(0, 0.1) noise (channels > 1: (N, channels))
    in the format the suffix names; returns ``path``."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 0.1, (round(rate * seconds), channels)).astype(np.float32)
    sf.write(str(path), data if channels > 1 else data[:, 0], rate, subtype=subtype)
    return path


def speaker_corpus(root: Path) -> Path:
    """Plain folder SPEAKER/SPEAKER_I.wav: 3 speakers x 4 utterances of 0.25 s at 16 kHz, each
    speaker a tone at its own pitch (SPEAKER_PITCH) with a little noise."""
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 16000.0
    for speaker, freq in SPEAKER_PITCH.items():
        (root / speaker).mkdir(parents=True)
        for i in range(4):
            tone = np.sin(2 * np.pi * freq * (1 + 0.02 * i) * t)
            wav = 0.3 * tone + 0.01 * rng.normal(size=t.size)
            sf.write(root / speaker / f"{speaker}_{i}.wav", wav.astype(np.float32), 16000)
    return root
