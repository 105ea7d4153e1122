"""cpcspeech: Contrastive Predictive Coding (van den Oord et al. 2018) for speech."""

from cpcspeech import _moved
from cpcspeech.config import Config, ModelConfig, load_config
from cpcspeech.errors import CPCSpeechError
from cpcspeech.io.audio import load_audio
from cpcspeech.model import CPCModel
from cpcspeech.weights import load_model

_moved.install()

__version__ = "0.1.0"

__all__ = [
    "CPCModel",
    "CPCSpeechError",
    "Config",
    "ModelConfig",
    "__version__",
    "load_audio",
    "load_config",
    "load_model",
]
