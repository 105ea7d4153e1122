"""The one family of errors cpcspeech raises on bad input.

The CLI prints them without a traceback.
"""


class CPCSpeechError(Exception):
    """Base class for every error caused by user input (files, configs, options)."""


class ConfigError(CPCSpeechError, ValueError):
    """A config file or override is invalid; the message names the key, expected and found."""


class AudioError(CPCSpeechError):
    """An audio file cannot be used; carries the file and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelLoadError(CPCSpeechError):
    """Weights or their config.json are missing, incompatible or unsafe to load."""


class AlignmentError(CPCSpeechError, ValueError):
    """Frame labels cannot be read, folded or matched to encoder frames."""


class CorpusError(CPCSpeechError):
    """A corpus folder, utterance list or Kaldi data file is missing or malformed."""


class UntrustedInputError(CPCSpeechError):
    """A data file would run a command or fetch a URL, and the user has not allowed it
    (``--allow-commands``, ``CPCSPEECH_ALLOW_COMMANDS=1``); raised before anything runs."""
