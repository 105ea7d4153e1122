"""Frame labels for probes: read CPC-format, Kaldi per-frame, CTM and TextGrid alignments, fold
phone sets to the 41 classes of the CPC paper, and pair label frames with encoder frames.
"""

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpcspeech.errors import AlignmentError
from cpcspeech.files import read_text

FRAME_SHIFT_SECONDS = 0.01
"""Label frames are 10 ms apart (Kaldi's frame shift; 160 samples at 16 kHz)."""

CANONICAL_PHONES: tuple[str, ...] = (
    # Same order as the CPC paper's 41-class LibriSpeech labels as shipped with our reference
    # data (speechocean762-train/phones.txt): SIL, SPN, then the 39 stressless ARPAbet phones.
    "SIL", "SPN",
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
    "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH",
    "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip
CANONICAL_INDEX: dict[str, int] = {name: i for i, name in enumerate(CANONICAL_PHONES)}

# Non-speech symbols of Kaldi, CMU Sphinx, MFA and TIMIT recipes, lower-cased, after suffix
# stripping. Silence and pauses fold to SIL; spoken noise, unknown words and other non-phone
# sounds fold to SPN. The empty label and <eps> fold to SIL: MFA writes empty intervals for
# silence, and a Kaldi <eps> frame carries no phone.
SILENCE_SYMBOLS = frozenset(
    {"", "<eps>", "sil", "<sil>", "sp", "silence", "h#", "pau", "epi", "<s>", "</s>", "+sil+"}
)
SPOKEN_NOISE_SYMBOLS = frozenset(
    {
        "spn", "<unk>", "unk", "<spn>", "+spn+", "nsn", "+nsn+", "<nsn>", "noise", "+noise+",
        "<noise>", "[noise]", "laughter", "+laughter+", "<laughter>", "[laughter]", "+laugh+",
        "[laugh]", "+breath+", "[breath]", "+cough+", "[cough]", "+um+", "+uh+", "+garbage+",
        "<v-noise>", "[vocalized-noise]", "oov", "<oov>",
    }
)  # fmt: skip

_WORD_POSITION = re.compile(r"_[BIES]$", re.IGNORECASE)
_STRESS = re.compile(r"[0-9]+$")


@dataclass
class Alignment:
    """Per-frame class ids of many utterances.

    Attributes:
        labels: utterance id -> (T,) int64 class ids, one per 10 ms label frame.
        phones: class names; ``phones[i]`` names id ``i``. Folded alignments use
            :data:`CANONICAL_PHONES`; an unfolded CPC-format file without a symbol table gets
            the names "0", "1", ...
    """

    labels: dict[str, np.ndarray]
    phones: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.phones)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self.labels

    def __getitem__(self, utt_id: str) -> np.ndarray:
        return self.labels[utt_id]


# ----- phone folding -----


def fold_phone(name: str) -> str | None:
    """Map one phone symbol to its 41-class name, or None when it has no canonical class.

    Kaldi word-position suffixes (_B _I _E _S) and stress digits are removed, case is ignored:
    ``AH0_B`` -> ``AH``, ``sil`` -> ``SIL``, ``+NSN+`` -> ``SPN``.
    """
    base = _STRESS.sub("", _WORD_POSITION.sub("", name.strip()))
    lower = base.lower()
    if lower in SILENCE_SYMBOLS:
        return "SIL"
    if lower in SPOKEN_NOISE_SYMBOLS:
        return "SPN"
    upper = base.upper()
    return upper if upper in CANONICAL_INDEX else None


def fold_phones(names: Iterable[str], source: str = "alignment") -> list[int]:
    """Map phone symbols to canonical ids (indices into :data:`CANONICAL_PHONES`).

    Raises:
        AlignmentError: listing every symbol that cannot be mapped.
    """
    names = list(names)
    folded = [fold_phone(n) for n in names]
    unknown = sorted({n for n, f in zip(names, folded, strict=True) if f is None})
    if unknown:
        raise AlignmentError(
            f"{source}: cannot fold {len(unknown)} phone symbol(s) to the 41-class set "
            f"(SIL, SPN and 39 ARPAbet phones): {', '.join(repr(u) for u in unknown)}"
        )
    return [CANONICAL_INDEX[f] for f in folded]  # type: ignore[index]


def read_phone_table(path: str | Path) -> dict[int, str]:
    """Read a ``SYMBOL ID`` table (Kaldi ``phones.txt`` or the CPC ``phones.txt``): id -> symbol."""
    path = Path(path)
    if not path.is_file():
        raise AlignmentError(
            f"{path}: expected a phone symbol table (SYMBOL ID per line), found none"
        )
    table: dict[int, str] = {}
    first_line: dict[int, int] = {}
    for line_no, line in enumerate(read_text(path, AlignmentError).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not _is_int(parts[1]):
            raise AlignmentError(f"{path}:{line_no}: expected 'SYMBOL ID', found {line.strip()!r}")
        symbol, phone_id = parts[0], int(parts[1])
        if phone_id in table:  # the last one winning would silently relabel frames
            raise AlignmentError(
                f"{path}:{line_no}: id {phone_id} given to {symbol!r}, but line "
                f"{first_line[phone_id]} already gives it to {table[phone_id]!r}; expected each "
                "id once"
            )
        table[phone_id], first_line[phone_id] = symbol, line_no
    if not table:
        raise AlignmentError(f"{path}: expected at least one 'SYMBOL ID' line, found none")
    return table


# ----- readers -----


def read_cpc_alignment(path: str | Path, phones: str | Path | None = None) -> Alignment:
    """Read the CPC paper's ``converted_aligned_phones.txt``: ``UTT id id ...``, one id per frame.

    Args:
        path: the label file.
        phones: optional ``SYMBOL ID`` table naming the ids. With it, ids are mapped to symbols and
            folded to :data:`CANONICAL_PHONES`; without it, ids are kept as they are and named
            "0".."K-1" (K = largest id + 1).
    """
    raw = _read_id_lines(Path(path))
    if phones is None:
        top = max((int(v.max()) for v in raw.values() if v.size), default=-1)
        return Alignment(labels=raw, phones=[str(i) for i in range(top + 1)])
    return _fold_ids(raw, read_phone_table(phones), f"{path} with {phones}")


def read_kaldi_alignment(path: str | Path, phones: str | Path) -> Alignment:
    """Read Kaldi per-frame phone alignments as text and fold them to the 41-class set.

    Args:
        path: output of ``ali-to-phones --per-frame=true`` written as text: ``UTT p p p ...``
            with integer Kaldi phone ids, one per 10 ms frame.
        phones: the Kaldi ``phones.txt`` symbol table (``<eps> 0``, ``SIL 1``, ``AH0_B 5``...).
            Only symbols that occur in the alignment need to fold (``#0`` etc. may be present).
    """
    return _fold_ids(_read_id_lines(Path(path)), read_phone_table(phones), f"{path} with {phones}")


def read_ctm(
    path: str | Path,
    num_frames: Mapping[str, int] | None = None,
    phones: str | Path | None = None,
) -> Alignment:
    """Read a Kaldi CTM (``UTT CHANNEL START DUR PHONE``, seconds) and rasterise it to 10 ms frames.

    Rasterising rule (also used for TextGrids): frame ``i`` covers ``[0.01 i, 0.01 (i + 1))`` and
    takes the phone of the segment that contains its centre ``0.01 i + 0.005``. When START and
    DUR are whole frames this is exactly "frames round(START/0.01) .. round(END/0.01) - 1".
    Frames no segment covers are SIL (CTMs may leave silence out); where segments overlap the
    later-starting one wins.

    Args:
        path: the CTM file. PHONE is a symbol (folded to the 41 classes), or an integer Kaldi
            phone id when ``phones`` is given (``ali-to-phones --ctm-output``).
        num_frames: optional utterance id -> label frame count (e.g. ``1 + (N - 400) // 160``).
            Without it, an utterance ends at its last segment's end. Segments reaching past the
            count are cut to it.
        phones: optional ``SYMBOL ID`` table for integer PHONE fields.
    """
    path = Path(path)
    table = read_phone_table(phones) if phones is not None else None
    segments: dict[str, list[tuple[float, float, str]]] = {}
    for line_no, line in enumerate(_read_lines(path), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 5 or not (_is_float(parts[2]) and _is_float(parts[3])):
            raise AlignmentError(
                f"{path}:{line_no}: expected 'UTT CHANNEL START DUR PHONE', found {line.strip()!r}"
            )
        start, dur = float(parts[2]), float(parts[3])
        if dur < 0 or start < 0:
            raise AlignmentError(
                f"{path}:{line_no}: expected START >= 0 and DUR >= 0, found {start} and {dur}"
            )
        symbol = parts[4]
        if table is not None:
            symbol = _lookup(table, symbol, f"{path}:{line_no}")
        segments.setdefault(parts[0], []).append((start, start + dur, symbol))
    return _rasterise(segments, num_frames, str(path))


def read_textgrid(
    path: str | Path, num_frames: Mapping[str, int] | None = None, tier: str = "phones"
) -> Alignment:
    """Read Praat TextGrids (long "ooTextFile" format, as Montreal Forced Aligner writes them).

    Args:
        path: one ``.TextGrid`` file or a folder searched recursively for them; the utterance id
            is the file stem. Empty intervals are silence (SIL).
        num_frames: optional utterance id -> label frame count; without it an utterance ends at
            its tier's last interval. Rasterised exactly as :func:`read_ctm`.
        tier: the interval tier holding phones (MFA: "phones").
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() == ".textgrid")
        if not files:
            raise AlignmentError(f"{path}: expected .TextGrid files in this folder, found none")
    elif path.is_file():
        files = [path]
    else:
        raise AlignmentError(f"{path}: expected a .TextGrid file or a folder of them, found none")
    segments: dict[str, list[tuple[float, float, str]]] = {}
    for file in files:
        if file.stem in segments:
            raise AlignmentError(f"{file}: utterance id {file.stem!r} appears in two TextGrids")
        segments[file.stem] = _parse_textgrid_tier(file, tier)
    return _rasterise(segments, num_frames, str(path))


ALIGNMENT_FORMATS = ("cpc", "kaldi", "ctm", "textgrid")


def detect_format(path: str | Path) -> str:
    """Guess an alignment file's format from its extension, then its first line."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".textgrid":
        return "textgrid"
    if path.suffix.lower() == ".ctm":
        return "ctm"
    if not path.is_file():
        raise AlignmentError(f"{path}: expected an alignment file or TextGrid folder, found none")
    for line in read_text(path, AlignmentError).splitlines():
        if line.strip():
            break
    else:
        raise AlignmentError(f"{path}: expected alignment lines, found an empty file")
    if "ooTextFile" in line:
        return "textgrid"
    parts = line.split()
    if len(parts) >= 5 and _is_float(parts[2]) and _is_float(parts[3]) and "." in parts[2]:
        return "ctm"
    if len(parts) >= 2 and all(_is_int(p) for p in parts[1:]):
        return "cpc"
    raise AlignmentError(
        f"{path}: cannot tell the alignment format from {line.strip()[:80]!r}; "
        f"pass one of {', '.join(ALIGNMENT_FORMATS)}"
    )


def read_alignment(
    path: str | Path,
    label_format: str | None = None,
    phones: str | Path | None = None,
    num_frames: Mapping[str, int] | None = None,
) -> Alignment:
    """Read any supported alignment; the format is detected when ``label_format`` is None.

    For "cpc" and "kaldi", a ``phones.txt`` next to the label file is used when ``phones`` is None
    ("kaldi" requires one). ``num_frames`` only matters for "ctm" and "textgrid".
    """
    path = Path(path)
    fmt = label_format or detect_format(path)
    if fmt not in ALIGNMENT_FORMATS:
        raise AlignmentError(
            f"label format: expected one of {', '.join(ALIGNMENT_FORMATS)}, found {fmt!r}"
        )
    if fmt in ("cpc", "kaldi") and phones is None:
        beside = path.parent / "phones.txt"
        phones = beside if beside.is_file() else None
    if fmt == "cpc":
        return read_cpc_alignment(path, phones)
    if fmt == "kaldi":
        if phones is None:
            raise AlignmentError(
                f"{path}: Kaldi per-frame alignments need a phones.txt symbol table, found none"
            )
        return read_kaldi_alignment(path, phones)
    if fmt == "ctm":
        return read_ctm(path, num_frames=num_frames, phones=phones)
    return read_textgrid(path, num_frames=num_frames)


# ----- pairing label frames with encoder frames -----


def label_frames(num_samples: int) -> int:
    """Kaldi frames of ``num_samples`` samples: 25 ms window, 10 ms shift, no padding."""
    return 0 if num_samples < 400 else 1 + (int(num_samples) - 400) // 160


def match_frames(features, labels, tolerance: int = 2):
    """Pair encoder frames with label frames: frame t with label t, the longer side cut.

    Geometry (16 kHz): label frame t is Kaldi's 25 ms window starting at sample 160 t, so an
    utterance of N samples has ``1 + (N - 400) // 160`` labels. The CPC encoder's frame t also
    starts at sample 160 t (strides 5-4-2-2-2 multiply to 160) but its paddings (3, 2, 1, 1, 1)
    give ``(N + 1) // 160`` frames: one or two more than the labels on the same audio. Both
    sequences start at sample 0 with the same shift, so index t means the same time in both, and
    only the tail differs. This is the one place that pairs them.

    Args:
        features: (T_f, ...) array or tensor of per-frame features.
        labels: (T_l, ...) array or tensor of per-frame labels.
        tolerance: the largest |T_f - T_l| accepted.

    Returns:
        (features[:T], labels[:T]) with T = min(T_f, T_l).

    Raises:
        AlignmentError: when the counts differ by more than ``tolerance``.
    """
    num_features, num_labels = len(features), len(labels)
    if abs(num_features - num_labels) > tolerance:
        raise AlignmentError(
            f"frame counts differ by more than {tolerance}: {num_features} feature frames vs "
            f"{num_labels} label frames; are the labels for this audio at 10 ms per frame?"
        )
    count = min(num_features, num_labels)
    return features[:count], labels[:count]


# ----- helpers -----


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise AlignmentError(f"{path}: expected an alignment file, found none")
    return read_text(path, AlignmentError).splitlines()


def _read_id_lines(path: Path) -> dict[str, np.ndarray]:
    labels: dict[str, np.ndarray] = {}
    for line_no, line in enumerate(_read_lines(path), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            ids = np.asarray([int(p) for p in parts[1:]], dtype=np.int64)
        except (ValueError, OverflowError) as err:  # OverflowError: beyond int64
            raise AlignmentError(
                f"{path}:{line_no}: expected 'UTT id id ...' with integer ids, found "
                f"{line.strip()[:80]!r}"
            ) from err
        if ids.size and ids.min() < 0:
            raise AlignmentError(f"{path}:{line_no}: expected ids >= 0, found {int(ids.min())}")
        if parts[0] in labels:
            raise AlignmentError(f"{path}:{line_no}: utterance {parts[0]!r} appears twice")
        labels[parts[0]] = ids
    if not labels:
        raise AlignmentError(f"{path}: expected 'UTT id id ...' lines, found none")
    return labels


def _fold_ids(raw: dict[str, np.ndarray], table: dict[int, str], source: str) -> Alignment:
    used = np.unique(np.concatenate([v for v in raw.values()] or [np.zeros(0, np.int64)]))
    missing = [int(i) for i in used if int(i) not in table]
    if missing:
        raise AlignmentError(f"{source}: ids missing from the symbol table: {missing}")
    folded = fold_phones([table[int(i)] for i in used], source)
    lookup = np.zeros(int(used.max()) + 1 if used.size else 1, dtype=np.int64)
    lookup[used] = folded
    labels = {utt: lookup[ids] for utt, ids in raw.items()}
    return Alignment(labels=labels, phones=list(CANONICAL_PHONES))


def _rasterise(
    segments: dict[str, list[tuple[float, float, str]]],
    num_frames: Mapping[str, int] | None,
    source: str,
) -> Alignment:
    symbols = sorted({s for segs in segments.values() for _, _, s in segs})
    ids = dict(zip(symbols, fold_phones(symbols, source), strict=True))
    labels: dict[str, np.ndarray] = {}
    for utt, segs in segments.items():
        segs = sorted(segs, key=lambda seg: seg[0])
        if num_frames is not None and utt in num_frames:
            total = int(num_frames[utt])
        else:
            total = max((_first_frame(end) for _, end, _ in segs), default=0)
        frames = np.full(total, CANONICAL_INDEX["SIL"], dtype=np.int64)
        for start, end, symbol in segs:
            # Frames whose centre lies in [start, end): ceil(x / 0.01 - 0.5) is the first frame
            # whose centre is at or after x; a small epsilon absorbs decimal rounding (0.57/0.01).
            frames[_first_frame(start) : min(_first_frame(end), total)] = ids[symbol]
        labels[utt] = frames
    return Alignment(labels=labels, phones=list(CANONICAL_PHONES))


def _first_frame(seconds: float) -> int:
    return max(0, math.ceil(seconds / FRAME_SHIFT_SECONDS - 0.5 - 1e-6))


_TG_KEY_VALUE = re.compile(r"^\s*(\w+)\s*=\s*(.*?)\s*$")


def _parse_textgrid_tier(path: Path, tier: str) -> list[tuple[float, float, str]]:
    lines = read_text(path, AlignmentError, encoding="utf-8-sig").splitlines()
    if not lines or "ooTextFile" not in lines[0]:
        raise AlignmentError(
            f"{path}: expected a Praat TextGrid starting with 'File type = \"ooTextFile\"', "
            f"found {lines[0][:60] if lines else ''!r}"
        )
    tiers: dict[str, list[tuple[float, float, str]]] = {}
    current: list[tuple[float, float, str]] | None = None
    interval: dict[str, str] = {}
    in_items = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("item ["):
            in_items = True
            current = None
            continue
        if not in_items:
            continue
        if stripped.startswith("intervals ["):
            interval = {}
            continue
        match = _TG_KEY_VALUE.match(line)
        if not match:
            continue
        key, value = match.group(1), match.group(2)
        if key == "name":
            current = tiers.setdefault(_tg_string(value), [])
            interval = {}
        elif current is not None and key in ("xmin", "xmax", "text"):
            interval[key] = value
            if key == "text":
                if "xmin" not in interval or "xmax" not in interval:
                    raise AlignmentError(f"{path}: interval text without xmin/xmax: {line!r}")
                times = (_tg_time(interval["xmin"], path), _tg_time(interval["xmax"], path))
                current.append((*times, _tg_string(value)))
                interval = {}
    if tier not in tiers:
        raise AlignmentError(
            f"{path}: expected an interval tier named {tier!r}, found tiers {sorted(tiers)}; "
            "only the long TextGrid format is read"
        )
    return tiers[tier]


def _tg_string(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1].replace('""', '"').strip()
    return value.strip()


def _lookup(table: dict[int, str], token: str, where: str) -> str:
    if not _is_int(token) or int(token) not in table:
        raise AlignmentError(f"{where}: expected a phone id from the symbol table, found {token!r}")
    return table[int(token)]


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _is_float(text: str) -> bool:
    """A finite number (``inf`` and ``nan`` are not times)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _tg_time(value: str, path: Path) -> float:
    if not _is_float(value) or float(value) < 0:
        raise AlignmentError(
            f"{path}: expected interval times as finite seconds >= 0, found {value!r}"
        )
    return float(value)
