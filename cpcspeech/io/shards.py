"""Extraction across machines: which inputs a shard I/N takes, and merging the shards' indexes.

A shard's index carries each file's ``input_position`` in the full input list, so merged shards
are read back in the unsharded order, row for row, without copying any feature array.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpcspeech.errors import CPCSpeechError
from cpcspeech.files import write_text_atomic

POSITION_COLUMN = "input_position"
ARRAY_COLUMN = "array"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    @property
    def label(self) -> str:
        """The suffix a shard's outputs get: ``shard-2-of-8`` for index 2 of 8."""
        return f"shard-{self.index}-of-{self.count}"


def parse_shard(spec: str, environ: dict[str, str] | None = None) -> Shard:
    """``"I/N"`` (0-based I) -> Shard; ``"env"`` reads RANK and WORLD_SIZE (set by torchrun).

    Raises:
        CPCSpeechError: a malformed spec, I outside [0, N), or ``env`` without the variables.
    """
    if spec == "env":
        env = os.environ if environ is None else environ
        if "RANK" not in env or "WORLD_SIZE" not in env:
            raise CPCSpeechError(
                "--shard env: expected RANK and WORLD_SIZE in the environment (torchrun sets "
                "them), found "
                + (", ".join(k for k in ("RANK", "WORLD_SIZE") if k in env) or "neither")
            )
        spec = f"{env['RANK']}/{env['WORLD_SIZE']}"
    parts = spec.split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise CPCSpeechError(
            f"--shard: expected I/N with 0 <= I < N (e.g. 0/4) or env, found {spec!r}"
        )
    index, count = int(parts[0]), int(parts[1])
    if not 0 <= index < count:
        raise CPCSpeechError(f"--shard {spec}: expected 0 <= I < N, found I={index}, N={count}")
    return Shard(index, count)


def assign_shards(seconds: list[float], count: int) -> list[int]:
    """Balance files across ``count`` shards by duration; deterministic.

    Longest file first (ties by position), each to the shard with the least audio so far (ties to
    the lowest shard): the classic longest-processing-time rule, whose largest shard is within
    4/3 of the best possible. Every process computes the same assignment from the same headers.

    Args:
        seconds: duration of each input, in input order (0 for files whose header failed).
        count: number of shards N.

    Returns:
        the shard (0..N-1) of each input, in input order.
    """
    loads = [0.0] * count
    shard_of = [0] * len(seconds)
    for position in sorted(range(len(seconds)), key=lambda i: (-seconds[i], i)):
        target = min(range(count), key=lambda s: (loads[s], s))
        shard_of[position] = target
        loads[target] += seconds[position]
    return shard_of


def shard_output(out: str | os.PathLike, shard: Shard) -> Path:
    """feats.npy -> feats.shard-I-of-N.npy; a directory output is shared by all shards."""
    out = Path(out)
    if out.suffix.lower() != ".npy":
        return out
    return out.with_name(f"{out.stem}.{shard.label}.npy")


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of an index; fields stay escaped as extract wrote them (a merged index
    copies them through unchanged, and ``cpcspeech.io.index.read_index`` unescapes any index)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = []
        for lineno, line in enumerate(f, start=2):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != len(header):
                raise CPCSpeechError(
                    f"{path}:{lineno}: expected {len(header)} tab-separated fields, "
                    f"found {len(fields)}"
                )
            rows.append(dict(zip(header, fields, strict=True)))
    return header, rows


def merge_indexes(shard_arrays: list[str | os.PathLike], out: str | os.PathLike) -> int:
    """Join the indexes of shard outputs into one index over all of them, copying no arrays.

    The merged index has the shards' columns with ``array`` first (the shard's .npy, relative
    to the merged index's folder) and ``input_position`` dropped; rows are in the unsharded input
    order. :class:`MergedFeatures` reads it.

    Args:
        shard_arrays: the shards' .npy outputs (``feats.shard-I-of-N.npy``), each with its
            ``.index.tsv`` beside it.
        out: the merged index to write (``*.index.tsv``).

    Returns:
        the number of files in the merged index.

    Raises:
        CPCSpeechError: a missing index or array, an index without ``input_position`` (not
            from a sharded run), or positions that are not exactly 0..M-1 once each (a shard
            missing or given twice).
    """
    out = Path(out)
    merged: dict[int, dict[str, str]] = {}
    columns: list[str] | None = None
    for array in map(Path, shard_arrays):
        index = array.with_name(array.stem + ".index.tsv")
        if not array.is_file() or not index.is_file():
            raise CPCSpeechError(
                f"{array}: expected a shard's .npy with its .index.tsv, found none"
            )
        header, rows = _read_rows(index)
        if POSITION_COLUMN not in header:
            raise CPCSpeechError(
                f"{index}: expected a column {POSITION_COLUMN!r} (written by extract --shard), "
                f"found columns {header}"
            )
        own = [c for c in header if c != POSITION_COLUMN]
        if columns is not None and own != columns:
            raise CPCSpeechError(f"{index}: expected columns {columns}, found {own}")
        columns = own
        relative = os.path.relpath(array.resolve(), out.resolve().parent)
        for row in rows:
            position = int(row.pop(POSITION_COLUMN))
            if position in merged:
                raise CPCSpeechError(
                    f"{index}: input position {position} is already in "
                    f"{merged[position][ARRAY_COLUMN]}; a shard was given twice"
                )
            merged[position] = {ARRAY_COLUMN: relative, **row}
    if columns is None:
        raise CPCSpeechError("merge-index: expected at least one shard output, found none")
    missing = sorted(set(range(len(merged))) - set(merged))
    if missing or (merged and max(merged) != len(merged) - 1):
        raise CPCSpeechError(
            f"merge-index: expected input positions 0..{max(merged)} once each, found "
            f"{len(merged)} rows (missing e.g. {missing[:5]}); is a shard missing?"
        )
    lines = ["\t".join([ARRAY_COLUMN, *columns])]
    lines += ["\t".join(merged[p][c] for c in (ARRAY_COLUMN, *columns)) for p in sorted(merged)]
    write_text_atomic(out, "\n".join(lines) + "\n")
    return len(merged)


class MergedFeatures:
    """A read-only view of sharded features through a merged index; arrays are memory-mapped.

    ``features(i)`` is file i's (T_i, D) float32 rows, in the unsharded input order.
    """

    def __init__(self, index: str | os.PathLike) -> None:
        self.index = Path(index)
        _, self.rows = _read_rows(self.index)
        self._arrays: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def features(self, i: int) -> np.ndarray:
        """(num_frames, D) float32 of file i, a slice of its shard's memory-mapped array."""
        row = self.rows[i]
        name = row[ARRAY_COLUMN]
        if name not in self._arrays:
            self._arrays[name] = np.load(self.index.parent / name, mmap_mode="r")
        first = int(row["first_row"])
        return self._arrays[name][first : first + int(row["num_frames"])]
