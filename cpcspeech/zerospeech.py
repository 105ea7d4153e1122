"""The phonetic part of a ZeroSpeech 2021 submission, and a validator of every rule that
zerospeech2021's own ``zerospeech2021-validate`` checks for it.

Layout written (``SUB`` = the submission folder)::

    SUB/meta.yaml                                   the zerospeech2021 schema, exact key sets
    SUB/phonetic/{dev,test}-{clean,other}/<rel>.txt one per DATASET/phonetic/<set>/<rel>.wav:
                                                    (T, D) text, one frame per line, T, D >= 2
    SUB/lexical/ SUB/syntactic/ SUB/semantic/       empty: the validator requires the folders
    SUB/code/README.md                              how the features were made (open_source)
    SUB.params.yaml                                 beside SUB, not inside it (see below)

zerospeech2021 refuses any file at the submission root other than meta.yaml and the track
folders, and anything in ``phonetic/`` other than the four sets; so ``params.yaml`` (the frame
shift and ABX distance, as the newer zerospeech-benchmarks toolkit reads them) is written
next to the submission folder. zerospeech2021 takes the same two values from meta.yaml's
``parameters.phonetic``.

The zerospeech2021 package is not on PyPI and its phonetic validator imports torchaudio, so
the rules are re-implemented here (from zerospeech/zerospeech2021's ``validate.py``,
``phonetic.py`` and ``meta.py``) and tested against fake submissions.
"""

import numbers
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from cpcspeech.errors import CorpusError, CPCSpeechError
from cpcspeech.extract import extract_features
from cpcspeech.files import check_writable_folder, write_text_atomic
from cpcspeech.io.sources import AudioSource
from cpcspeech.io.writers import TextFolderWriter
from cpcspeech.weights.resolve import load_model_for_cli

PHONETIC_SETS = ("dev-clean", "dev-other", "test-clean", "test-other")
TRACKS = ("phonetic", "lexical", "syntactic", "semantic")
FRAME_SHIFT = 0.01
"""Seconds between feature rows; ZeroSpeech centres row i at (i + 0.5) * FRAME_SHIFT."""
METRIC = "cosine"
PHONETIC_METRICS = ("cosine", "euclidean", "kl", "kl_symmetric")
POOLINGS = ("min", "max", "mean", "sum", "last", "lastlast", "off")
PARAMETERS = {
    "phonetic": {"metric": PHONETIC_METRICS, "frame_shift": numbers.Number},
    "semantic": {"metric": lambda m: _scipy_metric(m), "pooling": POOLINGS},
}
META_KEYS = {
    "author": str, "affiliation": str, "description": str, "open_source": bool,
    "train_set": str, "visually_grounded": bool, "gpu_budget": numbers.Number,
    "parameters": dict,
}  # fmt: skip


@dataclass
class SubmissionSummary:
    """The outcome of :func:`write_submission`."""

    out: Path
    params: Path
    weights: str
    layer: str
    written: dict[str, int] = field(default_factory=dict)  # set -> files written by this run
    reused: dict[str, int] = field(default_factory=dict)  # set -> files already there
    dim: int = 0

    def describe(self) -> str:
        sets = ", ".join(
            f"{s} {self.written[s] + self.reused[s]}" for s in self.written
        )  # files per set
        reused = sum(self.reused.values())
        return (
            f"wrote {self.out}: phonetic features (T, {self.dim}) layer {self.layer} as text "
            f"({sets} files; {reused} kept from an earlier run), meta.yaml; validated; "
            f"{self.params} beside it; weights: {self.weights}"
        )


# ----- the dataset -----


def dataset_wavs(dataset: str | os.PathLike, phonetic_set: str) -> list[Path]:
    """``DATASET/phonetic/<set>/**/*.wav`` relative to the set folder, sorted (as validated)."""
    folder = Path(dataset) / "phonetic" / phonetic_set
    if not folder.is_dir():
        raise CorpusError(
            f"expected a ZeroSpeech 2021 dataset with phonetic/{phonetic_set}/*.wav, found no "
            f"folder {folder}"
        )
    wavs = sorted(p.relative_to(folder) for p in folder.rglob("*.wav") if p.is_file())
    if not wavs:
        raise CorpusError(f"{folder}: expected .wav files, found none")
    return wavs


# ----- writing -----


def write_submission(
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    model: str = "default",
    layer: str = "c",
    device: str = "cpu",
    sets: tuple[str, ...] = PHONETIC_SETS,
    meta: dict | None = None,
    progress: bool = False,
) -> SubmissionSummary:
    """Write (or finish) a ZeroSpeech 2021 phonetic submission, then validate it.

    Every wav gets its features through :func:`cpcspeech.extract.extract_features` (finite
    values checked), written as ``(T, D)`` text; a file already there (each is written
    atomically) is kept, so an interrupted run resumes.

    Args:
        dataset: a folder laid out like the ZeroSpeech 2021 dataset (``phonetic/<set>/*.wav``).
        out: the submission folder.
        model, layer, device: as ``cpcspeech extract``; ``model`` "random" is the random init.
        sets: all four sets, or the two dev sets (validated with ``only_dev``).
        meta: meta.yaml values replacing the defaults (author, affiliation, train_set, ...).

    Raises:
        CPCSpeechError: bad dataset, options or features; an invalid result (every problem).
    """
    if set(sets) not in (set(PHONETIC_SETS), set(PHONETIC_SETS[:2])):
        raise CPCSpeechError(
            f"sets: expected all of {PHONETIC_SETS} or the two dev sets, found {sets}"
        )
    out = Path(out)
    wavs = {s: dataset_wavs(dataset, s) for s in sets}  # the dataset is checked before any work
    check_writable_folder(out, "--out")
    cpc, weights = load_model_for_cli(model)
    summary = SubmissionSummary(out, out.parent / f"{out.name}.params.yaml", weights, layer)
    if layer not in cpc.layers:
        raise CPCSpeechError(f"--layer: expected one of {list(cpc.layers)}, found {layer!r}")
    summary.dim = cpc.layer_dim(layer)
    for name in sets:
        folder = Path(dataset) / "phonetic" / name
        todo = [
            rel
            for rel in wavs[name]
            if not (out / "phonetic" / name / rel.with_suffix(".txt")).is_file()
        ]
        summary.reused[name] = len(wavs[name]) - len(todo)
        summary.written[name] = len(todo)
        if todo:
            sources = [AudioSource(rel.with_suffix("").as_posix(), folder / rel) for rel in todo]
            writer = TextFolderWriter(out / "phonetic" / name)
            extract_features(cpc, sources, writer, layer=layer, device=device, progress=progress)
    for track in TRACKS[1:]:
        (out / track).mkdir(exist_ok=True)
    _write_code_note(out, model, layer, weights)
    meta_values = default_meta(weights, layer) | (meta or {})
    write_text_atomic(out / "meta.yaml", yaml.safe_dump(meta_values, sort_keys=False))
    write_text_atomic(summary.params, params_yaml())
    problems = validate_submission(dataset, out, only_dev=len(sets) == 2)
    if problems:
        raise CPCSpeechError(f"{out}: the submission fails {len(problems)} rule(s): {problems[0]}")
    return summary


def default_meta(weights: str, layer: str) -> dict:
    """meta.yaml in the zerospeech2021 schema; author, affiliation and train_set are
    placeholders to edit (``--author``, ``--affiliation``, ``--train-set``)."""
    return {
        "author": "unknown",
        "affiliation": "unknown",
        "description": f"CPC features (cpcspeech), layer {layer}; weights: {weights}",
        "open_source": True,
        "train_set": "unknown",
        "visually_grounded": False,
        "gpu_budget": 0,
        "parameters": {
            "phonetic": {"metric": METRIC, "frame_shift": FRAME_SHIFT},
            "semantic": {"metric": "cosine", "pooling": "mean"},
        },
    }


def params_yaml() -> str:
    """The zerospeech-benchmarks (abxLS) ABX parameters of these features."""
    return (
        "# ABX parameters of the phonetic features (zerospeech-benchmarks ABX2Parameters names).\n"
        "# Kept beside the zerospeech2021 submission folder: its validator refuses extra files.\n"
        f"feature_size: {FRAME_SHIFT}  # frame shift in seconds\n"
        f"distance_mode: {METRIC}\n"
        "score_file_type: .txt\n"
    )


def _write_code_note(out: Path, model: str, layer: str, weights: str) -> None:
    """code/README.md: meta.yaml says open_source, which requires a non-empty code/."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = f"cpcspeech {version('cpcspeech')}"
    except PackageNotFoundError:
        package = "cpcspeech"
    write_text_atomic(
        out / "code" / "README.md",
        f"# How these features were made\n\nWith {package} (open source, MIT):\n\n"
        f"    cpcspeech zerospeech DATASET --out {out.name} --model {model} --layer {layer}\n\n"
        f"Weights: {weights}\n\nPython {sys.version.split()[0]}.\n",
    )


# ----- validation -----


def validate_submission(
    dataset: str | os.PathLike, submission: str | os.PathLike, only_dev: bool = False
) -> list[str]:
    """Every problem zerospeech2021-validate would find in the phonetic part (and the root and
    meta.yaml), plus non-finite values (ABX would be meaningless); [] when the submission is valid.

    Rules: the root holds exactly meta.yaml, phonetic, lexical, syntactic, semantic (and code,
    not empty, when open_source); meta.yaml has exactly the schema's keys with their types and
    choices; phonetic/ holds exactly the four sets (the dev sets with ``only_dev``); each set
    holds exactly one ``<rel>.txt`` per ``DATASET/phonetic/<set>/<rel>.wav`` and nothing else
    (no folders, no other suffix); each file loads with ``np.loadtxt`` as a 2-D array (at least
    2 rows and 2 columns) of finite values; every file has the same number of columns.
    """
    sub = Path(submission)
    if not sub.is_dir():
        return [f"expected a submission folder, found none at {sub}"]
    problems = []
    meta = _load_meta(sub / "meta.yaml", problems)
    expected = {"meta.yaml", *TRACKS} | ({"code"} if meta.get("open_source") is True else set())
    problems += _mismatch(sub, {p.name for p in sub.iterdir()}, expected)
    if "code" in expected and (not (sub / "code").is_dir() or not any((sub / "code").iterdir())):
        problems.append(f"{sub / 'code'}: open_source is true, expected a non-empty code/ folder")
    sets = PHONETIC_SETS[:2] if only_dev else PHONETIC_SETS
    phonetic = sub / "phonetic"
    if not phonetic.is_dir():
        return problems + [f"expected a folder {phonetic}, found none"]
    problems += _mismatch(phonetic, {p.name for p in phonetic.iterdir()}, set(sets))
    widths: dict[int, str] = {}
    for name in sets:
        if (phonetic / name).is_dir():
            problems += _validate_set(Path(dataset), phonetic / name, name, widths)
    if len(widths) > 1:
        problems.append(
            f"expected one number of columns in every file, found {dict(sorted(widths.items()))}"
        )
    return problems


def _mismatch(folder: Path, found: set[str], expected: set[str]) -> list[str]:
    missing, extra = sorted(expected - found), sorted(found - expected)
    if not missing and not extra:
        return []
    return [f"{folder}: expected exactly {sorted(expected)}, missing {missing}, extra {extra}"]


def _validate_set(dataset: Path, folder: Path, name: str, widths: dict[int, str]) -> list[str]:
    """One phonetic set: the file names against the dataset's wavs, then every file's array."""
    try:
        wavs = dataset_wavs(dataset, name)
    except CorpusError as err:
        return [str(err)]
    entries = list(folder.rglob("*"))
    wrong = [p for p in entries if not p.is_file() or p.suffix != ".txt"]
    problems = [f"{p}: expected only .txt files in {folder}, found this" for p in wrong[:5]]
    found = {p.relative_to(folder).with_suffix("").as_posix() for p in entries if p not in wrong}
    expected = {w.with_suffix("").as_posix() for w in wavs}
    if found != expected:
        missing, extra = sorted(expected - found), sorted(found - expected)
        problems.append(
            f"{folder}: expected one .txt per wav of {dataset / 'phonetic' / name}, "
            f"missing {len(missing)} {missing[:3]}, extra {len(extra)} {extra[:3]}"
        )
    for rel in sorted(found & expected):
        problem = _check_array(folder / f"{rel}.txt", widths)
        if problem:
            problems.append(problem)
    return problems


def _check_array(path: Path, widths: dict[int, str]) -> str | None:
    """One feature file: loadable by np.loadtxt, 2-D, finite; its width recorded."""
    try:
        array = np.loadtxt(path)
    except ValueError as err:
        return f"{path}: expected numbers separated by spaces (np.loadtxt), found: {err}"
    if array.ndim != 2:
        return f"{path}: expected a 2-D array (>= 2 rows, >= 2 columns), found {array.shape}"
    if not np.isfinite(array).all():
        return f"{path}: expected finite values, found {int((~np.isfinite(array)).sum())} NaN/inf"
    widths.setdefault(array.shape[1], str(path))
    return None


def _load_meta(path: Path, problems: list[str]) -> dict:
    """meta.yaml as a dict (with its problems appended), {} when unreadable."""
    if not path.is_file():
        problems.append(f"expected {path}, found none")
        return {}
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8").replace("\t", " "))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        problems.append(f"{path}: expected YAML, found: {str(err).splitlines()[0]}")
        return {}
    if not isinstance(meta, dict):
        problems.append(f"{path}: expected a mapping, found {type(meta).__name__}")
        return {}
    problems += [f"{path}: {p}" for p in meta_problems(meta)]
    return meta


def meta_problems(meta: dict) -> list[str]:
    """The zerospeech2021 meta.yaml rules: exact key sets, types, non-empty strings, choices."""
    problems = _keys("meta.yaml", meta, set(META_KEYS))
    for key, kind in META_KEYS.items():
        if key in meta and not _is(meta[key], kind):
            problems.append(f"{key}: expected {kind.__name__}, found {meta[key]!r}")
        elif kind is str and key in meta and not meta[key].strip():
            problems.append(f"{key}: expected a non-empty string, found {meta[key]!r}")
    params = meta.get("parameters")
    if not isinstance(params, dict):
        return problems
    problems += _keys("parameters", params, set(PARAMETERS))
    for track, rules in PARAMETERS.items():
        section, where = params.get(track), f"parameters.{track}"
        if track in params and not isinstance(section, dict):
            problems.append(f"{where}: expected a mapping, found {section!r}")
            continue
        problems += _keys(where, section or {}, set(rules)) if track in params else []
        for key, rule in rules.items():
            if key in (section or {}) and not _follows(section[key], rule):
                problems.append(
                    f"{where}.{key}: expected {_rule_text(rule)}, found {section[key]!r}"
                )
    return problems


def _is(value: object, kind: type) -> bool:
    """isinstance as zerospeech2021 checks it; a string is never a number."""
    return isinstance(value, kind) and not (kind is numbers.Number and isinstance(value, str))


def _follows(value: object, rule) -> bool:
    if isinstance(rule, tuple):
        return value in rule
    if isinstance(rule, type):
        return _is(value, rule)
    return rule(value)


def _rule_text(rule) -> str:
    if isinstance(rule, tuple):
        return f"one of {list(rule)}"
    return "a number" if isinstance(rule, type) else "a scipy cdist metric name"


def _scipy_metric(metric: object) -> bool:
    """Whether scipy.spatial.distance.cdist accepts ``metric`` (zerospeech2021's test)."""
    from scipy.spatial.distance import cdist

    if not isinstance(metric, str):
        return False
    try:
        cdist(np.ones((5, 2)), np.ones((5, 2)), metric)
    except (ValueError, TypeError):
        return False
    return True


def _keys(where: str, mapping: dict, expected: set[str]) -> list[str]:
    missing, extra = sorted(expected - set(mapping)), sorted(set(mapping) - expected)
    if not missing and not extra:
        return []
    return [
        f"{where}: expected exactly the keys {sorted(expected)}, missing {missing}, extra {extra}"
    ]
