"""Triphone ABX phone discriminability (Schatz et al. 2013, as scored by Libri-light and
ZeroSpeech 2021): within- and across-speaker error averaged over contexts, then speakers, then
phone pairs, over the DTW distances of :mod:`cpcspeech.eval.dtw` between the tokens of
:mod:`cpcspeech.eval.items`.
"""

import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cpcspeech.config import check_options
from cpcspeech.errors import CPCSpeechError
from cpcspeech.eval.data import EvalData
from cpcspeech.eval.dtw import check_distance, pair_distances
from cpcspeech.eval.features import FeatureSource, load_feature_source, method_name
from cpcspeech.eval.items import (
    Items,
    Tokens,
    collect_tokens,
    items_from_alignment,
    read_item_file,
    write_item_file,
)
from cpcspeech.files import finite_or_none, write_json_atomic, write_text_atomic
from cpcspeech.io.corpus import Utterance

MODES = ("within", "across")


# ----- scores -----


@dataclass
class ABXScore:
    """Within- or across-speaker ABX error (0 = perfect, 0.5 = chance), with its counts."""

    mode: str
    error: float
    n_phone_pairs: int
    n_cells: int


def abx_errors(
    tokens: Tokens,
    distance: str = "angular",
    modes: Sequence[str] = MODES,
    max_per_group: int = 10,
    max_x_speakers: int = 5,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, ABXScore]:
    """Triphone ABX error of ``tokens``.

    A and X share a phone, B has another phone, all three share the context (previous and next
    phone). Within: A, B and X from one speaker (X another token of A's cell). Across: A and B
    from one speaker, X from another speaker. For each cell (context, speaker, phone a, phone b,
    [X's speaker]) the score is the fraction of (a, b, x) triples with d(a, x) > d(b, x), ties
    counted 1/2; it is averaged over contexts (and X speakers), then speakers, then phone pairs.

    As in Libri-light, a (context, speaker, phone) cell uses at most ``max_per_group`` tokens and
    an across cell at most ``max_x_speakers`` X speakers; the random choice is made once, from
    ``seed``. Only the token pairs that some cell compares go through DTW, so the cost grows
    with the number of cells, not with the square of a context's size.

    Returns:
        mode -> ABXScore.
    """
    for mode in modes:
        if mode not in MODES:
            raise CPCSpeechError(f"ABX mode: expected within or across, found {mode!r}")
    check_distance(distance)
    rng = np.random.default_rng(seed)
    cells = _plan_cells(tokens, _subsample(tokens, max_per_group, rng), modes, max_x_speakers, rng)
    if not cells:
        return {mode: ABXScore(mode, float("nan"), 0, 0) for mode in modes}
    # Every requested (rows token, columns token) pair, as one int64 key, computed once.
    n = len(tokens)
    requests = np.concatenate([key.ravel() for cell in cells for key in (cell.xa, cell.xb)])
    unique, inverse = np.unique(requests, return_inverse=True)
    firsts, seconds = torch.from_numpy(unique // n), torch.from_numpy(unique % n)
    found = pair_distances(tokens, firsts, seconds, distance, progress=progress).numpy()[inverse]
    errors: dict[str, dict[tuple, list[float]]] = {mode: defaultdict(list) for mode in modes}
    start = 0
    for cell in cells:
        d_xa = found[start : start + cell.xa.size].reshape(cell.xa.shape)
        start += cell.xa.size
        d_xb = found[start : start + cell.xb.size].reshape(cell.xb.shape)
        start += cell.xb.size
        errors[cell.mode][cell.key].append(_cell_error(d_xa, d_xb, cell.mode == "within"))
    return {mode: _average(mode, errors[mode]) for mode in modes}


@dataclass
class _Cell:
    """One (speaker, phone a, phone b) comparison in one context (and X speaker for across).

    xa: (Nx, Na) and xb: (Nx, Nb) int64 pair keys (rows token * N + columns token).
    """

    mode: str
    key: tuple[int, int, int]
    xa: np.ndarray
    xb: np.ndarray


def _subsample(tokens: Tokens, max_per_group: int, rng: np.random.Generator) -> np.ndarray:
    """Token indices kept: at most ``max_per_group`` per (context, speaker, phone), in order."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, key in enumerate(zip(tokens.context, tokens.speaker, tokens.phone, strict=True)):
        groups[key].append(i)
    keep = []
    for members in groups.values():
        if len(members) > max_per_group:
            members = sorted(rng.choice(members, size=max_per_group, replace=False).tolist())
        keep.extend(members)
    return np.sort(np.asarray(keep, dtype=np.int64))


def _plan_cells(
    tokens: Tokens,
    keep: np.ndarray,
    modes: Sequence[str],
    max_x_speakers: int,
    rng: np.random.Generator,
) -> list[_Cell]:
    """Every within and across cell, with the token pairs it compares.

    Within-speaker A-X distances put the earlier token in rows, as Libri-light's symmetric
    computation does; X is always in rows otherwise.
    """
    n = len(tokens)
    groups: dict[int, dict[tuple[int, int], list[int]]] = defaultdict(lambda: defaultdict(list))
    for i in keep.tolist():
        groups[int(tokens.context[i])][(int(tokens.speaker[i]), int(tokens.phone[i]))].append(i)
    cells = []
    for c in sorted(groups):
        local = {key: np.asarray(members) for key, members in groups[c].items()}
        by_speaker: dict[int, list[int]] = defaultdict(list)
        for s, phone in sorted(local):
            by_speaker[s].append(phone)
        for s, phones in by_speaker.items():
            if len(phones) < 2:
                continue
            for a in phones:
                group_a = local[(s, a)]
                if "within" in modes and len(group_a) > 1:
                    low = np.minimum.outer(group_a, group_a)
                    high = np.maximum.outer(group_a, group_a)
                    for b in phones:
                        if b != a:
                            xb = group_a[:, None] * n + local[(s, b)][None, :]
                            cells.append(_Cell("within", (s, a, b), low * n + high, xb))
                if "across" in modes:
                    others = [key for key in local if key[1] == a and key[0] != s]
                    if len(others) > max_x_speakers:
                        pick = rng.choice(len(others), size=max_x_speakers, replace=False)
                        others = [others[i] for i in sorted(pick)]
                    for key_x in others:
                        group_x = local[key_x]
                        xa = group_x[:, None] * n + group_a[None, :]
                        for b in phones:
                            if b != a:
                                xb = group_x[:, None] * n + local[(s, b)][None, :]
                                cells.append(_Cell("across", (s, a, b), xa, xb))
    return cells


def _cell_error(d_xa: np.ndarray, d_xb: np.ndarray, within: bool) -> float:
    """1 - P(d(x, a) < d(x, b)) over the cell's (x, a, b) triples, ties counted 1/2.

    d_xa: (Nx, Na); d_xb: (Nx, Nb). ``within``: X is A itself, so a == x is left out.
    """
    better = (d_xa[:, :, None] < d_xb[:, None, :]).astype(np.float64)
    ties = (d_xa[:, :, None] == d_xb[:, None, :]).astype(np.float64)
    score = better + 0.5 * ties  # (Nx, Na, Nb)
    if not within:
        return 1.0 - float(score.mean())
    na = d_xa.shape[0]
    score[np.arange(na), np.arange(na)] = 0.0
    return 1.0 - float(score.sum()) / (na * (na - 1) * d_xb.shape[1])


def _average(mode: str, cells: dict[tuple, list[float]]) -> ABXScore:
    """Mean over contexts (and X speakers) per (speaker, a, b), then over speakers per (a, b),
    then over phone pairs."""
    per_pair: dict[tuple, list[float]] = defaultdict(list)
    for (_, a, b), errors in cells.items():
        per_pair[(a, b)].append(float(np.mean(errors)))
    if not per_pair:
        return ABXScore(mode, float("nan"), 0, 0)
    error = float(np.mean([np.mean(v) for v in per_pair.values()]))
    return ABXScore(mode, error, len(per_pair), sum(len(v) for v in cells.values()))


# ----- the command -----


@dataclass
class ABXResult:
    """One row of the ABX table."""

    method: str
    model: str
    distance: str
    within: float
    across: float
    n_items: int
    n_tokens: int
    n_utterances: int
    seconds: float
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Strict JSON: a mode with no scorable cell is ``null``, not NaN."""
        out = asdict(self)
        out.update(within=finite_or_none(self.within), across=finite_or_none(self.across))
        return out

    def describe(self) -> str:
        text = (
            f"{self.method}: {self.n_tokens} tokens of {self.n_utterances} utterances, "
            f"{self.seconds:.0f} s"
        )
        unscored = [mode for mode in MODES if finite_or_none(getattr(self, mode)) is None]
        if unscored:
            text += f"; warning: no scorable {' or '.join(unscored)} cell (n/a in the table)"
        for warning in self.details.get("warnings", []):
            text += f"; warning: {warning}"
        return text

    def check_scored(self) -> None:
        """Refuse a result with no scorable cell in either mode (it would be a table of nan)."""
        if finite_or_none(self.within) is None and finite_or_none(self.across) is None:
            raise CPCSpeechError(
                f"ABX ({self.method}): expected at least one scorable cell (two phones in one "
                f"context and speaker, one of them twice), found none in {self.n_tokens} tokens "
                f"of {self.n_utterances} utterances ({self.details.get('skipped_items', 0)} "
                "items skipped); give more or longer utterances"
            )


@dataclass(frozen=True)
class AbxOptions:
    """How ABX is scored: the feature layer, the frame distance, Libri-light's subsampling (at
    most ``max_per_group`` tokens per (context, speaker, phone) cell and ``max_x_speakers`` X
    speakers per across cell, drawn from ``seed``), where features are made, a progress bar."""

    layer: str = "c"
    distance: str = "angular"
    max_per_group: int = 10
    max_x_speakers: int = 5
    seed: int = 0
    device: str | torch.device = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        check_distance(self.distance)
        check_options(max_per_group=self.max_per_group, max_x_speakers=self.max_x_speakers,
                      seed=self.seed)  # fmt: skip


def abx_items(
    data: EvalData, item_file: str | os.PathLike | None = None
) -> tuple[list[Utterance], Items]:
    """The test utterances to score and their items: read from ``item_file`` (only the
    utterances it names, by utterance id or audio file stem), else made from the labels."""
    if item_file is not None:
        items = read_item_file(item_file)
        wanted = set(items.files)
        chosen = [u for u in data.test if u.utt_id in wanted or Path(u.path).stem in wanted]
        return chosen, items
    if data.alignment is None:
        raise CPCSpeechError("ABX: expected phone labels (--labels) or an --item file, found none")
    ids = [u.utt_id for u in data.test]
    return list(data.test), items_from_alignment(data.alignment, data.speaker_of(), ids)


def score_source(
    source: FeatureSource,
    utterances: Sequence[Utterance],
    items: Items,
    method: str,
    options: AbxOptions = AbxOptions(),  # noqa: B008 - frozen, so one shared default is safe
) -> ABXResult:
    """Features of ``utterances`` from ``source``, then within and across ABX error."""
    started = time.perf_counter()
    wanted = set(items.files)
    by_key: dict[str, Utterance] = {}  # item file id (utterance id or audio stem) -> utterance
    for u in utterances:
        key = u.utt_id if u.utt_id in wanted else Path(u.path).stem
        if key in wanted:
            by_key.setdefault(key, u)
    tokens = collect_tokens(
        items,
        lambda key: source.utterance_features(by_key[key]),
        list(by_key),
        progress=options.progress,
    )
    extracted = time.perf_counter()
    scores = abx_errors(
        tokens, options.distance, MODES, options.max_per_group, options.max_x_speakers,
        options.seed, progress=options.progress,
    )  # fmt: skip
    return ABXResult(
        method=method,
        model=source.name,
        distance=options.distance,
        within=scores["within"].error,
        across=scores["across"].error,
        n_items=len(items),
        n_tokens=len(tokens),
        n_utterances=len(by_key),
        seconds=time.perf_counter() - started,
        details={
            "feature_seconds": extracted - started,
            "scoring_seconds": time.perf_counter() - extracted,
            "skipped_items": tokens.skipped,
            "within_phone_pairs": scores["within"].n_phone_pairs,
            "across_phone_pairs": scores["across"].n_phone_pairs,
            "within_cells": scores["within"].n_cells,
            "across_cells": scores["across"].n_cells,
            "max_per_group": options.max_per_group,
            "max_x_speakers": options.max_x_speakers,
            "seed": options.seed,
            "features": f"{source.dim}-d",
            "warnings": items.warnings(),
        },
    )


def run_abx(
    data: EvalData,
    model_specs: Sequence[str],
    options: AbxOptions = AbxOptions(),  # noqa: B008 - frozen, so one shared default is safe
    item_file: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
) -> tuple[list[ABXResult], str]:
    """ABX within and across speakers on ``data.test`` for each of ``model_specs`` ("mfcc",
    "random", a model, a folder of ``.npy``).

    With ``out_dir``: writes ``abx.item`` (when made from labels), ``abx.json`` and ``abx.md``
    atomically.

    Returns:
        the results and the markdown table.
    """
    utterances, items = abx_items(data, item_file)
    results = []
    for spec in model_specs:
        source = load_feature_source(
            spec, layer=options.layer, seed=options.seed, device=options.device
        )
        results.append(score_source(source, utterances, items, method_name(spec), options))
        results[-1].check_scored()
    table = format_abx_table(results)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if item_file is None:
            write_item_file(items, out / "abx.item")
        write_text_atomic(out / "abx.md", table)
        payload = {
            "data": data.data_option,
            "labels": data.labels,
            "item_file": str(item_file) if item_file else str(out / "abx.item"),
            "results": [r.to_dict() for r in results],
        }
        write_json_atomic(out / "abx.json", payload)
    return results, table


def _percent(error: float) -> str:
    """An ABX error as a table cell: ``12.34``, or ``n/a`` when no cell was scorable."""
    return "n/a" if finite_or_none(error) is None else f"{100 * error:.2f}"


def format_abx_table(results: Sequence[ABXResult]) -> str:
    """Markdown: Method | ABX within | ABX across (error, %; lower is better)."""
    lines = ["| Method | ABX within (%) | ABX across (%) |", "|---|---|---|"]
    for r in results:
        lines.append(f"| {r.method} | {_percent(r.within)} | {_percent(r.across)} |")
    return "\n".join(lines) + "\n"
