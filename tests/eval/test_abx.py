"""ABX: item files, DTW, hand-computed triplets, CPC_audio's reference values, the CLI."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from paths import TESTS_DATA
from typer.testing import CliRunner

from cpcspeech.cli import app
from cpcspeech.errors import CPCSpeechError
from cpcspeech.eval.abx import AbxOptions, abx_errors, abx_items
from cpcspeech.eval.data import resolve_eval_data
from cpcspeech.eval.dtw import dtw, frame_distances, prepare_frames
from cpcspeech.eval.features import load_feature_source
from cpcspeech.eval.items import (
    Items,
    collect_tokens,
    items_from_alignment,
    read_item_file,
    token_frames,
    write_item_file,
)
from cpcspeech.io.alignments import CANONICAL_INDEX, Alignment

REFERENCE = TESTS_DATA / "abx"
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def _tokens(rows, features):
    """rows: (file, onset, offset, phone, prev, next, speaker); features: file -> (T, D)."""
    items = Items(*[list(column) for column in zip(*rows, strict=True)])
    order = list(dict.fromkeys(items.files))
    return collect_tokens(items, lambda f: np.asarray(features[f], np.float32), order)


# ----- DTW and distances -----


def test_dtw_by_hand():
    # x = [0, 1, 2], y = [0, 2], euclidean: d = [[0, 2], [1, 1], [2, 0]].
    # cost = [[0, 2], [1, 1], [3, 1]]; the path (0,0) (1,0) (2,1) has 3 cells: 1 / 3.
    x = torch.tensor([[[0.0], [1.0], [2.0]]])
    y = torch.tensor([[[0.0], [2.0]]])
    d = frame_distances(x, y, "euclidean")
    assert torch.equal(d[0], torch.tensor([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0]]))
    assert dtw(d, torch.tensor([3]), torch.tensor([2])).item() == pytest.approx(1 / 3)


def test_dtw_padding_and_batch_match_single_pairs():
    rng = np.random.default_rng(0)
    d = torch.from_numpy(rng.random((3, 6, 5)).astype(np.float32))
    lx, ly = torch.tensor([6, 2, 4]), torch.tensor([5, 5, 1])
    batched = dtw(d, lx, ly)
    for b in range(3):
        alone = dtw(d[b : b + 1, : lx[b], : ly[b]].clone(), lx[b : b + 1], ly[b : b + 1])
        assert batched[b].item() == alone.item()
    # one frame against n frames: the mean of the n distances
    assert batched[2].item() == pytest.approx(d[2, :4, 0].mean().item(), rel=1e-6)


def test_angular_distance_and_zero_vectors():
    x = prepare_frames(torch.tensor([[1.0, 0.0], [0.0, 0.0], [3.0, 3.0]]), "angular")
    d = frame_distances(x[None], x[None], "angular")[0]
    assert d[0, 2].item() == pytest.approx(0.25, abs=1e-6)  # 45 degrees
    assert d[0, 1].item() == 1.0 and d[1, 1].item() == 0.0  # zero vector: far from all but itself


def test_kl_needs_non_negative_features():
    units = prepare_frames(torch.eye(3), "kl")
    d = frame_distances(units[None], units[None], "kl")[0]
    assert d[0, 0].item() == pytest.approx(0.0, abs=1e-5) and d[0, 1].item() > 5
    with pytest.raises(CPCSpeechError, match="non-negative"):
        prepare_frames(torch.tensor([[-1.0, 2.0]]), "kl")


# ----- hand-computed triplets -----


def _hand_case():
    # One frame per token, 10 ms frames. Speaker s1: A1 = (1, 0), A2 = (0.8, 0.6) of phone a,
    # B1 = (0.6, 0.8) of phone b; speaker s2: A3 = (1, 0) of phone a. All in context x_y.
    features = {"u1": [[1, 0], [0.8, 0.6], [0.6, 0.8]], "u2": [[1, 0]]}
    rows = [
        ("u1", 0.0, 0.02, "a", "x", "y", "s1"),
        ("u1", 0.01, 0.03, "a", "x", "y", "s1"),
        ("u1", 0.02, 0.04, "b", "x", "y", "s1"),
        ("u2", 0.0, 0.02, "a", "x", "y", "s2"),
    ]
    return _tokens(rows, features)


def test_within_and_across_by_hand():
    tokens = _hand_case()
    assert tokens.lengths.tolist() == [1, 1, 1, 1]
    # d(A1, A2) = acos(0.8)/pi = 0.2048, d(A1, B1) = acos(0.6)/pi = 0.2952,
    # d(A2, B1) = acos(0.96)/pi = 0.0903.
    # Within (s1, a, b): X = A1 picks A2 (0.2048 < 0.2952), X = A2 picks B1 (0.0903 < 0.2048):
    # error 1/2; phone b has one token, so (b, a) has no cell.
    # Across (s1, a, b, X = A3 of s2): d(A3, A1) = 0, d(A3, A2) = 0.2048 < d(A3, B1) = 0.2952:
    # error 0. Speaker s2 has one phone only.
    scores = abx_errors(tokens, "angular")
    assert scores["within"].error == pytest.approx(0.5)
    assert scores["across"].error == pytest.approx(0.0)
    assert (scores["within"].n_cells, scores["across"].n_cells) == (1, 1)


def test_ties_count_one_half():
    features = {"u1": [[1, 0], [1, 0], [1, 0]]}
    rows = [
        ("u1", 0.0, 0.02, "a", "x", "y", "s1"),
        ("u1", 0.01, 0.03, "a", "x", "y", "s1"),
        ("u1", 0.02, 0.04, "b", "x", "y", "s1"),
    ]
    assert abx_errors(_tokens(rows, features))["within"].error == pytest.approx(0.5)


def test_contexts_are_averaged_before_speakers_and_phone_pairs():
    # Context c1 has a perfect cell (error 0) and context c2 a tied one (error 0.5) for the same
    # speaker and phone pair: the pair's error is their mean, 0.25, whatever the token counts.
    far, near = [1, 0], [0, 1]
    features = {"u1": [far, far, near, near, near, near, near, near]}
    rows = [
        ("u1", 0.00, 0.02, "a", "c", "1", "s"),
        ("u1", 0.01, 0.03, "a", "c", "1", "s"),
        ("u1", 0.02, 0.04, "b", "c", "1", "s"),
        ("u1", 0.03, 0.05, "a", "c", "2", "s"),
        ("u1", 0.04, 0.06, "a", "c", "2", "s"),
        ("u1", 0.05, 0.07, "a", "c", "2", "s"),
        ("u1", 0.06, 0.08, "a", "c", "2", "s"),
        ("u1", 0.07, 0.09, "b", "c", "2", "s"),
    ]
    assert abx_errors(_tokens(rows, features))["within"].error == pytest.approx(0.25)


# ----- CPC_audio's own values -----


@pytest.mark.parametrize(
    "item, folder, rate",
    [
        ("dummy_item_within.item", REFERENCE, 10),
        ("dummy_item_file.item", REFERENCE, 10),
        ("random.item", REFERENCE / "random", 100),
    ],
)
@pytest.mark.parametrize("distance, theirs", [("angular", "cosine"), ("euclidean", "euclidian")])
def test_matches_cpc_audio_reference(item, folder, rate, distance, theirs):
    expected = json.loads((REFERENCE / "reference.json").read_text())[f"{item}:{theirs}"]
    items = read_item_file(folder / item)
    order = sorted({p.stem for p in folder.glob("*.npy")} & set(items.files))
    if item.startswith("dummy"):
        order = [f for f in ("2107", "42", "23", "407") if f in order]  # CPC_audio's test order

    def features(file):
        array = np.load(folder / f"{file}.npy").astype(np.float32)
        return array.reshape(len(array), -1)

    scores = abx_errors(collect_tokens(items, features, order, rate=rate), distance)
    for mode in ("within", "across"):
        if expected[mode] is None:  # no triplet of this kind
            assert math.isnan(scores[mode].error)
        else:
            assert scores[mode].error == pytest.approx(expected[mode], abs=1e-6)


# ----- item files -----


def test_items_from_alignment_skip_silence_and_edges(tmp_path):
    names = ["SIL", "SIL", "AA", "AA", "AA", "S", "S", "SIL", "M", "M", "SIL"]
    labels = np.asarray([CANONICAL_INDEX[n] for n in names])
    alignment = Alignment(labels={"u1": labels}, phones=list(CANONICAL_INDEX))
    items = items_from_alignment(alignment, {"u1": "spk"})
    assert list(items.rows()) == [
        ("u1", 0.02, 0.05, "AA", "SIL", "S", "spk"),
        ("u1", 0.05, 0.07, "S", "AA", "SIL", "spk"),
        ("u1", 0.08, 0.10, "M", "SIL", "SIL", "spk"),
    ]
    write_item_file(items, tmp_path / "a.item")
    text = (tmp_path / "a.item").read_text()
    assert text.startswith("#file onset offset #phone prev-phone next-phone speaker\n")
    again = read_item_file(tmp_path / "a.item")
    assert list(again.rows()) == list(items.rows())


def test_token_frames_follow_libri_light():
    # a segment of label frames [2, 5) keeps frames 2 and 3 (centres inside, last one dropped)
    assert token_frames(0.02, 0.05, 100, 100) == (2, 4)
    assert token_frames(0.3225, 0.5225, 20, 10) == (3, 4)  # CPC_audio's unit test: one frame
    assert token_frames(0.0, 9.0, 20, 100) == (0, 20)  # clipped to the utterance


def test_bad_item_file_names_line(tmp_path):
    path = tmp_path / "bad.item"
    path.write_text("#file onset offset #phone prev-phone next-phone speaker\nu1 0.1 x a b c s\n")
    with pytest.raises(CPCSpeechError, match=r"bad.item:2: expected"):
        read_item_file(path)


# ----- the command on real files -----


def test_cli_abx_on_tone_corpus(tmp_path, tone_data):
    # A random-init CPC rather than MFCC: importing librosa for MFCC alone takes tens of seconds
    # on a loaded machine.
    data = tone_data
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["abx", "--data", str(data), "--labels", str(data / "labels.txt"), "--model", "random",
         "--out", str(out), "--quiet"],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| Random initialization |" in result.output
    report = json.loads((out / "abx.json").read_text())
    row = report["results"][0]
    assert row["n_utterances"] == 6 and row["n_tokens"] >= 24
    assert 0 <= row["within"] < 0.5 and 0 <= row["across"] < 0.5
    assert read_item_file(out / "abx.item").speakers[0] == "spk_a"
    # the .npy folder form of --model gives the same numbers as the features it holds
    (tmp_path / "npy").mkdir()
    source = load_feature_source("random")
    for wav in sorted((data / "wavs").glob("*.wav")):
        audio, _ = sf.read(wav, dtype="float32")
        np.save(tmp_path / "npy" / f"{wav.stem}.npy", source.extract(audio))
    again = runner.invoke(
        app,
        ["abx", "--data", str(data), "--item", str(out / "abx.item"), "--model",
         str(tmp_path / "npy"), "--quiet"],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert f"| {100 * row['within']:.2f} | {100 * row['across']:.2f} |" in again.output


def test_cli_abx_error_is_one_line(tone_data):
    data = tone_data
    result = runner.invoke(app, ["abx", "--data", str(data), "--model", "mfcc", "--quiet"])
    assert result.exit_code == 2
    assert "expected phone labels (--labels) or an --item file" in result.output


def test_abx_items_come_from_the_test_split_or_an_item_file(tmp_path, tone_data):
    data = tone_data
    (data / "test_split.txt").write_text("spk_a-0\nspk_b-0\n")
    evaluation = resolve_eval_data(data, data / "labels.txt", splits=("test",), required=())
    utterances, items = abx_items(evaluation)
    assert [u.utt_id for u in utterances] == ["spk_a-0", "spk_b-0"]
    assert set(items.files) == {"spk_a-0", "spk_b-0"} and set(items.speakers) == {"spk_a", "spk_b"}
    write_item_file(Items(*(column[:1] for column in (
        items.files, items.onsets, items.offsets, items.phones, items.prev, items.next,
        items.speakers,
    ))), tmp_path / "one.item")  # fmt: skip
    chosen, read = abx_items(evaluation, tmp_path / "one.item")
    assert [u.utt_id for u in chosen] == ["spk_a-0"] and len(read) == 1
    with pytest.raises(CPCSpeechError, match="expected phone labels"):
        abx_items(resolve_eval_data(data, splits=("test",), required=()))
    with pytest.raises(CPCSpeechError, match="ABX distance: expected one of angular"):
        AbxOptions(distance="cosine")
