"""The CPC model (encoder g_enc + context g_ar), its padded batched forward and its file format.

Imports only the foundation (errors, files, config, runtime).
"""

from cpcspeech.model.cpc import ChannelNorm, CPCModel, Encoder
from cpcspeech.model.random_init import random_model
from cpcspeech.model.serialization import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    is_model_dir,
    load_state_strict,
    read_model_config,
)

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CPCModel",
    "ChannelNorm",
    "Encoder",
    "is_model_dir",
    "load_state_strict",
    "random_model",
    "read_model_config",
]
