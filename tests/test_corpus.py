"""Utterance discovery: LibriSpeech tree, Kaldi data directory, plain folder, utterance lists."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cpcspeech.errors import CorpusError
from cpcspeech.io.corpus import find_utterances, read_utt_list, speaker_ids

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speechocean762-train"


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
        ("u1 sox a.wav -t wav - |\n", "u1 s\n", "piped command"),
        ("u1 a.flac\nu1 b.flac\n", "u1 s\n", "duplicate key"),
        ("u1\n", "u1 s\n", "expected 'KEY VALUE'"),
    ],
)
def test_kaldi_dir_errors(tmp_path, wav_scp, utt2spk, match):
    (tmp_path / "wav.scp").write_text(wav_scp)
    (tmp_path / "utt2spk").write_text(utt2spk)
    with pytest.raises(CorpusError, match=match):
        find_utterances(tmp_path)


def test_kaldi_dir_with_segments_is_refused_where_whole_files_are_read(tmp_path):
    # With a segments file wav.scp names recordings: reading them as utterances would be wrong.
    (tmp_path / "wav.scp").write_text("rec1 a.flac\n")
    (tmp_path / "utt2spk").write_text("u1 s\n")
    (tmp_path / "segments").write_text("u1 rec1 0.0 1.5\n")
    with pytest.raises(CorpusError, match="without a segments file, found .*segments"):
        find_utterances(tmp_path)


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
