"""Utterance discovery: LibriSpeech tree, Kaldi data directory, plain folder, utterance lists."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from paths import SHARED_DATA

from cpcspeech.errors import CorpusError
from cpcspeech.io.corpus import find_utterances, read_utt_list, speaker_ids

SHARED = SHARED_DATA


def _write(path: Path, seconds: float = 0.1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(16000 * seconds), dtype=np.float32), 16000)
    return path


def test_librispeech_tree_speaker_is_top_folder(tmp_path):
    for spk, ch, utt in [("19", "198", 0), ("19", "198", 1), ("26", "495", 3)]:
        _write(tmp_path / spk / ch / f"{spk}-{ch}-{utt:04d}.flac")
    utts = find_utterances(tmp_path)
    assert [u.utt_id for u in utts] == ["19-198-0000", "19-198-0001", "26-495-0003"]
    assert [u.speaker for u in utts] == ["19", "19", "26"]
    assert all(u.path.is_absolute() and u.path.is_file() for u in utts)


def test_plain_folder_speaker_is_parent_folder(tmp_path):
    _write(tmp_path / "alice" / "a1.wav")
    _write(tmp_path / "alice" / "deep" / "a2.wav")
    _write(tmp_path / "bob" / "b1.flac")
    (tmp_path / "bob" / "notes.txt").write_text("not audio")
    utts = find_utterances(tmp_path)
    assert {(u.utt_id, u.speaker) for u in utts} == {
        ("a1", "alice"),
        ("a2", "deep"),
        ("b1", "bob"),
    }
    assert speaker_ids(utts) == {"alice": 0, "bob": 1, "deep": 2}


def test_kaldi_dir_relative_paths_and_list_order(tmp_path):
    _write(tmp_path / "wavs" / "x.flac")
    _write(tmp_path / "wavs" / "y.flac")
    (tmp_path / "wav.scp").write_text("u2 wavs/y.flac\nu1 wavs/x.flac\n")
    (tmp_path / "utt2spk").write_text("u1 s1\nu2 s2\n")
    assert [u.utt_id for u in find_utterances(tmp_path)] == ["u1", "u2"]
    (tmp_path / "list.txt").write_text("u2\nu1 extra-column\n")
    utts = find_utterances(tmp_path, tmp_path / "list.txt")
    assert [(u.utt_id, u.speaker) for u in utts] == [("u2", "s2"), ("u1", "s1")]
    assert utts[0].path == (tmp_path / "wavs" / "y.flac").resolve()
    assert read_utt_list(tmp_path / "list.txt") == ["u2", "u1"]


@pytest.mark.parametrize(
    ("wav_scp", "utt2spk", "match"),
    [
        ("u1 a.flac\n", "", "no speaker"),
        ("u/1 a.flac\n", "u/1 s\n", "must not contain a path separator"),
        ("u1 a.flac\nu1 b.flac\n", "u1 s\n", "duplicate utterance id 'u1', already used on line 1"),
        ("u1\n", "u1 s\n", "expected 'UTT_ID PATH'"),
    ],
)
def test_kaldi_dir_errors(tmp_path, wav_scp, utt2spk, match):
    (tmp_path / "wav.scp").write_text(wav_scp)
    (tmp_path / "utt2spk").write_text(utt2spk)
    with pytest.raises(CorpusError, match=match):
        find_utterances(tmp_path)


def test_kaldi_dir_with_segments_gives_one_utterance_per_segment(tmp_path):
    # With a segments file wav.scp names recordings; each segment is an utterance, cut from its
    # recording exactly as extract cuts it, with its speaker from utt2spk.
    wav = np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32)
    sf.write(tmp_path / "a.wav", wav, 16000, subtype="FLOAT")
    (tmp_path / "wav.scp").write_text("rec1 a.wav\n")
    (tmp_path / "utt2spk").write_text("u1 s\nu2 t\n")
    (tmp_path / "segments").write_text("u2 rec1 1.0 -1\nu1 rec1 0.0 0.5\n")
    utts = find_utterances(tmp_path)
    assert [(u.utt_id, u.speaker, u.kind) for u in utts] == [
        ("u1", "s", "segment"),
        ("u2", "t", "segment"),
    ]
    np.testing.assert_array_equal(utts[0].load(), wav[:8000])
    assert utts[1].measure().num_samples == 16000
    (tmp_path / "utt2spk").write_text("u1 s\n")
    with pytest.raises(CorpusError, match="no speaker for 1 utterance.* in segments"):
        find_utterances(tmp_path)


def test_piped_wav_scp_entries_are_utterances_too(tmp_path):
    pytest.importorskip("kaldiio")
    wav = np.random.default_rng(1).normal(0, 0.1, 4000).astype(np.float32)
    sf.write(tmp_path / "a.wav", wav, 16000, subtype="FLOAT")
    (tmp_path / "wav.scp").write_text(f"u1 cat {tmp_path / 'a.wav'} |\n")
    (tmp_path / "utt2spk").write_text("u1 s\n")
    [utt] = find_utterances(tmp_path, allow_commands=True)
    assert utt.kind == "command" and utt.label == f"cat {tmp_path / 'a.wav'} |"
    assert utt.info().num_samples == 0  # unknown until the command runs
    assert utt.measure().num_samples == 4000
    np.testing.assert_array_equal(utt.load(), wav)


def test_missing_and_empty_inputs_error(tmp_path):
    with pytest.raises(CorpusError, match="no directory"):
        find_utterances(tmp_path / "nope")
    with pytest.raises(CorpusError, match="no audio files"):
        find_utterances(tmp_path)
    _write(tmp_path / "s" / "a.wav")
    (tmp_path / "list.txt").write_text("a\nghost\n")
    with pytest.raises(CorpusError, match="ghost"):
        find_utterances(tmp_path, tmp_path / "list.txt")
    _write(tmp_path / "t" / "a.wav")
    with pytest.raises(CorpusError, match="duplicate utterance id"):
        find_utterances(tmp_path)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/speechocean762-train is absent")
def test_shared_kaldi_dir_and_splits():
    utts = find_utterances(SHARED)
    train = find_utterances(SHARED, SHARED / "train_split.txt")
    test = find_utterances(SHARED, SHARED / "test_split.txt")
    # Training-only utterances (extra_train.txt, since 2026-12-01) are in no probe split.
    extra_list = SHARED / "extra_train.txt"
    extra = find_utterances(SHARED, extra_list) if extra_list.is_file() else []
    assert len(utts) == len(train) + len(test) + len(extra)
    assert not {u.utt_id for u in train} & {u.utt_id for u in test}
    assert not {u.utt_id for u in extra} & {u.utt_id for u in train + test}
    assert {u.speaker for u in train} == {u.speaker for u in test}
    assert all(u.path.is_file() for u in utts[:50])


def test_training_windows_read_segments_through_their_source(tmp_path):
    from cpcspeech.train.windows import WindowCorpus, WindowSpec

    wav = np.random.default_rng(2).normal(0, 0.1, 48000).astype(np.float32)
    sf.write(tmp_path / "rec.wav", wav, 16000, subtype="FLOAT")
    (tmp_path / "wav.scp").write_text("rec rec.wav\n")
    (tmp_path / "utt2spk").write_text("u1 s\nu2 s\n")
    (tmp_path / "segments").write_text("u1 rec 0.5 1.5\nu2 rec 2.0 -1\n")
    corpus = WindowCorpus(find_utterances(tmp_path), window=4000)
    assert corpus.lengths.tolist() == [16000, 16000]
    assert corpus.direct == [False, False]  # a segment is cut from its recording, not seeked
    window = corpus.read(WindowSpec(1, 1000, 4000, 0, 0, 0))
    np.testing.assert_array_equal(window, wav[32000 + 1000 : 32000 + 5000])
