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


def internal_error(err: BaseException) -> CPCSpeechError:
    """An unexpected exception (a bug, not bad input) as one line for the CLI's error boundary;
    ``CPCSPEECH_DEBUG=1`` shows the traceback instead. An OSError is named as such."""
    text = " ".join(str(err).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    if isinstance(err, OSError):  # the system's refusal (disk full, a closed pipe), not a bug
        return CPCSpeechError(f"{type(err).__name__}: {text}")
    return CPCSpeechError(
        f"internal error (a bug, please report it; CPCSPEECH_DEBUG=1 shows the traceback): "
        f"{type(err).__name__}: {text}"
    )
