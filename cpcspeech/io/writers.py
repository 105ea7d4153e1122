"""Feature outputs, one writer per format behind one interface: a stacked ``.npy`` with its
``.index.tsv``, a folder of ``.npy`` files, a Kaldi ``ark,scp:`` archive.

:func:`parse_output` turns ``--out`` into a writer without touching any path; the writer then
checks its location (:meth:`FeatureWriter.check`), takes each file's features
(:meth:`FeatureWriter.write`), and either puts everything in place (:meth:`FeatureWriter.commit`)
or removes what it started (:meth:`FeatureWriter.abort`), so no half-written output looks whole.
"""

import io
import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from cpcspeech.errors import CPCSpeechError
from cpcspeech.files import check_writable_folder, temp_sibling
from cpcspeech.io import kaldi
from cpcspeech.io.index import FileResult, index_path_for, write_index
from cpcspeech.io.shards import Shard, shard_output
from cpcspeech.io.sources import AudioSource, first_clash


class StackedNpy:
    """A (rows, dim) float32 .npy on disk, written row-block by row-block with plain writes.

    Rows are appended in order, so a sequential write is enough; unlike a writable memmap, whose
    dirty pages count towards the process's RSS until the file is closed, this keeps the memory
    of a many-file run flat whatever the output's size. The header is written first for
    ``capacity`` rows (numpy pads it so axis 0 can grow without moving the data) and rewritten with
    the rows actually written on :meth:`close`.
    """

    def __init__(self, path: Path, capacity: int, dim: int) -> None:
        self.path = path
        self.dim = dim
        self.rows = 0
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close() or abort()
        header = self._header(capacity)
        self.offset = len(header)
        self.file.write(header)

    def _header(self, rows: int) -> bytes:
        buf = io.BytesIO()
        header = {"descr": "<f4", "fortran_order": False, "shape": (rows, self.dim)}
        np.lib.format.write_array_header_1_0(buf, header)
        return buf.getvalue()

    def append(self, feats: np.ndarray) -> None:
        """feats: (T, dim) float32, written at the next free row."""
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"Expected feats of shape (T, {self.dim}). Found: {feats.shape}")
        self.file.write(np.ascontiguousarray(feats, dtype="<f4").data)
        self.rows += feats.shape[0]

    def close(self) -> None:
        """Write the final header (rows written), cut anything beyond them, and close."""
        header = self._header(self.rows)
        if len(header) != self.offset:  # numpy reserves room for 21 digits on axis 0
            raise RuntimeError(f"npy header changed size: {self.offset} -> {len(header)}")
        self.file.seek(0)
        self.file.write(header)
        self.file.truncate(self.offset + self.rows * self.dim * 4)
        self.file.close()

    def abort(self) -> None:
        """Close without finishing the header (the caller removes the file)."""
        self.file.close()


class FeatureWriter(ABC):
    """Where extracted features go. ``out`` is the output the summary names; ``index`` its
    index (``.index.tsv`` or ``.scp``), or None for a folder of ``.npy`` files."""

    out: Path
    index: Path | None = None
    run: dict  # the run's identity (input_count, model_sha256, layer), recorded by shard indexes

    @abstractmethod
    def check(self, sources: list[AudioSource], dim: int) -> None:
        """Before any audio is read: the location takes files, and no two sources would be
        written under one name. ``dim``: the feature width D."""

    @abstractmethod
    def write(self, result: FileResult, feats: np.ndarray | None) -> None:
        """Write one file's features, (T, D) float32, or record a skipped file (``feats``
        None); sets ``result.first_row`` or ``result.output``."""

    @abstractmethod
    def commit(self, results: list[FileResult]) -> None:
        """Finish and put every output (and the index of ``results``) in place."""

    @abstractmethod
    def abort(self) -> None:
        """Remove every temporary file; nothing that looks complete is left."""


class StackedNpyWriter(FeatureWriter):
    """``OUT.npy``: every file's frames stacked, (total_frames, D), with ``OUT.index.tsv``.

    A shard writes ``OUT.shard-I-of-N.npy``; its index starts with the run's description
    (``run``, set by the caller before :meth:`commit`) and gains ``input_position``.
    """

    def __init__(self, out: Path, shard: Shard | None = None) -> None:
        self.out = shard_output(out, shard) if shard is not None else out
        self.index = index_path_for(self.out)
        self.shard = shard
        self.run: dict = {}
        self.array: StackedNpy | None = None
        self.temps: list[Path] = []
        self.dim = 0

    def check(self, sources: list[AudioSource], dim: int) -> None:
        check_writable_folder(self.out.parent, f"--out {self.out}")
        self.dim = dim

    def _open(self) -> StackedNpy:
        if self.array is None:
            self.temps.append(temp_sibling(self.out))
            self.array = StackedNpy(self.temps[-1], 0, self.dim)
        return self.array

    def write(self, result: FileResult, feats: np.ndarray | None) -> None:
        array = self._open()
        result.first_row = array.rows
        if feats is not None:
            array.append(feats)

    def commit(self, results: list[FileResult]) -> None:
        self._open().close()
        self.temps.append(temp_sibling(self.index))
        run = None
        if self.shard is not None:
            run = {"shard": f"{self.shard.index}/{self.shard.count}", "dim": self.dim, **self.run}
        write_index(self.temps[-1], results, run)
        os.replace(self.temps[-1], self.index)
        os.replace(self.temps[0], self.out)
        self.temps.clear()

    def abort(self) -> None:
        if self.array is not None:
            self.array.abort()
        for tmp in self.temps:
            tmp.unlink(missing_ok=True)
        self.temps.clear()


class NpyFolderWriter(FeatureWriter):
    """A folder: ``OUT/<key>.npy``, (T, D) float32 per input, each written through a temporary
    file and renamed, so a finished file is whole."""

    SUFFIX = ".npy"
    CLASH_HINT = "give them separately or use one .npy output"

    def __init__(self, out: Path) -> None:
        self.out = out
        self.run: dict = {}
        self.temps: list[Path] = []

    def check(self, sources: list[AudioSource], dim: int) -> None:
        check_writable_folder(self.out, f"--out {self.out}")
        clash = first_clash(sources, lambda item: item.key)
        if clash is not None:
            earlier, item = clash
            raise CPCSpeechError(
                f"{item.path} and {earlier.path} would both be written to "
                f"{item.key}{self.SUFFIX}; {self.CLASH_HINT}"
            )

    def save(self, path: Path, feats: np.ndarray) -> None:
        """Write feats (T, D) to ``path`` (a temporary name) in this folder's format."""
        with open(path, "wb") as f:
            np.save(f, feats)

    def write(self, result: FileResult, feats: np.ndarray | None) -> None:
        if feats is None:
            return
        target = self.out / f"{result.input.key}{self.SUFFIX}"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.temps.append(temp_sibling(target))
        self.save(self.temps[-1], feats)
        os.replace(self.temps.pop(), target)
        result.output = target

    def commit(self, results: list[FileResult]) -> None:
        """Every file is already in place."""

    def abort(self) -> None:
        for tmp in self.temps:
            tmp.unlink(missing_ok=True)
        self.temps.clear()


class TextFolderWriter(NpyFolderWriter):
    """A folder: ``OUT/<key>.txt``, (T, D) per input as text, one frame per line, values
    separated by spaces (``np.loadtxt`` reads it back; the ZeroSpeech 2021 feature format), each
    written through a temporary file and renamed. Not an ``--out`` of extract: the ZeroSpeech
    submission (:mod:`cpcspeech.zerospeech`) uses it."""

    FORMAT = "%.6g"
    SUFFIX = ".txt"
    CLASH_HINT = "expected one audio file per name"

    def save(self, path: Path, feats: np.ndarray) -> None:
        np.savetxt(path, feats, fmt=self.FORMAT)


class KaldiArkWriter(FeatureWriter):
    """``ark,scp:FEATS.ark,FEATS.scp``: one Kaldi float matrix (T, D) per input, keyed by its
    utterance id, and the scp index (:class:`cpcspeech.io.kaldi.ArkScpWriter`, kaldiio)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.target = kaldi.parse_wspecifier(spec)
        self.out = Path(self.target.ark)
        self.index = Path(self.target.scp)
        self.run: dict = {}
        self.ark: kaldi.ArkScpWriter | None = None

    def check(self, sources: list[AudioSource], dim: int) -> None:
        for path in (self.out, self.index):
            check_writable_folder(path.parent, f"--out {self.spec}")
        clash = first_clash(sources, lambda item: item.id)
        if clash is not None:
            earlier, item = clash
            raise CPCSpeechError(
                f"{item.label} and {earlier.label} would both be written under the "
                f"Kaldi key {item.id!r}; expected each key once"
            )

    def write(self, result: FileResult, feats: np.ndarray | None) -> None:
        if feats is None:
            return
        if self.ark is None:
            self.ark = kaldi.ArkScpWriter(self.target)
        self.ark.write(result.input.id, feats)

    def commit(self, results: list[FileResult]) -> None:
        if self.ark is None:
            self.ark = kaldi.ArkScpWriter(self.target)
        self.ark.commit()

    def abort(self) -> None:
        if self.ark is not None:
            self.ark.abort()


def parse_output(out: str | os.PathLike, shard: Shard | None = None) -> FeatureWriter:
    """``--out`` -> its writer; no path is created or written.

    ``ark,scp:A.ark,A.scp`` -> :class:`KaldiArkWriter`; a directory (existing, or ending in
    ``/``) -> :class:`NpyFolderWriter`; ``*.npy`` -> :class:`StackedNpyWriter`.

    Raises:
        CPCSpeechError: any other ``out``, a malformed Kaldi spec, or ``shard`` with ark output.
    """
    text = str(out)
    if kaldi.is_wspecifier(text):
        if shard is not None:
            raise CPCSpeechError("--shard with ark,scp output: expected .npy or a folder")
        return KaldiArkWriter(text)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return NpyFolderWriter(Path(text))
    if Path(text).suffix.lower() == ".npy":
        return StackedNpyWriter(Path(text), shard)
    raise CPCSpeechError(
        f"--out {text!r}: expected a path ending in .npy (one stacked array + .index.tsv) or a "
        "directory (existing, or ending in '/') for one .npy per input, or a Kaldi "
        "ark,scp:FEATS.ark,FEATS.scp"
    )
