"""CTC maths for the phone-error-rate probe: label collapse, greedy and prefix beam decoding,
and edit distance with its substitution / insertion / deletion counts.

Everything here is pure numpy on one utterance; the probe that trains a CTC head and scores a
test list is :mod:`cpcspeech.eval.per`. Class ids are ``0 .. C-1`` with the blank at index
``C`` (the last, as CPC_audio's ``CTCPhoneCriterion``), so phone ids keep their table's values.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

NEG_INF = float("-inf")


def collapse(sequence: Iterable[int], blank: int | None = None) -> list[int]:
    """Merge runs of the same id, then drop ``blank``: CTC's many-to-one map B.

    ``collapse([1, 1, 0, 0, 1, 2, 2], blank=0)`` -> ``[1, 1, 2]``: a blank between two equal ids
    keeps both, a run without one is a single id.
    """
    out: list[int] = []
    previous = None
    for value in sequence:
        value = int(value)
        if value != previous and value != blank:
            out.append(value)
        previous = value
    return out


def greedy_decode(log_probs: np.ndarray, blank: int) -> list[int]:
    """Best path decoding: the most likely class per frame, collapsed (blank dropped).

    Args:
        log_probs: (T, C + 1) per-frame (log) scores; only their argmax matters.
        blank: the blank's index.
    """
    if len(log_probs) == 0:
        return []
    return collapse(np.asarray(log_probs).argmax(-1), blank)


def prefix_beam_search(
    log_probs: np.ndarray, blank: int, beam: int = 8, prune: float = 1e-3
) -> list[int]:
    """CTC prefix beam search in log space (Graves et al. 2006, section 3.2; Hannun 2017,
    "Sequence Modeling with CTC", Distill), without a language model.

    Each prefix carries (log p ending in blank, log p ending in its last symbol). Per frame:
    the blank extends both into the blank state; the prefix's own last symbol repeated without a
    blank stays the same prefix; a symbol c != last extends from both states; c == last
    extends (to a longer prefix) only from the blank state. The ``beam`` most probable prefixes
    are kept.

    Args:
        log_probs: (T, C + 1) log-probabilities (log_softmax output).
        blank: the blank's index.
        beam: prefixes kept per frame (1 is close to, not always equal to, greedy).
        prune: per frame, only symbols with probability >= ``prune`` extend a prefix (the most
            likely symbol always does).

    Returns:
        the best prefix's ids.
    """
    if beam < 1:
        raise ValueError(f"beam: expected >= 1, found {beam}")
    log_probs = np.asarray(log_probs, dtype=np.float64)
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, NEG_INF]}
    log_prune = math.log(prune) if prune > 0 else NEG_INF
    for row in log_probs:
        best = int(row.argmax())
        symbols = [int(c) for c in np.flatnonzero(row >= log_prune) if c != blank]
        if best != blank and best not in symbols:
            symbols.append(best)
        frame = row.tolist()
        following: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_blank, p_symbol) in beams.items():
            total = _logaddexp(p_blank, p_symbol)
            _add(following, prefix, 0, total + frame[blank])
            last = prefix[-1] if prefix else None
            for c in symbols:
                if c == last:
                    _add(following, prefix, 1, p_symbol + frame[c])  # repeat, no blank: same
                    _add(following, prefix + (c,), 1, p_blank + frame[c])  # after a blank: new
                else:
                    _add(following, prefix + (c,), 1, total + frame[c])
        ranked = sorted(following.items(), key=lambda item: -_logaddexp(*item[1]))
        beams = dict(ranked[:beam])
    return list(max(beams.items(), key=lambda item: _logaddexp(*item[1]))[0])


def _add(beams: dict[tuple[int, ...], list[float]], prefix: tuple, state: int, value: float):
    """Add probability ``value`` (log) to ``prefix``'s blank (0) or symbol (1) state."""
    entry = beams.setdefault(prefix, [NEG_INF, NEG_INF])
    entry[state] = _logaddexp(entry[state], value)


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) of two floats, exact at -inf."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


@dataclass(frozen=True)
class EditCounts:
    """The operations of a minimum edit (Levenshtein) alignment of a hypothesis to a reference.

    Every operation costs 1; ``distance = substitutions + insertions + deletions``. Among the
    alignments of minimum cost, ties are broken towards substitutions, then deletions.
    """

    substitutions: int = 0
    insertions: int = 0
    deletions: int = 0
    ref_length: int = 0

    @property
    def distance(self) -> int:
        return self.substitutions + self.insertions + self.deletions

    def __add__(self, other: "EditCounts") -> "EditCounts":
        return EditCounts(
            self.substitutions + other.substitutions,
            self.insertions + other.insertions,
            self.deletions + other.deletions,
            self.ref_length + other.ref_length,
        )


def edit_counts(reference: Sequence[int], hypothesis: Sequence[int]) -> EditCounts:
    """Minimum edit distance of ``hypothesis`` to ``reference`` with its operation counts.

    ``edit_counts([1, 2, 3], [1, 3, 4])`` has distance 2 (2 deleted, 4 inserted).
    """
    ref, hyp = list(reference), list(hypothesis)
    # cost[i][j]: (distance, substitutions, insertions, deletions) of ref[:i] -> hyp[:j]
    previous = [(j, 0, j, 0) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        current = [(i, 0, 0, i)]
        for j in range(1, len(hyp) + 1):
            d, s, n, e = previous[j - 1]
            same = ref[i - 1] == hyp[j - 1]
            options = [(d + (0 if same else 1), s + (0 if same else 1), n, e)]
            d, s, n, e = previous[j]
            options.append((d + 1, s, n, e + 1))  # delete ref[i-1]
            d, s, n, e = current[j - 1]
            options.append((d + 1, s, n + 1, e))  # insert hyp[j-1]
            current.append(min(options, key=lambda o: o[0]))  # first minimum: sub, del, ins
        previous = current
    _, subs, ins, dels = previous[-1]
    return EditCounts(subs, ins, dels, len(ref))


def edit_distance(reference: Sequence[int], hypothesis: Sequence[int]) -> int:
    """Levenshtein distance (substitution, insertion and deletion each cost 1)."""
    return edit_counts(reference, hypothesis).distance
