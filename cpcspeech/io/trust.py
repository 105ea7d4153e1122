"""The trust boundary: audio sources that run a command or fetch a URL need the user's opt-in.

A wav.scp line ending in ``|`` runs through ``/bin/sh``, and a lhotse source of type ``command``
or ``url`` (``pipe:`` urls run a shell command too; ``http`` urls are fetched) makes a data
folder into code. They run only with ``--allow-commands`` on the command line,
``allow_commands=True`` in the API or ``CPCSPEECH_ALLOW_COMMANDS=1`` in the environment; without
it, discovery refuses the first such line before anything is run or decoded.
"""

import os

from cpcspeech.errors import ConfigError, UntrustedInputError

ALLOW_COMMANDS_FLAG = "--allow-commands"
ALLOW_COMMANDS_ENV = "CPCSPEECH_ALLOW_COMMANDS"
TRUSTED_LHOTSE_SOURCES = ("file", "memory")
"""lhotse AudioSource types read without the opt-in: a file on disk, bytes inside the manifest."""


def commands_allowed(allow_commands: bool = False) -> bool:
    """True when the caller opts in (``allow_commands``) or ``$CPCSPEECH_ALLOW_COMMANDS`` is 1."""
    if allow_commands:
        return True
    value = os.environ.get(ALLOW_COMMANDS_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{ALLOW_COMMANDS_ENV}: expected 1 or 0, found {value!r}")


def refuse(where: str, what: str, value: str) -> UntrustedInputError:
    """The one-line error for an untrusted source found without the opt-in.

    Args:
        where: ``FILE:LINE``.
        what: what the line holds, e.g. "a shell command".
        value: the command or URL (shown as a repr, so it stays on one line).
    """
    shown = repr(value) if len(value) <= 80 else repr(value[:77]) + "..."
    return UntrustedInputError(
        f"{where}: {what} {shown}, which runs or fetches only with {ALLOW_COMMANDS_FLAG} (or "
        f"{ALLOW_COMMANDS_ENV}=1): a data file that runs commands is code, so only opt in for "
        "data you trust"
    )
