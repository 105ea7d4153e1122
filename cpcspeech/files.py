"""Atomic outputs: written beside the target under a temporary name, then renamed into place.

Temporary files and folders get the mode ``open()`` and ``mkdir()`` would give (0666 / 0777 less
the umask), not tempfile's private 0600 / 0700, so outputs on a shared machine stay readable.
"""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from cpcspeech.errors import CPCSpeechError


def umask_mode(directory: bool = False) -> int:
    """The mode a new file (0o666) or folder (0o777) gets under the process's current umask."""
    try:  # Linux >= 4.7 reports it without changing it (os.umask is a race with other threads)
        with open("/proc/self/status", encoding="ascii") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def temp_sibling(path: str | os.PathLike) -> Path:
    """A new empty file beside ``path`` (same folder, so ``os.replace`` is atomic), umask mode."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, umask_mode())
    return Path(tmp)


def temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new empty folder under ``parent`` with the umask mode (mkdtemp alone gives 0700)."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(tmp, umask_mode(directory=True))
    return tmp


def replace_folder(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the finished folder ``tmp`` to ``final``; an existing ``final`` is moved aside first
    and removed only once the new folder is in place, so ``final`` is never half-written."""
    tmp, final = Path(tmp), Path(final)
    if not final.exists():
        os.replace(tmp, final)
        return
    trash = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".old-{final.name}-"))
    os.replace(final, trash / final.name)
    os.replace(tmp, final)
    shutil.rmtree(trash)


def check_output_apart(
    output: str | os.PathLike,
    inputs: list[str | os.PathLike],
    command: str,
    option: str = "--overwrite",
) -> None:
    """The ``--overwrite`` rule: an output that would be replaced must not be, hold or lie inside
    any input, so a command never deletes what it did not create. ``option`` names what would
    replace it in the message (``--out`` for a command that always writes its output).

    Paths are compared both as given (made absolute) and as real paths (symlinks followed), so a
    symlink to an input, or an input reached through one, counts as that input.

    Raises:
        CPCSpeechError: naming the output, the input and how they overlap.
    """
    outs = {Path(os.path.abspath(output)), Path(os.path.realpath(output))}
    for given in inputs:
        for src in {Path(os.path.abspath(given)), Path(os.path.realpath(given))}:
            for out in outs:
                if out == src:
                    relation = "is"
                elif out in src.parents:
                    relation = "holds"
                elif src in out.parents:
                    relation = "lies inside"
                else:
                    continue
                raise CPCSpeechError(
                    f"{command}: {option} would replace {output}, which {relation} the input "
                    f"{given}; expected an output apart from every input (nothing is deleted "
                    "that the command did not create)"
                )


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary sibling and ``os.replace``.

    The parent folder is created if needed; the file gets the umask mode, as ``open()`` gives.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_text(path: str | os.PathLike, error: type[Exception], encoding: str = "utf-8") -> str:
    """A text input file's content; bytes that are not UTF-8 raise ``error`` (a CPCSpeechError
    kind) naming the file, the byte and its offset, instead of a UnicodeDecodeError traceback."""
    try:
        return Path(path).read_text(encoding=encoding)
    except UnicodeDecodeError as err:
        raise error(
            f"{path}: expected UTF-8 text, found byte {err.object[err.start]:#04x} at offset "
            f"{err.start}"
        ) from None


def read_json(path: str | os.PathLike, error: type[Exception]) -> object:
    """A JSON input file's value; bytes that are not UTF-8 and text that is not JSON (a torn or
    garbled file) raise ``error`` with one line naming the file and where it broke."""
    text = read_text(path, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error(
            f"{path}: expected valid JSON, found a syntax error at line {err.lineno} column "
            f"{err.colno} ({err.msg})"
        ) from None


def json_text(value: object) -> str:
    """Strict JSON (indented, one trailing newline). A non-finite float becomes ``null``: strict
    parsers reject the bare ``NaN`` / ``Infinity`` that ``json.dumps`` writes by default (readers
    of our outputs say what a null means, e.g. an ABX mode with no scorable cell)."""
    return json.dumps(_finite(value), indent=2, allow_nan=False) + "\n"


def _finite(value: object) -> object:
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json_atomic(path: str | os.PathLike, value: object) -> None:
    """Write ``value`` as strict JSON (:func:`json_text`) through :func:`write_text_atomic`."""
    write_text_atomic(path, json_text(value))


def finite_or_none(value: float | None) -> float | None:
    """A number for strict JSON: NaN and +-inf become None (``null``)."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return value


def check_writable_folder(folder: str | os.PathLike, option: str = "--out") -> None:
    """Create ``folder`` if needed and write a probe file in it, so a bad output location fails
    before any work: a file in the way, no permission or a read-only disk become one line."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temp_sibling(folder / "write-test").unlink()
    except OSError as err:
        blocker = next((p for p in [folder, *folder.parents] if p.is_file()), None)
        reason = (
            f"{blocker} is a file, expected a folder"
            if blocker is not None
            else f"{type(err).__name__}: {err.strerror or err}"
        )
        raise CPCSpeechError(f"{option}: cannot write in {folder} ({reason})") from None


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
