"""The ``.index.tsv`` beside a stacked ``.npy`` output: one row per input, saying where its
frames are or why it was skipped.

Fields are escaped (backslash, tab, newline, CR), so any file name fits in a tab-separated row.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cpcspeech.io.shards import POSITION_COLUMN, parse_run_line, run_line
from cpcspeech.io.sources import AudioSource

INDEX_COLUMNS = ("path", "first_row", "num_frames", "seconds", "status", "id")


@dataclass
class FileResult:
    """What happened to one input: where its rows are, or why it was skipped."""

    input: AudioSource
    first_row: int
    num_frames: int
    seconds: float
    status: str  # "ok" or "skipped: <reason>"
    output: Path | None = None  # the per-file .npy in directory mode
    position: int | None = None  # place in the full input list, for a sharded run's index


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def escape_field(text: str) -> str:
    """One ``.index.tsv`` field: backslash, tab, newline and CR become ``\\\\``, ``\\t``,
    ``\\n``, ``\\r`` (the escapes of PostgreSQL's text COPY format), so any file name fits."""
    return "".join(_ESCAPES.get(ch, ch) for ch in str(text))


def unescape_field(text: str) -> str:
    """The inverse of :func:`escape_field`."""
    return re.sub(r"\\(.)", lambda m: _UNESCAPES.get(m.group(1), m.group(0)), text)


def write_index(path: Path, files: list[FileResult], run: dict | None = None) -> None:
    """Write one row per file. A sharded run's index (``run``: its shard, input count, model
    sha256, layer, dim; see :mod:`cpcspeech.io.shards`) starts with ``# {run as JSON}`` and
    gains ``input_position``."""
    sharded = run is not None
    # surrogateescape: a file name that is not valid UTF-8 is written as its own bytes.
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
        if sharded:
            f.write(run_line(run) + "\n")
        f.write("\t".join(INDEX_COLUMNS + ((POSITION_COLUMN,) if sharded else ())) + "\n")
        for r in files:
            row = (
                str(r.input.label),
                str(r.first_row),
                str(r.num_frames),
                f"{r.seconds:.4f}",
                r.status,
                r.input.id,
            )
            row += (str(r.position),) if sharded else ()
            f.write("\t".join(escape_field(v) for v in row) + "\n")


def read_index(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a ``.index.tsv`` written by ``cpcspeech extract`` into one dict per file.

    Fields are unescaped (:func:`escape_field`), so ``path`` is the file name exactly. The run
    line of a shard's or merged index (``# {...}``) is skipped.
    """
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        header = f.readline().rstrip("\n")
        if parse_run_line(header, path) is not None:
            header = f.readline().rstrip("\n")
        header = header.split("\t")
        return [
            dict(zip(header, map(unescape_field, line.rstrip("\n").split("\t")), strict=True))
            for line in f
        ]


def index_path_for(out: str | os.PathLike) -> Path:
    """feats.npy -> feats.index.tsv (same folder)."""
    out = Path(out)
    return out.with_name(out.stem + ".index.tsv")
