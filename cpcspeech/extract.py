"""Feature extraction over many files: find inputs, run CPCModel.extract, write .npy atomically.

One ``.npy`` output holds every file's frames stacked, with a ``.index.tsv`` sidecar; a directory
output holds one ``.npy`` per input, mirroring the input's relative path; an ``ark,scp:`` output
is a Kaldi archive and its index (see kaldi.py, which also reads piped wav.scp entries and
``segments``).
"""

import contextlib
import io
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cpcspeech.errors import AudioError, CPCSpeechError
from cpcspeech.files import check_writable_folder, temp_sibling
from cpcspeech.io import kaldi
from cpcspeech.io.audio import AUDIO_EXTENSIONS, AudioInfo, audio_info, load_audio
from cpcspeech.io.shards import POSITION_COLUMN, Shard, assign_shards, shard_output
from cpcspeech.model.batched import extract_batch, plan_batches
from cpcspeech.model.cpc import CPCModel
from cpcspeech.runtime import resolve_device, trim_heap
from cpcspeech.weights.resolve import load_model

INDEX_COLUMNS = ("path", "first_row", "num_frames", "seconds", "status", "id")


@dataclass(frozen=True)
class AudioInput:
    """One audio file to extract.

    ``key`` is the file's relative path without its audio extension ("a/b" for DIR/a/b.flac, the
    file's stem for a file given directly, the utterance id for a wav.scp line); a directory output
    writes ``OUT/<key>.npy``.
    """

    path: Path  # absolute
    key: str
    utt_id: str | None = None
    # Audio that is not simply the file at ``path``: a piped wav.scp command, a segment of a
    # recording (kaldi.CommandAudio, kaldi.SegmentAudio) or a lhotse cut or recording
    # (lhotse_ext.LhotseAudio). It has .label, .info() and .load().
    reader: object | None = None

    @property
    def id(self) -> str:
        """The utterance id where one was given (wav.scp), else the key."""
        return self.utt_id if self.utt_id is not None else self.key

    @property
    def source(self) -> str:
        """What the index and messages name: the file, the command or the segment."""
        return self.reader.label if self.reader is not None else str(self.path)


@dataclass
class FileResult:
    """What happened to one input: where its rows are, or why it was skipped."""

    input: AudioInput
    first_row: int
    num_frames: int
    seconds: float
    status: str  # "ok" or "skipped: <reason>"
    output: Path | None = None  # the per-file .npy in directory mode
    position: int | None = None  # place in the full input list, for a sharded run's index


@dataclass
class ExtractSummary:
    """The outcome of :func:`extract_features`."""

    out: Path
    index: Path | None  # the .index.tsv next to a single .npy output; None in directory mode
    layer: str
    dim: int
    device: str
    files: list[FileResult] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def ok(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "ok"]

    @property
    def skipped(self) -> list[FileResult]:
        return [f for f in self.files if f.status != "ok"]

    @property
    def total_frames(self) -> int:
        return sum(f.num_frames for f in self.files)

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio actually extracted (skipped files excluded)."""
        return sum(f.seconds for f in self.ok)

    @property
    def speed(self) -> float:
        """Audio seconds per wall-clock second (x real time)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")


# ----- inputs -----


def _is_wav_scp(path: Path) -> bool:
    return path.name == "wav.scp" or path.suffix.lower() == ".scp"


def _strip_audio_suffix(rel: str) -> str:
    root, ext = os.path.splitext(rel)
    return root if ext.lower() in AUDIO_EXTENSIONS else rel


def _read_wav_scp(scp: Path) -> list[AudioInput]:
    base = scp.parent
    items: list[AudioInput] = []
    seen: dict[str, int] = {}
    with open(scp, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise CPCSpeechError(f"{scp}:{lineno}: expected 'UTT_ID PATH', found {line!r}")
            utt, target = parts[0], parts[1].strip()
            if "/" in utt or "\\" in utt or utt in (".", ".."):
                raise CPCSpeechError(
                    f"{scp}:{lineno}: utterance id {utt!r} must not contain a path separator"
                )
            if utt in seen:
                raise CPCSpeechError(
                    f"{scp}:{lineno}: utterance id {utt!r} already used on line {seen[utt]}"
                )
            seen[utt] = lineno
            if target.endswith("|"):  # a shell command writing audio to stdout
                command = kaldi.CommandAudio(target)
                items.append(AudioInput(Path(os.path.abspath(scp)), utt, utt, command))
                continue
            path = Path(target)
            if not path.is_absolute():
                path = base / path
            items.append(AudioInput(Path(os.path.abspath(path)), utt, utt))
    return items


def _read_data_dir(directory: Path) -> list[AudioInput]:
    """A Kaldi data directory: its wav.scp, cut by its ``segments`` file when there is one."""
    recordings = _read_wav_scp(directory / "wav.scp")
    if not (directory / "segments").is_file():
        return recordings
    by_id = {
        item.id: kaldi.Recording(
            item.source, item.path if item.reader is None else None, item.reader
        )
        for item in recordings
    }
    segments = kaldi.read_segments(directory / "segments", by_id)
    return [
        AudioInput(Path(os.path.abspath(directory / "segments")), seg, seg, reader)
        for seg, reader in segments
    ]


def _read_lhotse_manifest(manifest: Path) -> list[AudioInput]:
    """A lhotse CutSet or RecordingSet (.jsonl.gz): one input per cut or recording."""
    try:
        from cpcspeech.lhotse_ext import manifest_inputs
    except ImportError as err:
        raise CPCSpeechError(
            f"{manifest}: lhotse manifests need lhotse, found it not installed ({err}): "
            "pip install 'cpcspeech[lhotse]'"
        ) from err
    path = Path(os.path.abspath(manifest))
    return [AudioInput(path, key, key, audio) for key, audio in manifest_inputs(manifest)]


def _scan_directory(directory: Path) -> list[AudioInput]:
    found = [
        p for p in directory.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
    ]
    items = []
    for p in found:
        rel = p.relative_to(directory).as_posix()
        items.append(AudioInput(Path(os.path.abspath(p)), _strip_audio_suffix(rel)))
    items.sort(key=lambda item: item.path.relative_to(os.path.abspath(directory)).as_posix())
    if not items:
        raise CPCSpeechError(
            f"{directory}: expected audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) under "
            "this directory, found none"
        )
    return items


def find_inputs(inputs: Sequence[str | os.PathLike]) -> list[AudioInput]:
    """Expand files, directories (recursive, sorted by relative path) and Kaldi wav.scp files.

    A directory holding a ``wav.scp`` is a Kaldi data directory: its wav.scp is read, and with a
    ``segments`` file each segment becomes one input cut from its recording. wav.scp entries
    ending in ``|`` are shell commands (see kaldi.CommandAudio). A lhotse CutSet or RecordingSet
    manifest (``.jsonl.gz``, ``.jsonl``) gives one input per cut or recording, keyed by its id.
    Order is deterministic: inputs in the order given, directories sorted, wav.scp order kept.
    The same audio file reached twice (e.g. a folder and a file inside it) is an error naming both,
    rather than a silent de-duplication.
    """
    items: list[AudioInput] = []
    for spec in inputs:
        path = Path(spec)
        if path.is_dir() and (path / "wav.scp").is_file():
            items.extend(_read_data_dir(path))
        elif path.is_dir():
            items.extend(_scan_directory(path))
        elif path.is_file() and _is_wav_scp(path):
            items.extend(_read_wav_scp(path))
        elif path.is_file() and path.name.lower().endswith((".jsonl.gz", ".jsonl")):
            items.extend(_read_lhotse_manifest(path))
        elif path.is_file() or path.suffix.lower() in AUDIO_EXTENSIONS:
            # A missing audio file is reported by load_audio with the usual AudioError.
            items.append(AudioInput(Path(os.path.abspath(path)), _strip_audio_suffix(path.name)))
        else:
            raise CPCSpeechError(
                f"input {str(spec)!r}: expected an audio file, a directory or a wav.scp, "
                "found nothing at that path"
            )
    if not items:
        raise CPCSpeechError("expected at least one audio input, found none")
    first: dict[Path, AudioInput] = {}
    for item in items:
        if item.reader is not None:  # commands and segments: their ids were checked when read
            continue
        if item.path in first:
            raise CPCSpeechError(
                f"{item.path}: listed twice (as {first[item.path].id!r} and {item.id!r}); "
                "each audio file may appear once"
            )
        first[item.path] = item
    return items


# ----- model and device -----


def load_model_for_cli(spec: str, seed: int = 0, short: bool = False) -> tuple[CPCModel, str]:
    """``"random"`` -> a seeded, untrained CPCModel; anything else -> CPCModel.from_pretrained.

    Returns the model in eval mode and a one-line description of its weights (``short``: without
    local paths, see :meth:`ModelSource.describe`).
    """
    if spec == "random":
        torch.manual_seed(seed)
        model, description = CPCModel(), f"random init (seed {seed})"
    else:
        model, source = load_model(spec)
        description = source.describe(short=short)
    return model.eval(), description


# ----- reading ahead -----

READ_AHEAD = 2
"""Files decoded ahead of the model: enough to hide decoding, few enough to bound memory."""


@dataclass(frozen=True)
class _ReaderCrash:
    """An unexpected exception on the reader thread, re-raised on the caller's thread."""

    error: BaseException


def _read_ahead(
    items: Sequence[AudioInput | None],
    load: Callable[[AudioInput], np.ndarray],
    depth: int = READ_AHEAD,
) -> Iterator[np.ndarray | AudioError | None]:
    """Yield ``load(item)`` for each item in order, decoded on a reader thread.

    Decoding and resampling of the next files (soundfile and soxr release the GIL) overlap the
    model's work on the current one; the bounded queue keeps at most ``depth`` decoded files
    waiting. A bad file's AudioError is yielded, not raised, so the caller decides whether to skip
    it; a ``None`` item yields ``None``. Close the generator (``contextlib.closing``) to stop and
    join the thread early.

    Yields:
        wav: (N,) float32 at ``sample_rate``, or the file's AudioError, or None.
    """
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def read() -> None:
        for source in items:
            try:
                item = None if source is None else load(source)
            except AudioError as err:
                item = err
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                item = _ReaderCrash(err)
            while not stop.is_set():
                try:
                    waiting.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set() or isinstance(item, _ReaderCrash):
                return

    thread = threading.Thread(target=read, name="cpcspeech-reader", daemon=True)
    thread.start()
    try:
        for _ in items:
            item = waiting.get()
            if isinstance(item, _ReaderCrash):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


# ----- computing features -----

CUDA_BATCH_SECONDS = 120.0
"""--batch-seconds auto on CUDA: about 0.6 GB of fp32 activations in the first conv layer. Not
tuned on a GPU yet (none was available); on a CPU, batching only adds padding."""


def parse_batch_seconds(spec: str, device: str | torch.device) -> float:
    """``"auto"`` -> CUDA_BATCH_SECONDS on a CUDA device, 0 on CPU; else a number >= 0."""
    if spec == "auto":
        resolved = device if isinstance(device, torch.device) else resolve_device(device)
        return CUDA_BATCH_SECONDS if resolved.type == "cuda" else 0.0
    try:
        value = float(spec)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        raise CPCSpeechError(f"--batch-seconds: expected auto or a number >= 0, found {spec!r}")
    return value


WINDOW_BATCHES = 8
"""Batching sorts this many batches' worth of consecutive files by length, then writes them in
input order: enough to group similar lengths, little enough to hold their features in memory."""


def _single_features(
    model: CPCModel, wav: np.ndarray, layer: str, chunk_seconds: float, precision: str
) -> np.ndarray:
    """wav: (N,) -> (T, D) float32 numpy, one utterance through CPCModel.extract."""
    feats = model.extract(
        torch.from_numpy(wav), layer=layer, chunk_seconds=chunk_seconds, precision=precision
    )  # (T, D)
    return feats.to("cpu", torch.float32).numpy()


def _window_features(
    model: CPCModel, wavs: list, layer: str, chunk_seconds: float, precision: str, budget: int
) -> list[np.ndarray | None]:
    """Features of a window of files: batched by length where they fit, else one by one."""
    feats: list[np.ndarray | None] = [None] * len(wavs)
    longest = min(budget, int(chunk_seconds * model.sample_rate))
    fits = [i for i, w in enumerate(wavs) if isinstance(w, np.ndarray) and len(w) <= longest]
    device = next(model.parameters()).device
    for batch in plan_batches([len(wavs[i]) for i in fits], budget):
        tensors = [torch.from_numpy(wavs[fits[j]]).to(device) for j in batch]
        for j, out in zip(batch, extract_batch(model, tensors, layer, precision), strict=True):
            feats[fits[j]] = out.to("cpu", torch.float32).numpy()
    for i, wav in enumerate(wavs):
        if feats[i] is None and isinstance(wav, np.ndarray):
            feats[i] = _single_features(model, wav, layer, chunk_seconds, precision)
    return feats


def _compute_features(
    model: CPCModel,
    decoded: Iterator[np.ndarray | AudioError | None],
    layer: str,
    chunk_seconds: float,
    precision: str,
    batch_seconds: float,
) -> Iterator[tuple[np.ndarray | AudioError | None, np.ndarray | None]]:
    """Yield (wav or error or None, features (T, D) or None) for each decoded file, in order.

    With ``batch_seconds`` 0, one file at a time; otherwise windows of consecutive files are
    grouped into padded batches (:mod:`cpcspeech.model.batched`).
    """
    if batch_seconds <= 0:
        for wav in decoded:
            if isinstance(wav, np.ndarray):
                yield wav, _single_features(model, wav, layer, chunk_seconds, precision)
            else:
                yield wav, None
        return
    budget = max(model.min_samples, int(batch_seconds * model.sample_rate))
    window: list = []
    for wav in decoded:
        window.append(wav)
        if sum(len(w) for w in window if isinstance(w, np.ndarray)) >= WINDOW_BATCHES * budget:
            feats = _window_features(model, window, layer, chunk_seconds, precision, budget)
            yield from zip(window, feats, strict=True)
            window = []
    feats = _window_features(model, window, layer, chunk_seconds, precision, budget)
    yield from zip(window, feats, strict=True)


# ----- writers -----


def _temp_path(directory: Path, name: str) -> Path:
    return temp_sibling(directory / name)


class _StackedNpy:
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


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def escape_field(text: str) -> str:
    """One ``.index.tsv`` field: backslash, tab, newline and CR become ``\\\\``, ``\\t``,
    ``\\n``, ``\\r`` (the escapes of PostgreSQL's text COPY format), so any file name fits."""
    return "".join(_ESCAPES.get(ch, ch) for ch in str(text))


def unescape_field(text: str) -> str:
    """The inverse of :func:`escape_field`."""
    return re.sub(r"\\(.)", lambda m: _UNESCAPES.get(m.group(1), m.group(0)), text)


def _write_index(path: Path, files: list[FileResult], sharded: bool = False) -> None:
    # surrogateescape: a file name that is not valid UTF-8 is written as its own bytes.
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write("\t".join(INDEX_COLUMNS + ((POSITION_COLUMN,) if sharded else ())) + "\n")
        for r in files:
            row = (
                str(r.input.source),
                str(r.first_row),
                str(r.num_frames),
                f"{r.seconds:.4f}",
                r.status,
                r.input.id,
            )
            row += (str(r.position),) if sharded else ()
            f.write("\t".join(escape_field(v) for v in row) + "\n")


def read_index(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a ``.index.tsv`` written by :func:`extract_features` into one dict per file.

    Fields are unescaped (:func:`escape_field`), so ``path`` is the file name exactly.
    """
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        header = f.readline().rstrip("\n").split("\t")
        return [
            dict(zip(header, map(unescape_field, line.rstrip("\n").split("\t")), strict=True))
            for line in f
        ]


def index_path_for(out: str | os.PathLike) -> Path:
    """feats.npy -> feats.index.tsv (same folder)."""
    out = Path(out)
    return out.with_name(out.stem + ".index.tsv")


def _check_writable(out: Path, mode: str) -> None:
    """The output folder must take files before any audio is read or features computed."""
    check_writable_folder(out if mode == "dir" else out.parent, f"--out {out}")


def _output_mode(out: str | os.PathLike) -> str:
    text = str(out)
    if kaldi.is_wspecifier(text):
        return "ark"
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return "dir"
    if Path(text).suffix.lower() == ".npy":
        return "npy"
    raise CPCSpeechError(
        f"--out {text!r}: expected a path ending in .npy (one stacked array + .index.tsv) or a "
        "directory (existing, or ending in '/') for one .npy per input, or a Kaldi "
        "ark,scp:FEATS.ark,FEATS.scp"
    )


# ----- the run -----


def _progress_bar(enabled: bool, total_seconds: float, num_files: int):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("extract"),
        BarColumn(),
        TextColumn("{task.fields[files]}/" + str(num_files) + " files"),
        TextColumn("{task.completed:.1f}/{task.total:.1f} s audio"),
        TextColumn("{task.fields[speed]:.1f}x real time"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )
    task = progress.add_task("extract", total=max(total_seconds, 1e-9), files=0, speed=0.0)
    return progress, task


def extract_features(
    model: CPCModel,
    inputs: Sequence[AudioInput | str | os.PathLike],
    out: str | os.PathLike,
    layer: str = "c",
    device: str | torch.device = "cpu",
    skip_errors: bool = False,
    progress: bool = False,
    chunk_seconds: float = 20.0,
    precision: str = "fp32",
    shard: Shard | None = None,
    batch_seconds: float = 0.0,
) -> ExtractSummary:
    """Extract features for every input and write them atomically.

    Args:
        model: a CPCModel; frame t starts at sample 160*t and an utterance of N samples gives
            (N + 1) // 160 frames.
        inputs: AudioInput items, or paths (files, directories, wav.scp) for :func:`find_inputs`.
        out: ``*.npy`` -> one (total_frames, D) float32 array plus ``*.index.tsv``; a directory ->
            ``OUT/<key>.npy`` of shape (T_i, D) per input; ``ark,scp:A.ark,A.scp`` -> one Kaldi
            float matrix (T_i, D) per input, keyed by its id, and the scp index (kaldiio).
        layer: "c" (D = c_dim, 256), "z" (D = z_dim, 512) or "c1".."cN", one recurrent layer's
            output (D = c_dim; see CPCModel.layers).
        device: "auto", "cpu", "cuda" or a torch.device.
        skip_errors: on a bad file, record it as skipped and go on instead of stopping.
        progress: show a rich progress bar (files, audio seconds, x real time) on stderr.
        chunk_seconds: audio per forward chunk; bounds memory, never changes the features.
        precision: "fp32" (exact) or "bf16" (encoder matmuls in bf16; see CPCModel.extract).
        shard: extract only this shard's inputs (:func:`cpcspeech.shards.assign_shards`,
            balanced by header durations); ``OUT.npy`` becomes ``OUT.shard-I-of-N.npy`` and its
            index gains an ``input_position`` column for ``merge-index``.
        batch_seconds: padded audio per batch (:mod:`cpcspeech.model.batched`; every utterance gets
            exactly a single pass's frames); 0 runs one utterance at a time, which is the better
            choice on a CPU. Files longer than ``chunk_seconds`` always run alone, in chunks.

    Raises:
        AudioError: a bad input file (unless ``skip_errors``); nothing that looks complete is left.
        CPCSpeechError: bad options or inputs.
    """
    if layer not in model.layers:
        raise CPCSpeechError(f"layer: expected one of {list(model.layers)}, found {layer!r}")
    if precision not in ("fp32", "bf16"):
        raise CPCSpeechError(f"precision: expected 'fp32' or 'bf16', found {precision!r}")
    if not 0 < chunk_seconds < float("inf"):
        raise CPCSpeechError(
            f"--chunk-seconds: expected a finite number > 0, found {chunk_seconds}"
        )
    if not 0 <= batch_seconds < float("inf"):
        raise CPCSpeechError(
            f"--batch-seconds: expected a finite number >= 0 (0: no batching), found "
            f"{batch_seconds}"
        )
    if batch_seconds > 0 and layer not in ("c", "z"):
        raise CPCSpeechError(
            f"--batch-seconds with --layer {layer}: batching gives c or z only; use 0"
        )
    mode = _output_mode(out)
    _check_writable(Path(out), mode)
    if inputs and all(isinstance(x, AudioInput) for x in inputs):
        items = list(inputs)
    else:
        items = find_inputs(inputs)
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    model = model.eval().to(torch_device)
    dim = model.layer_dim(layer)
    ark_target = kaldi.parse_wspecifier(str(out)) if mode == "ark" else None
    out = Path(ark_target.ark) if ark_target is not None else Path(out)
    if mode in ("dir", "ark"):
        _check_unique(items, mode)

    # Pass 1: headers only. Validates every file before any compute and sizes the output.
    probes: list[AudioInfo | None] = []
    results: list[FileResult | None] = []
    for item in items:
        try:
            info = _probe(item, model)
        except AudioError as err:
            if not skip_errors:
                raise
            probes.append(None)
            results.append(FileResult(item, 0, 0, 0.0, f"skipped: {err.reason}"))
            continue
        probes.append(info)
        results.append(None)
    positions: list[int | None] = [None] * len(items)
    if shard is not None:
        if mode == "ark":
            raise CPCSpeechError("--shard with ark,scp output: expected .npy or a folder")
        positions, items, probes, results = _select_shard(items, probes, results, shard)
        out = shard_output(out, shard)
    capacity = sum(model.num_frames(p.num_samples) for p in probes if p is not None)
    total_seconds = sum(p.seconds for p in probes if p is not None)

    summary = ExtractSummary(
        out=out,
        index=index_path_for(out) if mode == "npy" else None,
        layer=layer,
        dim=dim,
        device=str(torch_device),
    )
    if ark_target is not None:
        summary.index = Path(ark_target.scp)
    temps: list[Path] = []
    writer: _StackedNpy | None = None
    ark: kaldi.ArkScpWriter | None = None
    start = time.perf_counter()
    try:
        if mode == "ark":
            ark = kaldi.ArkScpWriter(ark_target)
        elif mode == "npy":
            out.parent.mkdir(parents=True, exist_ok=True)
            temps.append(_temp_path(out.parent, out.name))
            writer = _StackedNpy(temps[-1], capacity, dim)
        else:
            out.mkdir(parents=True, exist_ok=True)
        bar, task = _progress_bar(progress, total_seconds, len(items))
        todo = [item if info else None for item, info in zip(items, probes, strict=True)]
        decoded = _read_ahead(todo, lambda item: _load(item, model))
        with bar, torch.inference_mode(), contextlib.closing(decoded):
            done_seconds = 0.0
            computed = _compute_features(
                model, decoded, layer, chunk_seconds, precision, batch_seconds
            )
            for i, (item, info, (wav, feats)) in enumerate(
                zip(items, probes, computed, strict=True)
            ):
                if info is not None:
                    if isinstance(wav, AudioError):
                        if not skip_errors:
                            raise wav
                        first_row = writer.rows if writer is not None else 0
                        status = f"skipped: {wav.reason}"
                        results[i] = FileResult(item, first_row, 0, info.seconds, status)
                    else:
                        _check_finite_features(item, feats)
                        seconds = info.seconds or wav.shape[0] / model.sample_rate  # 0: a command
                        result = FileResult(item, 0, feats.shape[0], seconds, "ok")
                        if writer is not None:
                            result.first_row = writer.rows
                            writer.append(feats)
                        elif ark is not None:
                            ark.write(item.id, feats)
                        else:
                            result.output = _write_one(out, item, feats, temps)
                        results[i] = result
                    done_seconds += results[i].seconds
                elif writer is not None:
                    results[i].first_row = writer.rows
                trim_heap()
                elapsed = time.perf_counter() - start
                bar.update(
                    task,
                    completed=done_seconds,
                    files=i + 1,
                    speed=done_seconds / elapsed if elapsed > 0 else 0.0,
                )
        for result, position in zip(results, positions, strict=True):
            result.position = position
        summary.files = [r for r in results if r is not None]
        if writer is not None:
            writer.close()
            temps.append(_temp_path(out.parent, summary.index.name))
            _write_index(temps[-1], summary.files, sharded=shard is not None)
            os.replace(temps[-1], summary.index)
            os.replace(temps[0], out)
            temps.clear()
        if ark is not None:
            ark.commit()
    except BaseException:
        if ark is not None:
            ark.abort()
        if writer is not None:
            writer.abort()
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _check_finite_features(item: AudioInput, feats: np.ndarray) -> None:
    """feats: (T, D). NaN/inf features mean the model, not the (finite) audio, is at fault: stop."""
    finite = np.isfinite(feats)
    if not finite.all():
        raise CPCSpeechError(
            f"{item.path}: expected finite features, the model gave {feats.size - finite.sum()} "
            f"NaN/inf value(s) of {feats.size}; check the weights (and try --precision fp32)"
        )


def _probe(item: AudioInput, model: CPCModel) -> AudioInfo:
    """Header-only check and length of one input (a command's length is 0: unknown)."""
    if item.reader is not None:
        return item.reader.info(model.sample_rate, model.min_samples)
    return audio_info(item.path, model.sample_rate, model.min_samples)


def _load(item: AudioInput, model: CPCModel) -> np.ndarray:
    """wav: (N,) float32 mono at the model's rate."""
    if item.reader is not None:
        return item.reader.load(model.sample_rate, model.min_samples)
    return load_audio(item.path, model.sample_rate, model.min_samples)


def _select_shard(
    items: list[AudioInput],
    probes: list[AudioInfo | None],
    results: list[FileResult | None],
    shard: Shard,
) -> tuple[list[int], list[AudioInput], list[AudioInfo | None], list[FileResult | None]]:
    """The positions of the inputs ``assign_shards`` gives to ``shard``, and those inputs."""
    seconds = [p.seconds if p is not None else 0.0 for p in probes]
    keep = [i for i, s in enumerate(assign_shards(seconds, shard.count)) if s == shard.index]
    return keep, [items[i] for i in keep], [probes[i] for i in keep], [results[i] for i in keep]


def _check_unique(items: list[AudioInput], mode: str) -> None:
    """Two inputs must not land on one output: the same ``key`` (dir: OUT/<key>.npy) or the
    same ``id`` (ark: the Kaldi key)."""
    seen: dict[str, AudioInput] = {}
    for item in items:
        name = item.id if mode == "ark" else item.key
        if name in seen:
            if mode == "ark":
                raise CPCSpeechError(
                    f"{item.source} and {seen[name].source} would both be written under the "
                    f"Kaldi key {name!r}; expected each key once"
                )
            raise CPCSpeechError(
                f"{item.path} and {seen[name].path} would both be written to "
                f"{name}.npy; give them separately or use one .npy output"
            )
        seen[name] = item


def _write_one(out_dir: Path, item: AudioInput, feats: np.ndarray, temps: list[Path]) -> Path:
    """Write feats: (T, D) to OUT/<key>.npy through a temporary file in the same folder."""
    target = out_dir / f"{item.key}.npy"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(target.parent, target.name)
    temps.append(tmp)
    with open(tmp, "wb") as f:
        np.save(f, feats)
    os.replace(tmp, target)
    temps.remove(tmp)
    return target
