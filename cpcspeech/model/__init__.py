"""The CPC model (encoder g_enc + context g_ar), its batched forward and its file format.

Imports only the foundation (errors, files, config, runtime).
"""

from cpcspeech.model.cpc import CONFIG_NAME, WEIGHTS_NAME, ChannelNorm, CPCModel, Encoder

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "CPCModel", "ChannelNorm", "Encoder"]
