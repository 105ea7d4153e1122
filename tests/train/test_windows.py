"""Training windows: inside one utterance, speaker-grouped batches, seeded, resumable, sharded."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cpcspeech.config import DataConfig
from cpcspeech.errors import ConfigError, CorpusError
from cpcspeech.train.windows import (
    WindowCorpus,
    WindowSampler,
    check_batching,
    epoch_batches,
    epoch_windows,
    fixed_batches,
    load_split,
    make_loader,
)

WINDOW = 1000


def make_corpus(root: Path, lengths_by_speaker: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Plain folder SPEAKER/UTT.wav; each utterance is a ramp at its own level, so every sample
    says which utterance (level) and where in it (ramp) it came from. Returns utt_id -> samples.
    """
    signals = {}
    level = 0
    for speaker, lengths in lengths_by_speaker.items():
        (root / speaker).mkdir(parents=True, exist_ok=True)
        for j, n in enumerate(lengths):
            level += 1
            utt_id = f"{speaker}_{j}"
            # float32 holds integers / 2**20 exactly: level in the high part, index below, so
            # no two samples of the corpus are equal.
            samples = ((level * 8192 + np.arange(n)) / 2.0**20).astype(np.float32)
            sf.write(root / speaker / f"{utt_id}.wav", samples, 16000, subtype="FLOAT")
            signals[utt_id] = sf.read(root / speaker / f"{utt_id}.wav", dtype="float32")[0]
    return signals


@pytest.fixture()
def corpus_dir(tmp_path):
    lengths = {
        "alice": [3500, 1200, 999, 4100],
        "bob": [2000, 5000, 1000],
        "carol": [1500, 2600, 700, 3333],
        "dave": [4444, 2222],
    }
    return tmp_path, make_corpus(tmp_path, lengths)


def _find_source(window: np.ndarray, signals: dict[str, np.ndarray]) -> list[tuple[str, int]]:
    """Every (utt_id, offset) whose slice equals the window exactly."""
    hits = []
    for utt_id, x in signals.items():
        for offset in range(0, x.shape[0] - window.shape[0] + 1):
            if x[offset] == window[0] and np.array_equal(x[offset : offset + len(window)], window):
                hits.append((utt_id, offset))
    return hits


def test_windows_never_cross_utterances(corpus_dir):
    root, signals = corpus_dir
    corpus = load_split(DataConfig(root=str(root), window=WINDOW, batch_size=4), "")
    assert corpus.num_short == 2  # 999 and 700 samples
    sampler = WindowSampler(corpus, batch_size=4, seed=3, max_epochs=2)
    seen = 0
    for batch in make_loader(corpus, sampler):
        assert batch.wav.shape == (4, WINDOW)
        for row, speaker in zip(batch.wav.numpy(), batch.speakers.tolist(), strict=True):
            hits = _find_source(row, signals)
            assert len(hits) == 1, "each window is a slice of exactly one utterance"
            utt = hits[0][0]
            assert corpus.speaker_index[utt.split("_")[0]] == speaker
            seen += 1
    # floor(len / window) windows per kept utterance, cut into batches of 4 (remainder dropped)
    per_epoch = sum(n // WINDOW for n in corpus.lengths.tolist())
    assert seen == 2 * (per_epoch // 4) * 4


def test_short_utterances_padded_at_the_end(corpus_dir):
    root, signals = corpus_dir
    cfg = DataConfig(root=str(root), window=WINDOW, batch_size=2, short_utterances="pad")
    corpus = load_split(cfg, "")
    assert corpus.num_short == 2 and len(corpus.utterances) == len(signals)
    batches = epoch_batches(corpus, 2, 0, seed=0, epoch=0)
    specs = [w for b in batches for w in b]
    short = [w for w in specs if w[2] < WINDOW]
    assert sorted(w[2] for w in short) == [700, 999]
    batch = fixed_batches(corpus, 2, len(batches), seed=0)
    for b in batch:
        for row, length in zip(b.wav.numpy(), b.lengths.tolist(), strict=True):
            assert np.all(row[length:] == 0.0)


def test_all_short_is_an_error(tmp_path):
    make_corpus(tmp_path, {"a": [500, 600]})
    with pytest.raises(CorpusError, match="shorter than data.window"):
        load_split(DataConfig(root=str(tmp_path), window=WINDOW), "")


def test_plan_is_seeded_and_covers_each_utterance_without_overlap(corpus_dir):
    root, _ = corpus_dir
    corpus = load_split(DataConfig(root=str(root), window=WINDOW), "")
    a = epoch_windows(corpus, seed=1, epoch=0)
    assert a == epoch_windows(corpus, seed=1, epoch=0)
    assert a != epoch_windows(corpus, seed=1, epoch=1)
    for i, length in enumerate(corpus.lengths.tolist()):
        offsets = sorted(o for u, o, _ in a if u == i)
        assert len(offsets) == length // WINDOW
        assert all(b - a_ >= WINDOW for a_, b in zip(offsets, offsets[1:], strict=False))
        assert offsets[0] >= 0 and offsets[-1] + WINDOW <= length


def test_speaker_grouped_batches(corpus_dir):
    root, _ = corpus_dir
    corpus = load_split(DataConfig(root=str(root), window=WINDOW), "")
    batches = epoch_batches(corpus, batch_size=4, speakers_per_batch=2, seed=0, epoch=0)
    assert batches
    for batch in batches:
        speakers = [int(corpus.speakers[u]) for u, _, _ in batch]
        assert len(batch) == 4
        counts = {s: speakers.count(s) for s in set(speakers)}
        assert sorted(counts.values()) == [2, 2]
    with pytest.raises(ConfigError, match="multiple"):
        check_batching(DataConfig(root="x", batch_size=6, speakers_per_batch=4), 10)
    with pytest.raises(ConfigError, match="only 4 speaker"):
        check_batching(DataConfig(root="x", batch_size=8, speakers_per_batch=8), 4)


def test_resume_skips_to_position_and_workers_do_not_matter(corpus_dir):
    root, _ = corpus_dir
    corpus = load_split(DataConfig(root=str(root), window=WINDOW), "")
    full = list(make_loader(corpus, WindowSampler(corpus, 2, seed=5, max_epochs=2)))
    cut = 5
    position = (full[cut - 1].epoch, full[cut - 1].batch_index + 1)
    resumed = list(
        make_loader(
            corpus,
            WindowSampler(
                corpus, 2, seed=5, epoch=position[0], batch_index=position[1], max_epochs=2
            ),
            num_workers=2,
        )
    )
    assert len(resumed) == len(full) - cut
    for a, b in zip(full[cut:], resumed, strict=True):
        assert torch.equal(a.wav, b.wav) and torch.equal(a.speakers, b.speakers)
        assert (a.epoch, a.batch_index) == (b.epoch, b.batch_index)


def test_ranks_get_disjoint_equal_shards(corpus_dir):
    root, _ = corpus_dir
    corpus = load_split(DataConfig(root=str(root), window=WINDOW), "")
    whole = epoch_batches(corpus, 2, 0, seed=0, epoch=0)
    shards = [WindowSampler(corpus, 2, seed=0, rank=r, world_size=3).shard(0) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    flat = [tuple(w) for s in shards for b in s for w in b]
    assert len(flat) == len(set(flat))
    assert set(flat) <= {tuple(w) for b in whole for w in b}
    assert len(flat) == (len(whole) // 3) * 3 * 2


def test_window_corpus_reads_exact_slices(corpus_dir):
    root, signals = corpus_dir
    corpus = load_split(DataConfig(root=str(root), window=WINDOW), "")
    assert isinstance(corpus, WindowCorpus)
    utt = corpus.utterances[0]
    from cpcspeech.train.windows import WindowSpec

    got = corpus.read(WindowSpec(0, 17, WINDOW, 0, 0))
    np.testing.assert_array_equal(got, signals[utt.utt_id][17 : 17 + WINDOW])
