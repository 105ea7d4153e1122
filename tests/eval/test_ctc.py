"""The CTC maths of the PER probe: collapse and blanks, edit distance against hand-computed
cases, greedy decoding and the prefix beam search."""

import itertools

import numpy as np
import pytest

from cpcspeech.eval.ctc import (
    EditCounts,
    collapse,
    edit_counts,
    edit_distance,
    greedy_decode,
    prefix_beam_search,
)

BLANK = 3  # classes 0, 1, 2 and the blank last


@pytest.mark.parametrize(
    ("frames", "blank", "expected"),
    [
        ([], BLANK, []),
        ([3, 3, 3], BLANK, []),
        ([1, 1, 1], BLANK, [1]),
        ([1, 1, 3, 1], BLANK, [1, 1]),  # a blank between equal ids keeps both
        ([3, 0, 0, 3, 3, 2, 1, 1, 3], BLANK, [0, 2, 1]),
        ([0, 1, 0, 1], BLANK, [0, 1, 0, 1]),
        ([2, 2, 0, 0, 2], None, [2, 0, 2]),  # no blank: runs merge only
    ],
)
def test_collapse_merges_runs_then_drops_blanks(frames, blank, expected):
    assert collapse(frames, blank) == expected


@pytest.mark.parametrize(
    ("ref", "hyp", "subs", "ins", "dels"),
    [
        ([], [], 0, 0, 0),
        ([1, 2, 3], [1, 2, 3], 0, 0, 0),
        ([1, 2, 3], [], 0, 0, 3),  # empty hypothesis: all deletions
        ([], [4, 5], 0, 2, 0),  # empty reference: all insertions
        ([1, 2, 3], [1, 9, 3], 1, 0, 0),
        ([1, 2, 3], [1, 2, 3, 4], 0, 1, 0),
        ([1, 2, 3], [0, 1, 2, 3], 0, 1, 0),
        ([1, 2, 3], [1, 3], 0, 0, 1),
        ([1, 2, 3, 4], [2, 3, 4, 5], 0, 1, 1),  # shifted: one deletion, one insertion
        ([1, 2], [3, 4, 5], 2, 1, 0),
        ([7, 8, 9], [9, 8, 7], 2, 0, 0),
    ],
)
def test_edit_counts_match_hand_computed_cases(ref, hyp, subs, ins, dels):
    counts = edit_counts(ref, hyp)
    assert (counts.substitutions, counts.insertions, counts.deletions) == (subs, ins, dels)
    assert counts.ref_length == len(ref)
    assert edit_distance(ref, hyp) == subs + ins + dels


def _levenshtein(a, b):
    """The textbook recursion, for a cross-check on random sequences."""
    if not a or not b:
        return len(a) + len(b)
    return min(
        _levenshtein(a[1:], b) + 1,
        _levenshtein(a, b[1:]) + 1,
        _levenshtein(a[1:], b[1:]) + (a[0] != b[0]),
    )


def test_edit_distance_equals_the_textbook_recursion_and_is_symmetric():
    rng = np.random.default_rng(0)
    for _ in range(60):
        a = rng.integers(0, 3, size=rng.integers(0, 6)).tolist()
        b = rng.integers(0, 3, size=rng.integers(0, 6)).tolist()
        assert edit_distance(a, b) == _levenshtein(a, b) == edit_distance(b, a)
        counts = edit_counts(a, b)
        # S + D = len(ref) - matches and S + I = len(hyp) - matches
        assert counts.deletions - counts.insertions == len(a) - len(b)


def test_edit_counts_add_up():
    total = edit_counts([1, 2], [1]) + edit_counts([3], [3, 4])
    assert total == EditCounts(substitutions=0, insertions=1, deletions=1, ref_length=3)
    assert total.distance == 2


def _log_probs(frames: list[list[float]]) -> np.ndarray:
    p = np.asarray(frames, dtype=np.float64)
    return np.log(p / p.sum(1, keepdims=True))


def test_greedy_decode_is_the_collapsed_argmax_path():
    scores = _log_probs(
        [[0.8, 0.1, 0.05, 0.05], [0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7],
         [0.6, 0.2, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1]]
    )  # fmt: skip
    assert greedy_decode(scores, BLANK) == [0, 0, 2]
    assert greedy_decode(np.zeros((0, 4)), BLANK) == []


def _path_probability(log_probs: np.ndarray, labels: list[int], blank: int) -> float:
    """Sum over every frame path that collapses to ``labels`` (brute force, small T)."""
    t, c = log_probs.shape
    total = 0.0
    for path in itertools.product(range(c), repeat=t):
        if collapse(path, blank) == labels:
            total += float(np.exp(sum(log_probs[i, k] for i, k in enumerate(path))))
    return total


def test_beam_search_agrees_with_greedy_on_peaked_posteriors():
    rng = np.random.default_rng(1)
    for _ in range(20):
        path = rng.integers(0, 4, size=12)
        peaked = np.full((12, 4), 0.01)
        peaked[np.arange(12), path] = 0.97
        scores = np.log(peaked)
        assert prefix_beam_search(scores, BLANK, beam=4) == greedy_decode(scores, BLANK)


def test_beam_search_beats_greedy_on_a_hand_made_case():
    # Each frame's best class is the blank (0.6), so the best path is empty; but "0" has
    # 1 - 0.6^2 - ... more mass: P("") = 0.36, P("0") = 0.4^2 + 2 * 0.4 * 0.6 = 0.64.
    scores = _log_probs([[0.4, 0.0001, 0.0001, 0.6], [0.4, 0.0001, 0.0001, 0.6]])
    assert greedy_decode(scores, BLANK) == []
    best = prefix_beam_search(scores, BLANK, beam=4)
    assert best == [0]
    assert _path_probability(scores, [0], BLANK) > _path_probability(scores, [], BLANK)


def test_beam_search_finds_the_most_probable_labelling_on_small_cases():
    rng = np.random.default_rng(2)
    for _ in range(10):
        scores = np.log(rng.dirichlet(np.ones(3), size=4))  # T=4, classes 0, 1 and blank 2
        labellings = {tuple(collapse(p, 2)) for p in itertools.product(range(3), repeat=4)}
        exact = max(labellings, key=lambda lab: _path_probability(scores, list(lab), 2))
        found = prefix_beam_search(scores, 2, beam=64, prune=0.0)
        assert _path_probability(scores, found, 2) == pytest.approx(
            _path_probability(scores, list(exact), 2)
        )


def test_beam_width_must_be_positive():
    with pytest.raises(ValueError, match="beam"):
        prefix_beam_search(np.zeros((2, 4)), BLANK, beam=0)
