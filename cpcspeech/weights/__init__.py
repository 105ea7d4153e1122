"""Weights: resolving ``--model`` specs, published checkpoints, CPC_audio import, export, cards.

``load_model`` is the one loader behind every ``--model``.
"""

from cpcspeech.weights.resolve import load_model

__all__ = ["load_model"]
