"""Feature extraction over many inputs: orchestration only.

Inputs are found by :func:`cpcspeech.io.sources.find_sources` and read through
:meth:`AudioSource.load` on a reader thread (:mod:`cpcspeech.io.read_ahead`); ``--out`` is parsed
into a writer (:mod:`cpcspeech.io.writers`: stacked ``.npy`` + ``.index.tsv``, a folder of ``.npy``,
Kaldi ``ark,scp:``) before any path is touched. This module runs the model between the two.
"""

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cpcspeech.errors import AudioError, CPCSpeechError
from cpcspeech.io.audio import AudioInfo
from cpcspeech.io.index import (  # noqa: F401 - old import paths: cpcspeech.extract.read_index
    INDEX_COLUMNS,
    FileResult,
    escape_field,
    index_path_for,
    read_index,
    unescape_field,
)
from cpcspeech.io.read_ahead import READ_AHEAD, read_ahead  # noqa: F401 - old import path
from cpcspeech.io.shards import Shard, assign_shards
from cpcspeech.io.sources import AudioSource, find_sources
from cpcspeech.io.writers import FeatureWriter, parse_output
from cpcspeech.model.batched import extract_batch, plan_batches
from cpcspeech.model.cpc import CPCModel
from cpcspeech.model.serialization import parameters_sha256
from cpcspeech.runtime import progress_bar, resolve_device, trim_heap
from cpcspeech.weights.resolve import load_model_for_cli  # noqa: F401 - old import path

AudioInput = AudioSource
"""The old name of an input: every input is an :class:`cpcspeech.io.sources.AudioSource`."""
find_inputs = find_sources
"""The old name of the discovery function."""


@dataclass
class ExtractSummary:
    """The outcome of :func:`extract_features`."""

    out: Path
    index: Path | None  # .index.tsv next to a .npy output, the .scp of ark output; None: a folder
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

    def describe(self) -> str:
        """Two lines: what was written, and how fast (the CLI's summary)."""
        if self.index is not None:
            wrote = (
                f"wrote {self.out}: ({self.total_frames}, {self.dim}) float32, layer {self.layer}, "
                f"{len(self.ok)} files; index {self.index}"
            )
        else:
            wrote = (
                f"wrote {len(self.ok)} files under {self.out}: (T, {self.dim}) float32 each, "
                f"layer {self.layer}, {self.total_frames} frames in all"
            )
        return (
            f"{wrote}\nspeed: {self.audio_seconds:.1f} s of audio in {self.wall_seconds:.1f} s on "
            f"{self.device} ({self.speed:.1f}x real time)"
        )


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


# ----- the run -----


@dataclass(frozen=True)
class _Settings:
    """How each file's features are computed."""

    layer: str
    chunk_seconds: float
    precision: str
    batch_seconds: float
    skip_errors: bool
    progress: bool


def extract_features(
    model: CPCModel,
    inputs: Sequence[AudioSource | str | os.PathLike],
    out: str | os.PathLike | FeatureWriter,
    layer: str = "c",
    device: str | torch.device = "cpu",
    skip_errors: bool = False,
    progress: bool = False,
    chunk_seconds: float = 20.0,
    precision: str = "fp32",
    shard: Shard | None = None,
    batch_seconds: float = 0.0,
    allow_commands: bool = False,
) -> ExtractSummary:
    """Extract features for every input and write them atomically.

    Args:
        model: frame t starts at sample 160*t; N samples give (N + 1) // 160 frames.
        inputs: AudioSource items, or paths for :func:`cpcspeech.io.sources.find_sources`.
        out: ``*.npy`` -> one (total_frames, D) float32 array + ``*.index.tsv``; a directory ->
            ``OUT/<key>.npy``, (T_i, D) each; ``ark,scp:A.ark,A.scp`` -> Kaldi float matrices
            (T_i, D) keyed by id (:func:`cpcspeech.io.writers.parse_output`); or a
            :class:`cpcspeech.io.writers.FeatureWriter` itself.
        layer: "c" (D = c_dim), "z" (D = z_dim) or "c1".."cN" (one recurrent layer, D = c_dim).
        device: "auto", "cpu", "cuda" or a torch.device.
        skip_errors: record a bad file as skipped and go on instead of stopping.
        progress: a rich progress bar (files, audio seconds, x real time) on stderr.
        chunk_seconds: audio per forward chunk; bounds memory, never changes the features.
        precision: "fp32" (exact) or "bf16" (encoder matmuls in bf16; see CPCModel.extract).
        shard: only this shard's inputs (balanced by header durations, inputs of unknown length
            by count); ``OUT.npy`` becomes ``OUT.shard-I-of-N.npy``, whose index records the run
            (input count, model sha256, layer, dim) and gains ``input_position``.
        batch_seconds: padded audio per batch (:mod:`cpcspeech.model.batched`, same frames as
            one at a time); 0: one utterance at a time, the better choice on a CPU.
        allow_commands: run wav.scp commands and lhotse command / url sources (see
            :func:`cpcspeech.io.sources.find_sources`); refused before anything runs without.

    Raises:
        AudioError: a bad input file (unless ``skip_errors``); nothing that looks complete is left.
        CPCSpeechError: bad options or inputs.
    """
    _check_options(model, layer, precision, chunk_seconds, batch_seconds)
    settings = _Settings(layer, chunk_seconds, precision, batch_seconds, skip_errors, progress)
    # before any path is touched
    writer = out if isinstance(out, FeatureWriter) else parse_output(out, shard)
    if inputs and all(isinstance(x, AudioSource) for x in inputs):
        items = list(inputs)
    else:
        items = find_sources(inputs, allow_commands=allow_commands)
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    model = model.eval().to(torch_device)
    writer.check(items, model.layer_dim(layer))
    infos, results = _probe_all(items, model, skip_errors)  # headers only, before any compute
    positions: list[int | None] = [None] * len(items)
    if shard is not None:
        writer.run = {"input_count": len(items), "model_sha256": parameters_sha256(model),
                      "layer": layer}  # fmt: skip
        positions, items, infos, results = _select_shard(items, infos, results, shard)
    summary = ExtractSummary(
        writer.out, writer.index, layer, model.layer_dim(layer), str(torch_device)
    )
    start = time.perf_counter()
    try:
        _extract_all(model, items, infos, results, writer, settings)
        for result, position in zip(results, positions, strict=True):
            result.position = position
        summary.files = results
        writer.commit(results)
    except BaseException:
        writer.abort()
        raise
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _check_options(
    model: CPCModel, layer: str, precision: str, chunk_seconds: float, batch_seconds: float
) -> None:
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


def _probe_all(
    items: list[AudioSource], model: CPCModel, skip_errors: bool
) -> tuple[list[AudioInfo | None], list[FileResult | None]]:
    """Every input's header (a command's length is 0: unknown), so a bad file stops the run
    before any compute; with ``skip_errors`` it gets its skipped result instead."""
    infos: list[AudioInfo | None] = []
    results: list[FileResult | None] = []
    for item in items:
        try:
            infos.append(item.info(model.sample_rate, model.min_samples))
            results.append(None)
        except AudioError as err:
            if not skip_errors:
                raise
            infos.append(None)
            results.append(FileResult(item, 0, 0, 0.0, f"skipped: {err.reason}"))
    return infos, results


def _select_shard(
    items: list[AudioSource],
    infos: list[AudioInfo | None],
    results: list[FileResult | None],
    shard: Shard,
) -> tuple[list[int], list[AudioSource], list[AudioInfo | None], list[FileResult | None]]:
    """The positions of the inputs ``assign_shards`` gives to ``shard``, and those inputs."""
    seconds = [p.seconds if p is not None else 0.0 for p in infos]
    keep = [i for i, s in enumerate(assign_shards(seconds, shard.count)) if s == shard.index]
    return keep, [items[i] for i in keep], [infos[i] for i in keep], [results[i] for i in keep]


def _extract_all(
    model: CPCModel,
    items: list[AudioSource],
    infos: list[AudioInfo | None],
    results: list[FileResult | None],
    writer: FeatureWriter,
    settings: _Settings,
) -> None:
    """Decode (reader thread), compute and write every input in order; fills ``results``."""
    todo = [item if info else None for item, info in zip(items, infos, strict=True)]
    decoded = read_ahead(todo, lambda item: item.load(model.sample_rate, model.min_samples))
    total_seconds = sum(p.seconds for p in infos if p is not None)
    bar = progress_bar(
        "{task.fields[files]}/" + str(len(items)) + " files",
        "{task.completed:.1f}/{task.total:.1f} s audio",
        "{task.fields[speed]:.1f}x real time",
        enabled=settings.progress,
        transient=False,
    )
    task = bar.add_task("extract", total=max(total_seconds, 1e-9), files=0, speed=0.0)
    start, done_seconds = time.perf_counter(), 0.0
    with bar, torch.inference_mode(), contextlib.closing(decoded):
        computed = _compute_features(
            model, decoded, settings.layer, settings.chunk_seconds, settings.precision,
            settings.batch_seconds,
        )  # fmt: skip
        for i, (item, info, (wav, feats)) in enumerate(zip(items, infos, computed, strict=True)):
            if info is not None:
                results[i] = _file_result(item, info, wav, feats, model, settings.skip_errors)
                done_seconds += results[i].seconds
            writer.write(results[i], feats if results[i].status == "ok" else None)
            trim_heap()
            elapsed = time.perf_counter() - start
            speed = done_seconds / elapsed if elapsed > 0 else 0.0
            bar.update(task, completed=done_seconds, files=i + 1, speed=speed)


def _file_result(
    item: AudioSource,
    info: AudioInfo,
    wav: np.ndarray | AudioError,
    feats: np.ndarray | None,
    model: CPCModel,
    skip_errors: bool,
) -> FileResult:
    """The result of a file whose header was fine: its frames, or why decoding failed."""
    if isinstance(wav, AudioError):
        if not skip_errors:
            raise wav
        return FileResult(item, 0, 0, info.seconds, f"skipped: {wav.reason}")
    _check_finite_features(item, feats)
    seconds = info.seconds or wav.shape[0] / model.sample_rate  # 0: a command
    return FileResult(item, 0, feats.shape[0], seconds, "ok")


def _check_finite_features(item: AudioSource, feats: np.ndarray) -> None:
    """feats: (T, D). NaN/inf features mean the model, not the (finite) audio, is at fault: stop."""
    finite = np.isfinite(feats)
    if not finite.all():
        raise CPCSpeechError(
            f"{item.label}: expected finite features, the model gave {feats.size - finite.sum()} "
            f"NaN/inf value(s) of {feats.size}; check the weights (and try --precision fp32)"
        )
