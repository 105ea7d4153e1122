"""Feature extraction over many files: find inputs, run CPCModel.extract, write .npy atomically.

One ``.npy`` output holds every file's frames stacked, with a ``.index.tsv`` sidecar; a directory
output holds one ``.npy`` per input, mirroring the input's relative path; an ``ark,scp:`` output
is a Kaldi archive and its index (see kaldi.py, which also reads piped wav.scp entries and
``segments``).
"""

import io
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cpcspeech import kaldi
from cpcspeech.audio import AUDIO_EXTENSIONS, AudioInfo, audio_info, load_audio
from cpcspeech.errors import AudioError, CPCSpeechError
from cpcspeech.files import check_writable_folder, temp_sibling
from cpcspeech.model import CPCModel
from cpcspeech.pretrained import load_model

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


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda if available, else cpu; "cpu"/"cuda"/"cuda:N" are checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise CPCSpeechError(f"device: expected auto, cpu or cuda, found {name!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CPCSpeechError(f"device {name!r}: expected an available CUDA GPU, found none")
    if device.type not in ("cpu", "cuda"):
        raise CPCSpeechError(f"device: expected auto, cpu or cuda, found {name!r}")
    return device


# ----- writers -----


def _temp_path(directory: Path, name: str) -> Path:
    return temp_sibling(directory / name)


class _StackedNpy:
    """A (rows, dim) float32 .npy on disk, filled row-block by row-block through a memmap.

    Sized from the headers first; if a file decodes to a different length the array is resized in
    place (numpy pads the header so axis 0 can grow without moving the data).
    """

    def __init__(self, path: Path, capacity: int, dim: int) -> None:
        self.path = path
        self.dim = dim
        self.capacity = capacity
        self.rows = 0
        self.array: np.memmap | None = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.float32, shape=(capacity, dim)
        )
        self.offset = self.array.offset

    def append(self, feats: np.ndarray) -> None:
        """feats: (T, dim) float32, written at the next free row."""
        n = feats.shape[0]
        if self.rows + n > self.capacity:
            self._resize(self.rows + n)
        self.array[self.rows : self.rows + n] = feats
        self.rows += n

    def _resize(self, capacity: int) -> None:
        self.array.flush()
        self.array = None  # drop the mapping before the file changes size
        buf = io.BytesIO()
        header = {"descr": "<f4", "fortran_order": False, "shape": (capacity, self.dim)}
        np.lib.format.write_array_header_1_0(buf, header)
        if len(buf.getvalue()) != self.offset:  # numpy reserves room for 21 digits on axis 0
            raise RuntimeError(f"npy header changed size: {self.offset} -> {len(buf.getvalue())}")
        with open(self.path, "r+b") as f:
            f.write(buf.getvalue())
            f.truncate(self.offset + capacity * self.dim * 4)
        self.capacity = capacity
        self.array = np.lib.format.open_memmap(self.path, mode="r+")

    def close(self) -> None:
        """Trim unused rows (skipped files), flush and unmap."""
        if self.rows != self.capacity:
            self._resize(self.rows)
        self.array.flush()
        self.array = None


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def escape_field(text: str) -> str:
    """One ``.index.tsv`` field: backslash, tab, newline and CR become ``\\\\``, ``\\t``,
    ``\\n``, ``\\r`` (the escapes of PostgreSQL's text COPY format), so any file name fits."""
    return "".join(_ESCAPES.get(ch, ch) for ch in str(text))


def unescape_field(text: str) -> str:
    """The inverse of :func:`escape_field`."""
    return re.sub(r"\\(.)", lambda m: _UNESCAPES.get(m.group(1), m.group(0)), text)


def _write_index(path: Path, files: list[FileResult]) -> None:
    # surrogateescape: a file name that is not valid UTF-8 is written as its own bytes.
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write("\t".join(INDEX_COLUMNS) + "\n")
        for r in files:
            row = (
                str(r.input.source),
                str(r.first_row),
                str(r.num_frames),
                f"{r.seconds:.4f}",
                r.status,
                r.input.id,
            )
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
    if mode == "dir":
        _check_unique_keys(items)
    if mode == "ark":
        _check_unique_ids(items)

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
        with bar, torch.inference_mode():
            done_seconds = 0.0
            for i, (item, info) in enumerate(zip(items, probes, strict=True)):
                if info is not None:
                    try:
                        wav = _load(item, model)
                    except AudioError as err:
                        if not skip_errors:
                            raise
                        first_row = writer.rows if writer is not None else 0
                        status = f"skipped: {err.reason}"
                        results[i] = FileResult(item, first_row, 0, info.seconds, status)
                    else:
                        feats = model.extract(
                            torch.from_numpy(wav),
                            layer=layer,
                            chunk_seconds=chunk_seconds,
                            precision=precision,
                        )  # (T, D)
                        feats = feats.to("cpu", torch.float32).numpy()
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
                elapsed = time.perf_counter() - start
                bar.update(
                    task,
                    completed=done_seconds,
                    files=i + 1,
                    speed=done_seconds / elapsed if elapsed > 0 else 0.0,
                )
        summary.files = [r for r in results if r is not None]
        if writer is not None:
            writer.close()
            temps.append(_temp_path(out.parent, summary.index.name))
            _write_index(temps[-1], summary.files)
            os.replace(temps[-1], summary.index)
            os.replace(temps[0], out)
            temps.clear()
        if ark is not None:
            ark.commit()
    except BaseException:
        if ark is not None:
            ark.abort()
        if writer is not None:
            writer.array = None  # unmap before removing the file
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


def _check_unique_ids(items: list[AudioInput]) -> None:
    seen: dict[str, AudioInput] = {}
    for item in items:
        if item.id in seen:
            raise CPCSpeechError(
                f"{item.source} and {seen[item.id].source} would both be written under the Kaldi "
                f"key {item.id!r}; expected each key once"
            )
        seen[item.id] = item


def _check_unique_keys(items: list[AudioInput]) -> None:
    seen: dict[str, AudioInput] = {}
    for item in items:
        if item.key in seen:
            raise CPCSpeechError(
                f"{item.path} and {seen[item.key].path} would both be written to "
                f"{item.key}.npy; give them separately or use one .npy output"
            )
        seen[item.key] = item


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
