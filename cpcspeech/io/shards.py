"""Extraction across machines: which inputs a shard I/N takes, and merging the shards' indexes.

A shard's index carries each file's ``input_position`` in the full input list, so merged shards
are read back in the unsharded order, row for row, without copying any feature array. Its first
line describes the run (``# {"shard": "I/N", "input_count": M, "model_sha256": ..., "layer": ...,
"dim": D}``), so merge-index refuses a missing shard and shards of different runs.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpcspeech.errors import CPCSpeechError
from cpcspeech.files import check_output_apart, write_text_atomic

POSITION_COLUMN = "input_position"
ARRAY_COLUMN = "array"
RUN_KEYS = ("input_count", "model_sha256", "layer", "dim")
"""What a shard index's first line records of its run; every shard of one run agrees on them."""


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
    Inputs of unknown length (0: a piped command, a header that failed) are dealt by count
    instead, the k-th of them to shard k mod N, so no shard gets all of them.

    Args:
        seconds: duration of each input, in input order (0 for unknown lengths).
        count: number of shards N.

    Returns:
        the shard (0..N-1) of each input, in input order.
    """
    loads = [0.0] * count
    shard_of = [0] * len(seconds)
    known = [i for i in range(len(seconds)) if seconds[i] > 0]
    for position in sorted(known, key=lambda i: (-seconds[i], i)):
        target = min(range(count), key=lambda s: (loads[s], s))
        shard_of[position] = target
        loads[target] += seconds[position]
    unknown = [i for i in range(len(seconds)) if not seconds[i] > 0]
    for k, position in enumerate(unknown):
        shard_of[position] = k % count
    return shard_of


def shard_output(out: str | os.PathLike, shard: Shard) -> Path:
    """feats.npy -> feats.shard-I-of-N.npy; a directory output is shared by all shards."""
    out = Path(out)
    if out.suffix.lower() != ".npy":
        return out
    return out.with_name(f"{out.stem}.{shard.label}.npy")


def run_line(run: dict) -> str:
    """The first line of a shard or merged index: ``# `` and the run's description as JSON."""
    return "# " + json.dumps(run, sort_keys=True)


def parse_run_line(line: str, path: str | os.PathLike) -> dict | None:
    """The run described by an index's first line, or None when it is the column header (an
    index written before indexes described their run, or an unsharded one)."""
    if not line.startswith("#"):
        return None
    try:
        run = json.loads(line[1:])
    except json.JSONDecodeError:
        run = None
    if not isinstance(run, dict):
        raise CPCSpeechError(f"{path}:1: expected '# {{...}}' describing the run, found {line!r}")
    return run


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]], dict | None]:
    """Header, rows and run description (or None) of an index; fields stay escaped as extract
    wrote them (a merged index copies them through unchanged, and
    ``cpcspeech.io.index.read_index`` unescapes any index)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        first = f.readline().rstrip("\n")
        run = parse_run_line(first, path)
        header = (f.readline().rstrip("\n") if run is not None else first).split("\t")
        rows = []
        for lineno, line in enumerate(f, start=2 if run is None else 3):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != len(header):
                raise CPCSpeechError(
                    f"{path}:{lineno}: expected {len(header)} tab-separated fields, "
                    f"found {len(fields)}"
                )
            rows.append(dict(zip(header, fields, strict=True)))
    return header, rows, run


def _check_run(index: Path, run: dict | None, first: dict | None) -> Shard:
    """A shard index's run: present (indexes of older versions lack it), and the same run as
    the first shard's. Returns the shard it names."""
    if run is None or "shard" not in run or any(k not in run for k in RUN_KEYS):
        raise CPCSpeechError(
            f'{index}: expected a first line \'# {{"shard": ..., "input_count": ...}}\' '
            f"describing the run (written by extract --shard of this cpcspeech version), found "
            f"{'none' if run is None else sorted(run)}; re-run extract --shard for this shard"
        )
    shard = parse_shard(str(run["shard"]))
    run["shard_count"] = shard.count
    if first is not None:
        for key in (*RUN_KEYS, "shard_count"):
            if run.get(key) != first.get(key):
                raise CPCSpeechError(
                    f"{index}: expected shards of one run, found {key} {run.get(key)!r} here "
                    f"and {first.get(key)!r} in {first['index']}"
                )
    return shard


def merge_indexes(shard_arrays: list[str | os.PathLike], out: str | os.PathLike) -> int:
    """Join the indexes of shard outputs into one index over all of them, copying no arrays.

    The merged index starts with the run's description (without ``shard``), then the shards'
    columns with ``array`` first (the shard's .npy, relative to the merged index's folder) and
    ``input_position`` dropped; rows are in the unsharded input order. :class:`MergedFeatures`
    reads it.

    Args:
        shard_arrays: the shards' .npy outputs (``feats.shard-I-of-N.npy``), each with its
            ``.index.tsv`` beside it: all N shards of one run, each once.
        out: the merged index to write (``*.index.tsv``).

    Returns:
        the number of files in the merged index.

    Raises:
        CPCSpeechError: a missing index or array; an index without ``input_position`` (not
            from a sharded run) or without its run description (an older version); shards of
            different runs (input count, model, layer, dimension); a shard missing or given
            twice; positions that are not exactly 0..M-1 once each.
    """
    out = Path(out)
    shard_files = [f for a in map(Path, shard_arrays) for f in (a, _index_of(a))]
    check_output_apart(out, shard_files, "merge-index", option="--out")  # it reads them all
    merged: dict[int, dict[str, str]] = {}
    columns: list[str] | None = None
    first: dict | None = None
    seen: dict[int, Path] = {}
    for array in map(Path, shard_arrays):
        index = _index_of(array)
        if not array.is_file() or not index.is_file():
            raise CPCSpeechError(
                f"{array}: expected a shard's .npy with its .index.tsv, found none"
            )
        header, rows, run = _read_rows(index)
        if POSITION_COLUMN not in header:
            raise CPCSpeechError(
                f"{index}: expected a column {POSITION_COLUMN!r} (written by extract --shard), "
                f"found columns {header}"
            )
        shard = _check_run(index, run, first)
        if shard.index in seen:
            raise CPCSpeechError(
                f"{index}: shard {shard.index}/{shard.count} is already given as "
                f"{seen[shard.index]}; a shard was given twice"
            )
        seen[shard.index] = index
        first = first or {**run, "index": index}
        own = [c for c in header if c != POSITION_COLUMN]
        if columns is not None and own != columns:
            raise CPCSpeechError(f"{index}: expected columns {columns}, found {own}")
        columns = own
        _add_rows(merged, rows, os.path.relpath(array.resolve(), out.resolve().parent), index)
    if columns is None or first is None:
        raise CPCSpeechError("merge-index: expected at least one shard output, found none")
    _check_complete(merged, seen, first)
    head = {k: first[k] for k in RUN_KEYS}
    lines = [run_line(head), "\t".join([ARRAY_COLUMN, *columns])]
    lines += ["\t".join(merged[p][c] for c in (ARRAY_COLUMN, *columns)) for p in sorted(merged)]
    write_text_atomic(out, "\n".join(lines) + "\n")
    return len(merged)


def _index_of(array: Path) -> Path:
    """feats.shard-0-of-2.npy -> its .index.tsv (io.index.index_path_for's rule; that module
    imports this one, so it cannot be imported here)."""
    return array.with_name(array.stem + ".index.tsv")


def _add_rows(
    merged: dict[int, dict[str, str]], rows: list[dict[str, str]], array: str, index: Path
) -> None:
    for row in rows:
        position = int(row.pop(POSITION_COLUMN))
        if position in merged:
            raise CPCSpeechError(
                f"{index}: input position {position} is already in "
                f"{merged[position][ARRAY_COLUMN]}; a shard was given twice"
            )
        merged[position] = {ARRAY_COLUMN: array, **row}


def _check_complete(merged: dict[int, dict[str, str]], seen: dict[int, Path], run: dict) -> None:
    """Every shard 0..N-1 given, and every input position 0..M-1 present once."""
    count, total = run["shard_count"], run["input_count"]
    missing_shards = sorted(set(range(count)) - set(seen))
    if missing_shards:
        raise CPCSpeechError(
            f"merge-index: expected all {count} shards of the run, found {len(seen)} (shard "
            f"{', '.join(map(str, missing_shards[:5]))} missing); is a shard missing?"
        )
    missing = sorted(set(range(total)) - set(merged))
    if missing or len(merged) != total:
        raise CPCSpeechError(
            f"merge-index: expected input positions 0..{total - 1} once each, found "
            f"{len(merged)} rows (missing e.g. {missing[:5]}); is a shard missing?"
        )


class MergedFeatures:
    """A read-only view of sharded features through a merged index; arrays are memory-mapped.

    ``features(i)`` is file i's (T_i, D) float32 rows, in the unsharded input order; ``run`` is
    the run's description (input count, model sha256, layer, dim), None in an older index.
    """

    def __init__(self, index: str | os.PathLike) -> None:
        self.index = Path(index)
        _, self.rows, self.run = _read_rows(self.index)
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
