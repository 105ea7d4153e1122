"""Training windows cut inside one utterance, optionally grouped by speaker, and their loader.

An epoch's plan (which windows, in which batches) is a pure function of (seed, epoch), so the
loader is resumable from (epoch, batch index) and its output does not depend on ``num_workers``.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from cpcspeech.config import AugmentConfig, DataConfig
from cpcspeech.errors import ConfigError, CorpusError
from cpcspeech.io.corpus import Utterance, find_utterances, speaker_ids
from cpcspeech.train.augment import Augmenter, window_rng


@dataclass(frozen=True)
class WindowSpec:
    """One training window: samples ``[offset, offset + length)`` of utterance ``utt_index``.

    ``length`` < window only for a zero-padded short utterance (``short_utterances: pad``).
    ``epoch`` and ``batch_index`` say where in the plan the window's batch sits, ``position``
    where the window sits in its batch (together they seed the window's augmentation).
    """

    utt_index: int
    offset: int
    length: int
    epoch: int
    batch_index: int
    position: int = 0


@dataclass
class WindowBatch:
    """A batch of windows.

    wav: (B, window) float32, the audio the targets z_{t+k} are computed from; speakers: (B,)
    int64 global speaker index; lengths: (B,) int64 valid samples per row (< window only for
    padded short utterances, padding at the end). ``wav_context``: (B, window) float32, the
    audio the context c_t is computed from when it differs from ``wav`` (augmentation of one
    side only), else None. ``epoch``/``batch_index`` locate the batch; the loader resumes after
    it at ``(epoch, batch_index + 1)``.
    """

    wav: Tensor
    speakers: Tensor
    lengths: Tensor
    epoch: int
    batch_index: int
    wav_context: Tensor | None = None


@dataclass
class CorpusStats:
    """What indexing found: kept utterances, dropped/padded short ones, windows per epoch."""

    num_utterances: int
    num_speakers: int
    num_short: int  # utterances shorter than one window (dropped or padded per config)
    short_policy: str
    windows_per_epoch: int
    batches_per_epoch: int  # per process, after sharding
    hours: float


class WindowCorpus:
    """Utterances with their lengths (from file headers) and speaker indices.

    Args:
        utterances: from :func:`cpcspeech.corpus.find_utterances`.
        window: samples per training window.
        short_utterances: "drop" (default) or "pad" utterances shorter than ``window``. Padding
            is zeros at the end; InfoNCE takes no mask, so with "pad" the loss does see the
            padded frames (as positives and negatives). ``WindowBatch.lengths`` carries the
            valid length of every row for a loss that masks them.
        speaker_index: speaker name -> global index (defaults to ``speaker_ids(utterances)``).
        sample_rate: the model's rate; files at other rates are decoded whole and resampled.
    """

    def __init__(
        self,
        utterances: list[Utterance],
        window: int,
        short_utterances: str = "drop",
        speaker_index: dict[str, int] | None = None,
        sample_rate: int = 16000,
    ) -> None:
        if not utterances:
            raise CorpusError("expected at least one utterance for training, found none")
        self.window = window
        self.sample_rate = sample_rate
        self.short_policy = short_utterances
        self.speaker_index = speaker_index or speaker_ids(utterances)
        kept, lengths, direct, num_short = [], [], [], 0
        for utt in utterances:
            info = utt.measure(sample_rate)  # header length; a piped command runs once
            if info.num_samples < window:
                num_short += 1
                if short_utterances == "drop" or info.num_samples == 0:
                    continue
            if utt.speaker not in self.speaker_index:
                raise CorpusError(
                    f"utterance {utt.utt_id}: speaker {utt.speaker!r} is not among the "
                    f"{len(self.speaker_index)} training speakers"
                )
            kept.append(utt)
            lengths.append(info.num_samples)
            # Files already at the model's rate are read window by window (seek + read), so
            # memory stays bounded on LibriSpeech; others are decoded whole and resampled.
            direct.append(utt.kind == "file" and info.source_rate == sample_rate)
        if not kept:
            raise CorpusError(
                f"all {len(utterances)} utterances are shorter than data.window = {window} "
                "samples; lower data.window or set data.short_utterances: pad"
            )
        self.utterances: list[Utterance] = kept
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.direct = direct
        self.speakers = np.asarray([self.speaker_index[u.speaker] for u in kept], dtype=np.int64)
        self.num_short = num_short

    def read(self, spec: WindowSpec) -> np.ndarray:
        """The window's samples, zero-padded at the end to ``window``: (window,) float32."""
        utt = self.utterances[spec.utt_index]
        if self.direct[spec.utt_index]:
            data, _ = sf.read(
                str(utt.path),
                start=spec.offset,
                stop=spec.offset + spec.length,
                dtype="float32",
                always_2d=True,
            )  # (length, channels)
            wav = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
        else:
            wav = utt.load(self.sample_rate, min_samples=0)  # file, command, segment or cut
            wav = wav[spec.offset : spec.offset + spec.length]
        if wav.shape[0] != spec.length:
            raise CorpusError(
                f"{utt.label}: expected {spec.length} samples from offset {spec.offset}, "
                f"read {wav.shape[0]}; the file is shorter than its header says"
            )
        out = np.zeros(self.window, dtype=np.float32)
        out[: spec.length] = wav
        return out


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), 0xC9C])


def epoch_windows(corpus: WindowCorpus, seed: int, epoch: int) -> list[tuple[int, int, int]]:
    """Every window of one epoch as (utt_index, offset, length), in utterance order.

    Each utterance of L samples gives floor(L / window) non-overlapping windows (at least one,
    for a padded short utterance), tiled from a random start in [0, L mod window], so an epoch
    covers nearly all audio once and the windows shift from epoch to epoch. Seeded by
    (seed, epoch).
    """
    rng = _epoch_rng(seed, epoch)
    window = corpus.window
    out = []
    for i, length in enumerate(corpus.lengths.tolist()):
        if length < window:
            out.append((i, 0, length))
            continue
        count = length // window
        start = int(rng.integers(0, length - count * window + 1))
        out.extend((i, start + j * window, window) for j in range(count))
    return out


def epoch_batches(
    corpus: WindowCorpus, batch_size: int, speakers_per_batch: int, seed: int, epoch: int
) -> list[list[tuple[int, int, int]]]:
    """One epoch's batches, before sharding across processes; a pure function of (seed, epoch).

    With ``speakers_per_batch`` = 0 the windows are shuffled and cut into batches. With P > 0
    each batch holds ``batch_size / P`` windows from each of P distinct speakers (the
    same-speaker negative modes need them); each speaker's windows are shuffled and grouped,
    groups are shuffled and packed greedily into batches of distinct speakers. Windows that do
    not fill a whole batch are left out of this epoch (the next epoch's plan differs).
    """
    windows = epoch_windows(corpus, seed, epoch)
    rng = _epoch_rng(seed, epoch + 1_000_003)
    if speakers_per_batch <= 0:
        order = rng.permutation(len(windows))
        n = len(windows) // batch_size
        return [
            [windows[j] for j in order[b * batch_size : (b + 1) * batch_size]] for b in range(n)
        ]
    per = batch_size // speakers_per_batch
    by_speaker: dict[int, list[tuple[int, int, int]]] = {}
    for w in windows:
        by_speaker.setdefault(int(corpus.speakers[w[0]]), []).append(w)
    groups: list[tuple[int, list[tuple[int, int, int]]]] = []
    for spk in sorted(by_speaker):
        items = by_speaker[spk]
        order = rng.permutation(len(items))
        for g in range(len(items) // per):
            groups.append((spk, [items[j] for j in order[g * per : (g + 1) * per]]))
    batches: list[list[tuple[int, int, int]]] = []
    open_batches: list[tuple[set[int], list[tuple[int, int, int]]]] = []
    for k in rng.permutation(len(groups)).tolist():
        spk, items = groups[k]
        for i, (spk_set, content) in enumerate(open_batches):
            if spk not in spk_set:
                spk_set.add(spk)
                content.extend(items)
                if len(spk_set) == speakers_per_batch:
                    batches.append(content)
                    del open_batches[i]
                break
        else:
            if speakers_per_batch == 1:
                batches.append(list(items))
            else:
                open_batches.append(({spk}, list(items)))
    return batches


def check_batching(config: DataConfig, num_speakers: int) -> None:
    """Raise ConfigError when speaker grouping cannot work with these settings."""
    p = config.speakers_per_batch
    if p < 0:
        raise ConfigError(f"data.speakers_per_batch must be >= 0; found {p}")
    if p > 0 and config.batch_size % p != 0:
        raise ConfigError(
            f"data.batch_size ({config.batch_size}) must be a multiple of "
            f"data.speakers_per_batch ({p})"
        )
    if p > num_speakers:
        raise ConfigError(
            f"data.speakers_per_batch = {p} but the training data has only {num_speakers} "
            "speaker(s)"
        )


class WindowSampler:
    """Infinite batch sampler over epochs, starting at (epoch, batch_index); sharded by rank.

    Rank r of W takes batches r, r + W, ... of each epoch's plan, cut to the same count on every
    rank, so each process sees a disjoint shard and all processes step together. Resuming
    computes the epoch's plan (file headers only) and skips to ``batch_index`` without reading
    any audio.
    """

    def __init__(
        self,
        corpus: WindowCorpus,
        batch_size: int,
        speakers_per_batch: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        batch_index: int = 0,
        max_epochs: int | None = None,
    ) -> None:
        self.corpus = corpus
        self.batch_size = batch_size
        self.speakers_per_batch = speakers_per_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = epoch
        self.batch_index = batch_index
        self.max_epochs = max_epochs

    def shard(self, epoch: int) -> list[list[tuple[int, int, int]]]:
        """This rank's batches of ``epoch``: a list of [(utt_index, offset, length)] * B."""
        batches = epoch_batches(
            self.corpus, self.batch_size, self.speakers_per_batch, self.seed, epoch
        )
        n = len(batches) // self.world_size
        return batches[self.rank : n * self.world_size : self.world_size]

    def __iter__(self) -> Iterator[list[WindowSpec]]:
        epoch, start = self.epoch, self.batch_index
        empty_epochs = 0
        while self.max_epochs is None or epoch < self.max_epochs:
            shard = self.shard(epoch)
            if not shard:
                empty_epochs += 1
                if empty_epochs >= 3:
                    raise CorpusError(
                        f"an epoch gives no full batch of {self.batch_size} windows per process "
                        f"(x {self.world_size} processes); use more data or smaller batches"
                    )
            for b in range(start, len(shard)):
                yield [WindowSpec(u, o, n, epoch, b, i) for i, (u, o, n) in enumerate(shard[b])]
            epoch, start = epoch + 1, 0


class WindowDataset(Dataset):
    """Map-style dataset indexed by :class:`WindowSpec`; reading is deterministic.

    With an ``augmenter`` and ``side`` ("past", "future" or "both"), each window is augmented
    with a generator seeded by (seed, rank, epoch, batch index, position): exact resume and
    any ``num_workers`` give the same audio. Items are (target wav, context wav or None,
    speaker, spec), each wav (window,) float32.
    """

    def __init__(
        self,
        corpus: WindowCorpus,
        augmenter: Augmenter | None = None,
        side: str = "none",
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        self.corpus = corpus
        self.augmenter = augmenter if side != "none" else None
        self.side = side
        self.seed = seed
        self.rank = rank

    def __getitem__(
        self, spec: WindowSpec
    ) -> tuple[np.ndarray, np.ndarray | None, int, WindowSpec]:
        wav = self.corpus.read(spec)
        speaker = int(self.corpus.speakers[spec.utt_index])
        if self.augmenter is None:
            return wav, None, speaker, spec
        rng = window_rng(
            self.seed * 1_000_003 + self.rank, spec.epoch, spec.batch_index, spec.position
        )
        augmented = self.augmenter(wav, rng)
        if spec.length < wav.shape[0]:  # keep a padded short window's padding silent
            augmented[spec.length :] = 0.0
        if self.side == "both":
            return augmented, None, speaker, spec
        if self.side == "past":
            return wav, augmented, speaker, spec
        return augmented, wav, speaker, spec  # "future": targets augmented, context clean

    def __len__(self) -> int:  # only for DataLoader's repr; the sampler drives iteration
        return int(self.corpus.lengths.shape[0])


def corpus_window_reader(corpus: WindowCorpus):
    """``draw(rng) -> (window,) float32``: a random window of a random utterance of ``corpus``
    (the augmenter's source of speech noise)."""

    def draw(rng: np.random.Generator) -> np.ndarray:
        index = int(rng.integers(0, len(corpus.utterances)))
        length = int(min(corpus.lengths[index], corpus.window))
        offset = int(rng.integers(0, int(corpus.lengths[index]) - length + 1))
        return corpus.read(WindowSpec(index, offset, length, 0, 0))[:length]

    return draw


def make_augmenter(
    config: AugmentConfig, corpus: WindowCorpus, sample_rate: int
) -> Augmenter | None:
    """The configured :class:`Augmenter` (drawing speech noise from ``corpus``), or None."""
    if not config.enabled:
        return None
    return Augmenter(config, sample_rate, corpus_window_reader(corpus))


def collate_windows(
    items: list[tuple[np.ndarray, np.ndarray | None, int, WindowSpec]],
) -> WindowBatch:
    """Stack windows into a :class:`WindowBatch`: wav (B, window), speakers (B,), lengths (B,)
    and, when the items carry one, wav_context (B, window)."""
    wav = torch.from_numpy(np.stack([w for w, _, _, _ in items]))
    context = None
    if items[0][1] is not None:
        context = torch.from_numpy(np.stack([c for _, c, _, _ in items]))
    speakers = torch.tensor([s for _, _, s, _ in items], dtype=torch.int64)
    lengths = torch.tensor([spec.length for _, _, _, spec in items], dtype=torch.int64)
    first = items[0][3]
    return WindowBatch(wav, speakers, lengths, first.epoch, first.batch_index, context)


def make_loader(
    corpus: WindowCorpus,
    sampler: WindowSampler,
    num_workers: int = 0,
    augmenter: Augmenter | None = None,
    side: str = "none",
    rank: int = 0,
) -> DataLoader:
    """A DataLoader yielding :class:`WindowBatch` in the sampler's order, for any num_workers.

    Augmentation runs where the windows are read: in the worker processes when
    ``num_workers`` > 0, seeded from the sampler's seed (see :class:`WindowDataset`).
    """
    return DataLoader(
        WindowDataset(corpus, augmenter, side, sampler.seed, rank),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_windows,
        persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
    )


def load_split(
    config: DataConfig,
    utt_lists: str | Sequence[str],
    speaker_index: dict[str, int] | None = None,
    sample_rate: int = 16000,
) -> WindowCorpus:
    """Index ``config.root`` restricted to ``utt_lists`` as windows.

    One list or several (joined in order; an utterance in two lists is an error); "" or an
    empty sequence means every utterance under the root.
    """
    lists = [utt_lists] if isinstance(utt_lists, str) else list(utt_lists)
    lists = [x for x in lists if x]
    if not lists:
        utterances = find_utterances(config.root, None, config.allow_commands)
    else:
        utterances, seen = [], {}
        for utt_list in lists:
            for utt in find_utterances(config.root, utt_list, config.allow_commands):
                if utt.utt_id in seen:
                    raise CorpusError(
                        f"utterance {utt.utt_id!r} is listed twice: in {seen[utt.utt_id]} and "
                        f"in {utt_list}; expected each training utterance once"
                    )
                seen[utt.utt_id] = utt_list
                utterances.append(utt)
    return WindowCorpus(
        utterances, config.window, config.short_utterances, speaker_index, sample_rate
    )


def corpus_stats(corpus: WindowCorpus, sampler: WindowSampler) -> CorpusStats:
    """Counts for the log line: utterances kept, short ones, windows and batches of epoch 0."""
    windows = len(epoch_windows(corpus, sampler.seed, 0))
    return CorpusStats(
        num_utterances=len(corpus.utterances),
        num_speakers=len(set(corpus.speakers.tolist())),
        num_short=corpus.num_short,
        short_policy=corpus.short_policy,
        windows_per_epoch=windows,
        batches_per_epoch=len(sampler.shard(0)),
        hours=float(corpus.lengths.sum()) / corpus.sample_rate / 3600.0,
    )


def fixed_batches(
    corpus: WindowCorpus,
    batch_size: int,
    num_batches: int,
    seed: int,
    speakers_per_batch: int = 0,
) -> list[WindowBatch]:
    """The first ``num_batches`` batches of epoch 0 of a (seed)-plan, read into memory.

    Used for validation: the same windows at every evaluation (and across resumes).
    """
    plan = epoch_batches(corpus, batch_size, speakers_per_batch, seed, 0)[:num_batches]
    dataset = WindowDataset(corpus)
    return [
        collate_windows(
            [dataset[WindowSpec(u, o, n, 0, b, i)] for i, (u, o, n) in enumerate(batch)]
        )
        for b, batch in enumerate(plan)
    ]
