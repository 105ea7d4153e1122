"""cpcspeech: Contrastive Predictive Coding (van den Oord et al. 2018) for speech."""

from cpcspeech.audio import load_audio
from cpcspeech.config import Config, ModelConfig, load_config
from cpcspeech.errors import CPCSpeechError
from cpcspeech.model import CPCModel

__version__ = "0.1.0"

__all__ = [
    "CPCModel",
    "CPCSpeechError",
    "Config",
    "ModelConfig",
    "__version__",
    "load_audio",
    "load_config",
]
