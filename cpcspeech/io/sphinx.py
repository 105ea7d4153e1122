"""Forced alignment of one utterance with pocketsphinx: audio + words -> 41-class phone segments.

pocketsphinx is an optional extra (``pip install 'cpcspeech[align]'``), imported only when an
aligner is built. Its PyPI wheel ships the CMU US-English acoustic model (42 context-independent
phones, 10 ms frames) and the CMU pronouncing dictionary, so nothing is downloaded.

Each utterance is aligned in two passes (words, then phones) by one reused decoder with the
default beams (1e-48). An utterance that fails is tried once more by a second decoder with
narrower beams (1e-30), which rescues most failures; narrower beams are not the default because
they lower agreement and make more utterances fail. Segments are cut to the Kaldi frame count
``1 + (N - 400) // 160`` (pocketsphinx pads its last frame, so it gives that count or one more);
never padded.
"""

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpcspeech.errors import AlignmentError, CPCSpeechError
from cpcspeech.files import read_text
from cpcspeech.io.alignments import CANONICAL_INDEX, fold_phone, label_frames

SAMPLE_RATE = 16000
"""pocketsphinx's en-us model takes 16 kHz, 16-bit mono samples."""
RETRY_BEAM = 1e-30
"""The retry's beam and phone beam (pocketsphinx's defaults are 1e-48)."""
SPEECH_PHONES = frozenset(CANONICAL_INDEX) - {"SIL", "SPN"}
_ALTERNATE = re.compile(r"\(\d+\)$")


@dataclass(frozen=True)
class PhoneSegment:
    """One phone of an alignment: its 41-class name, first 10 ms frame and length in frames."""

    phone: str
    start: int
    frames: int


def require_pocketsphinx():
    """Import pocketsphinx, or say which extra installs it."""
    try:
        import pocketsphinx
    except ImportError as err:
        raise CPCSpeechError(
            "forced alignment needs pocketsphinx, found it not installed: "
            "pip install 'cpcspeech[align]'"
        ) from err
    return pocketsphinx


def aligner_version() -> str:
    """The installed pocketsphinx version (journals record it: a new model redoes the work)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pocketsphinx")
    except PackageNotFoundError:
        return "unknown"


# ----- lexicons -----


def read_lexicon(path: str | os.PathLike) -> dict[str, list[list[str]]]:
    """A CMUdict-format lexicon: ``WORD PH1 PH2 ...`` per line -> {word: [pronunciations]}.

    Words are lower-cased and an alternate's ``(2)`` suffix is dropped (its pronunciation is
    added to the word's list). Stress digits are removed (``AH0`` -> ``AH``). Lines starting with
    ``;;;`` and blank lines are skipped. Every phone must be one of the 39 ARPAbet phones.

    Raises:
        AlignmentError: a missing file, a word without phones, or an unknown phone (with its line).
    """
    path = Path(path)
    if not path.is_file():
        raise AlignmentError(f"--lexicon: expected a CMUdict-format file, found none at {path}")
    lexicon: dict[str, list[list[str]]] = {}
    for lineno, line in enumerate(read_text(path, AlignmentError).splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith(";;;"):
            continue
        if len(parts) < 2:
            raise AlignmentError(f"{path}:{lineno}: expected 'WORD PH1 PH2 ...', found {line!r}")
        phones = [re.sub(r"[0-9]+$", "", p).upper() for p in parts[1:]]
        unknown = [p for p, q in zip(parts[1:], phones, strict=True) if q not in SPEECH_PHONES]
        if unknown:
            raise AlignmentError(
                f"{path}:{lineno}: expected ARPAbet phones (AA ... ZH, stress digits allowed), "
                f"found {', '.join(map(repr, unknown))}"
            )
        word = _ALTERNATE.sub("", parts[0]).lower()
        if phones not in lexicon.setdefault(word, []):
            lexicon[word].append(phones)
    return lexicon


def _write_dictionary(base: Path, lexicon: dict[str, list[list[str]]], folder: Path) -> Path:
    """The shipped dictionary with the user's words replacing its own, as one pocketsphinx
    dictionary file in ``folder`` (pocketsphinx cannot replace a word once loaded)."""
    out = folder / "lexicon.dict"
    with open(base, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for line in src:
            head = line.split(maxsplit=1)
            if head and _ALTERNATE.sub("", head[0]) not in lexicon:
                dst.write(line)
        for word, prons in lexicon.items():
            for i, phones in enumerate(prons):
                name = word if i == 0 else f"{word}({i + 1})"
                dst.write(f"{name} {' '.join(phones)}\n")
    return out


# ----- the aligner -----


class SphinxAligner:
    """pocketsphinx forced alignment with the bundled CMU en-us model and dictionary.

    Args:
        lexicon: an optional CMUdict-format file; its words are added to the dictionary, and
            replace the dictionary's pronunciations of the same words.
    """

    def __init__(self, lexicon: str | os.PathLike | None = None) -> None:
        ps = require_pocketsphinx()
        model = Path(ps.get_model_path()) / "en-us"
        self._settings = {
            "hmm": str(model / "en-us"),
            "dict": str(model / "cmudict-en-us.dict"),
            "lm": None,
            "loglevel": "FATAL",
            "samprate": SAMPLE_RATE,
            # bestpath=True makes phone alignment fail on many utterances ("impossible duration")
            "bestpath": False,
        }
        self._tmp = None
        if lexicon is not None:
            words = read_lexicon(lexicon)
            self._tmp = tempfile.TemporaryDirectory(prefix="cpcspeech-lexicon-")
            base = Path(self._settings["dict"])
            self._settings["dict"] = str(_write_dictionary(base, words, Path(self._tmp.name)))
        self._decoder = ps.Decoder(**self._settings)
        self._retry = None  # built on the first failure

    def close(self) -> None:
        """Remove the merged dictionary (if a lexicon was given)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def missing_words(self, words: Sequence[str]) -> list[str]:
        """The words (lower-case) that neither the dictionary nor the lexicon has, in order."""
        return [w for w in dict.fromkeys(words) if self._decoder.lookup_word(w) is None]

    def align(self, wav: np.ndarray, words: Sequence[str]) -> tuple[list[PhoneSegment], bool]:
        """Align ``words`` to ``wav``.

        Args:
            wav: (N,) float32 in [-1, 1] at 16 kHz, N >= 400.
            words: lower-case words, all in the dictionary (see :meth:`missing_words`).

        Returns:
            (segments, retried): contiguous phone segments from frame 0 covering exactly
            ``1 + (N - 400) // 160`` frames; ``retried`` when the narrow-beam retry gave them.

        Raises:
            AlignmentError: neither pass found an alignment (the reason from the last try).
        """
        if wav.ndim != 1 or wav.shape[0] < 400:
            raise AlignmentError(f"expected (N,) audio with N >= 400 samples, found {wav.shape}")
        raw = np.clip(np.round(wav * 32768.0), -32768, 32767).astype("<i2").tobytes()
        text = " ".join(words)
        try:
            return _segments(self._decoder, raw, text, label_frames(wav.shape[0])), False
        except AlignmentError:
            if self._retry is None:
                ps = require_pocketsphinx()
                self._retry = ps.Decoder(**self._settings, beam=RETRY_BEAM, pbeam=RETRY_BEAM)
        return _segments(self._retry, raw, text, label_frames(wav.shape[0])), True


def _segments(decoder, raw: bytes, text: str, frames: int) -> list[PhoneSegment]:
    """Both passes of one decoder; the phones cut to ``frames``."""
    try:
        decoder.set_align_text(text)
        decoder.start_utt()
        decoder.process_raw(raw, full_utt=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            raise AlignmentError("no word alignment found (does the transcript fit the audio?)")
        decoder.set_alignment()
        decoder.start_utt()
        decoder.process_raw(raw, full_utt=True)
        decoder.end_utt()
        phones = [(p.name, p.start, p.duration) for p in decoder.get_alignment().phones()]
    except RuntimeError as err:
        raise AlignmentError(f"pocketsphinx: {err}") from None
    return _cut(phones, frames)


def _cut(phones: list[tuple[str, int, int]], frames: int) -> list[PhoneSegment]:
    """pocketsphinx phones (name, start, duration) -> 41-class segments covering ``frames``."""
    segments: list[PhoneSegment] = []
    end = 0
    for name, start, duration in phones:
        folded = fold_phone(name)
        if folded is None:
            raise AlignmentError(f"pocketsphinx gave phone {name!r}, not one of the 41 classes")
        if start != end:
            raise AlignmentError(f"pocketsphinx phones not contiguous at frame {end} ({start})")
        end = start + duration
        if start < frames and duration > 0:
            segments.append(PhoneSegment(folded, start, min(end, frames) - start))
    if end < frames:
        raise AlignmentError(f"expected {frames} frames of phones, pocketsphinx gave {end}")
    return segments
