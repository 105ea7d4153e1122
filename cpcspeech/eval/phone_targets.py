"""Phone-sequence targets of the CTC probe, from one of three places:

- frame labels (any format ``probe`` reads): runs of the same label collapse to one phone, then
  silence and spoken noise (SIL, SPN) are dropped; ``SIL AA AA B SIL B`` -> ``AA B B``;
- a Kaldi ``text`` file through a lexicon (``WORD PH1 PH2 ...``, CMUdict-like): each word's first
  pronunciation, stress digits stripped;
- a phone-sequence file (``UTT PH1 PH2 ...``).

Phone symbols of the last two fold to the 41 classes of ``phones.txt`` (SIL, SPN, 39 ARPAbet
phones) by the alignments' rule (:func:`cpcspeech.io.alignments.fold_phone`), and SIL / SPN are
dropped there too, so every source yields speech phones only.
"""

import os
import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cpcspeech.errors import AlignmentError, CPCSpeechError
from cpcspeech.eval.ctc import collapse
from cpcspeech.files import read_text
from cpcspeech.io.alignments import CANONICAL_INDEX, CANONICAL_PHONES, Alignment, fold_phone
from cpcspeech.io.tables import read_kaldi_table

NON_SPEECH = frozenset({"SIL", "SPN"})
_ALTERNATE = re.compile(r"\(\d+\)$")  # CMUdict's second pronunciation: word(2)


@dataclass
class PhoneTargets:
    """Phone-id sequences per utterance, and what was left out.

    Attributes:
        sequences: utterance id -> (S,) int64 ids into ``phones`` (no SIL / SPN).
        phones: class names; the CTC head has ``len(phones)`` classes plus the blank.
        source: where the targets came from, in words (for the JSON).
        missing_words: word -> occurrences, for words the lexicon lacks (text targets only).
        left_out: utterance id -> why it has no targets.
    """

    sequences: dict[str, np.ndarray]
    phones: list[str]
    source: str
    missing_words: dict[str, int] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.phones)

    def describe_left_out(self, utt_ids: Collection[str]) -> str:
        """One line on the utterances of ``utt_ids`` left out and the words the lexicon lacks
        (over the whole text file); "" when there is nothing to say."""
        left = [u for u in utt_ids if u in self.left_out]
        parts = [f"left out {len(left)} of {len(utt_ids)} utterances"] if left else []
        if self.missing_words:
            words = ", ".join(self.missing_words)
            parts.append(f"{len(self.missing_words)} words missing from the lexicon: {words}")
        return "; ".join(parts)


def sequence_from_frames(frame_labels: np.ndarray, phones: list[str]) -> np.ndarray:
    """(T,) frame ids -> (S,) phone ids: runs collapsed, then SIL and SPN dropped.

    Collapsing first keeps a phone that recurs across a silence (``B SIL B`` -> ``B B``); two
    phones of the same class with no frame between them merge, an inherent loss of frame labels.
    """
    drop = {i for i, name in enumerate(phones) if name in NON_SPEECH}
    return np.asarray([p for p in collapse(frame_labels) if p not in drop], dtype=np.int64)


def targets_from_alignment(alignment: Alignment, source: str = "frame labels") -> PhoneTargets:
    """Collapsed frame labels of every utterance of ``alignment``."""
    sequences = {
        utt: sequence_from_frames(labels, alignment.phones)
        for utt, labels in alignment.labels.items()
    }
    return PhoneTargets(sequences, list(alignment.phones), f"{source} (collapsed, SIL/SPN dropped)")


def fold_sequence(symbols: list[str], where: str) -> np.ndarray:
    """Phone symbols -> canonical ids, SIL and SPN dropped; an unknown symbol is an error."""
    ids = []
    for symbol in symbols:
        name = fold_phone(symbol)
        if name is None:
            raise AlignmentError(
                f"{where}: expected phones of the 41-class set (SIL, SPN, 39 ARPAbet phones, "
                f"stress digits allowed), found {symbol!r}"
            )
        if name not in NON_SPEECH:
            ids.append(CANONICAL_INDEX[name])
    return np.asarray(ids, dtype=np.int64)


def read_phone_sequences(path: str | os.PathLike) -> PhoneTargets:
    """A phone-sequence file: ``UTT PH1 PH2 ...`` per line (an utterance id alone has none)."""
    path = Path(path)
    if not path.is_file():
        raise AlignmentError(f"--phone-seqs: expected a file 'UTT PH1 PH2 ...', found {path}")
    sequences: dict[str, np.ndarray] = {}
    for line_no, line in enumerate(read_text(path, AlignmentError).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] in sequences:
            raise AlignmentError(f"{path}:{line_no}: utterance {parts[0]!r} appears twice")
        sequences[parts[0]] = fold_sequence(parts[1:], f"{path}:{line_no}")
    if not sequences:
        raise AlignmentError(f"{path}: expected 'UTT PH1 PH2 ...' lines, found none")
    return PhoneTargets(sequences, list(CANONICAL_PHONES), f"phone sequences {path}")


def read_lexicon(path: str | os.PathLike) -> dict[str, list[str]]:
    """A pronunciation lexicon: ``WORD PH1 PH2 ...`` per line (CMUdict, Kaldi lexicon.txt).

    Words are matched without case; the first pronunciation of a word is kept (CMUdict's
    ``word(2)`` alternates and later repeats are ignored); ``;;;`` lines are comments.
    """
    path = Path(path)
    if not path.is_file():
        raise AlignmentError(f"--lexicon: expected a file 'WORD PH1 PH2 ...', found {path}")
    lexicon: dict[str, list[str]] = {}
    for line_no, line in enumerate(read_text(path, AlignmentError).splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith(";;;"):
            continue
        if len(parts) < 2:
            raise AlignmentError(f"{path}:{line_no}: expected 'WORD PH1 PH2 ...', found {line!r}")
        word = _ALTERNATE.sub("", parts[0]).upper()
        lexicon.setdefault(word, parts[1:])
    if not lexicon:
        raise AlignmentError(f"{path}: expected 'WORD PH1 PH2 ...' lines, found none")
    return lexicon


def targets_from_text(text: str | os.PathLike, lexicon: str | os.PathLike) -> PhoneTargets:
    """Kaldi ``text`` (``UTT WORD WORD ...``) through a lexicon.

    An utterance with a word the lexicon lacks is left out (``left_out``) and the word counted
    once per occurrence in ``missing_words``; no pronunciation is guessed.
    """
    words = read_lexicon(lexicon)
    folded: dict[str, np.ndarray] = {}  # word -> ids, folded once per word
    sequences: dict[str, np.ndarray] = {}
    missing: Counter[str] = Counter()
    left_out: dict[str, str] = {}
    for utt, transcript in read_kaldi_table(text).items():
        tokens = transcript.upper().split()
        unknown = [w for w in tokens if w not in words]
        if unknown:
            missing.update(unknown)
            left_out[utt] = f"words missing from the lexicon: {' '.join(sorted(set(unknown)))}"
            continue
        for w in tokens:
            if w not in folded:
                folded[w] = fold_sequence(words[w], f"{lexicon}: word {w}")
        sequences[utt] = np.concatenate([folded[w] for w in tokens] or [np.zeros(0, np.int64)])
    return PhoneTargets(
        sequences, list(CANONICAL_PHONES), f"text {text} through lexicon {lexicon}",
        missing_words=dict(sorted(missing.items())), left_out=left_out,
    )  # fmt: skip


def resolve_targets(
    alignment: Alignment | None,
    text: str | os.PathLike | None = None,
    lexicon: str | os.PathLike | None = None,
    phone_seqs: str | os.PathLike | None = None,
) -> PhoneTargets:
    """The one target source the options name: ``--phone-seqs``, ``--text`` with ``--lexicon``,
    or the frame labels (``--labels``)."""
    if (text is None) != (lexicon is None):
        raise CPCSpeechError("--text and --lexicon: expected both or neither, found one")
    given = [name for name, value in (("--text", text), ("--phone-seqs", phone_seqs)) if value]
    if len(given) > 1:
        raise CPCSpeechError(f"PER targets: expected one source, found {' and '.join(given)}")
    if phone_seqs is not None:
        return read_phone_sequences(phone_seqs)
    if text is not None:
        return targets_from_text(text, lexicon)  # type: ignore[arg-type]
    if alignment is None:
        raise AlignmentError(
            "probe per: expected phone targets (--labels, --text with --lexicon, or "
            "--phone-seqs), found none"
        )
    return targets_from_alignment(alignment)
