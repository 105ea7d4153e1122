"""The paper's figures: t-SNE of per-utterance mean c_t coloured by speaker (Figure 2), and
InfoNCE prediction accuracy against the step k (Figure 3). Written headless with Agg."""

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cpcspeech.config import check_options
from cpcspeech.errors import CPCSpeechError
from cpcspeech.eval.features import FeatureSource, load_feature_source
from cpcspeech.files import check_writable_folder, read_text, temp_sibling
from cpcspeech.io.corpus import Utterance
from cpcspeech.model.cpc import CPCModel
from cpcspeech.runtime import progress_bar
from cpcspeech.weights.resolve import load_model_for_cli

PLOTS_EXTRA_HINT = "pip install 'cpcspeech[plots]'"
DEFAULT_PERPLEXITY = 30.0  # sklearn's default; lowered automatically for small sets
EXACT_TSNE_MAX_POINTS = 1000
LOG_NAMES = ("log.jsonl", "log.csv")
META_NAME = "meta.json"


# ----- matplotlib, imported lazily (optional extra "plots") -----


def _new_figure(width: float, height: float):
    """A matplotlib Figure bound to the non-interactive Agg canvas.

    Uses the object-oriented API (Figure + FigureCanvasAgg) rather than pyplot, so it needs no
    display, registers no global figure and leaves the caller's pyplot backend untouched.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise CPCSpeechError(
            f"plotting needs matplotlib, which is not installed ({err}); install it with: "
            f"{PLOTS_EXTRA_HINT}"
        ) from err
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _check_png_path(out_png: str | os.PathLike) -> Path:
    out = Path(out_png)
    if out.suffix.lower() != ".png":
        raise CPCSpeechError(f"--out {out}: expected a path ending in .png, found {out.suffix!r}")
    check_writable_folder(out.parent, f"--out {out}")  # before any features or t-SNE
    return out


def _save_png(figure, out_png: str | os.PathLike) -> Path:
    """Write ``figure`` to ``out_png`` atomically: a temporary PNG beside it, then rename."""
    out = _check_png_path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out)
    try:
        with open(tmp, "wb") as f:
            figure.savefig(f, format="png", bbox_inches="tight")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


# ----- Figure 2: t-SNE of speakers -----


def select_speakers(
    utterances: Sequence[Utterance],
    max_speakers: int = 10,
    max_utts_per_speaker: int | None = None,
) -> list[Utterance]:
    """The first ``max_speakers`` speakers in sorted order, each with its first
    ``max_utts_per_speaker`` utterances in utterance-id order (all when None).

    Deterministic on purpose: the same corpus always gives the same figure's points.
    """
    if max_speakers < 1:
        raise CPCSpeechError(f"max_speakers: expected >= 1, found {max_speakers}")
    if max_utts_per_speaker is not None and max_utts_per_speaker < 1:
        raise CPCSpeechError(
            f"max_utts_per_speaker: expected >= 1 or None, found {max_utts_per_speaker}"
        )
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in utterances:
        by_speaker.setdefault(utt.speaker, []).append(utt)
    chosen: list[Utterance] = []
    for speaker in sorted(by_speaker)[:max_speakers]:
        utts = sorted(by_speaker[speaker], key=lambda u: u.utt_id)
        chosen.extend(utts[:max_utts_per_speaker] if max_utts_per_speaker else utts)
    return chosen


def auto_perplexity(num_samples: int) -> float:
    """sklearn's default 30, lowered to (n - 1) / 3 for small n; t-SNE needs perplexity < n."""
    return float(min(DEFAULT_PERPLEXITY, max(1.0, (num_samples - 1) / 3.0)))


def utterance_means(
    model: CPCModel | FeatureSource, utterances: Sequence[Utterance], progress: bool = False
) -> np.ndarray:
    """Per-utterance mean of the context vectors c_t (or of any feature source's frames).

    Args:
        model: the CPC model (features are computed on its device), or a
            :class:`cpcspeech.features.FeatureSource` such as MFCC or a folder of ``.npy``.
        utterances: U utterances; each one's audio is read with ``AudioSource.load``.
        progress: show a rich progress bar on stderr.

    Returns:
        (U, c_dim) float64 array, row u = mean over t of c_t for utterance u.
    """
    if isinstance(model, CPCModel):
        model = model.eval()
    rows = []
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task("features", total=len(utterances))
        for utt in utterances:
            if isinstance(model, FeatureSource):
                feats = model.utterance_features(utt)  # (T, D)
                rows.append(np.asarray(feats, dtype=np.float64).mean(axis=0))
            else:
                wav = torch.from_numpy(utt.load())  # (N,)
                c = model.extract(wav, layer="c")  # (T, c_dim)
                rows.append(c.mean(dim=0).double().cpu().numpy())  # (c_dim,)
            bar.advance(task)
    return np.stack(rows)  # (U, c_dim)


def load_tsne_model(spec: str, seed: int = 0) -> tuple[CPCModel | FeatureSource, str]:
    """``--model`` of ``cpcspeech tsne``: ``mfcc`` or a folder of ``.npy`` features as a feature
    source, anything else as a CPC model; with a short description of the weights."""
    path = Path(spec)
    if spec == "mfcc" or (path.is_dir() and not (path / "config.json").is_file()
                          and any(path.rglob("*.npy"))):  # fmt: skip
        source = load_feature_source(spec)
        return source, source.name
    return load_model_for_cli(spec, seed, short=True)


def speaker_tsne(
    model: CPCModel | FeatureSource,
    utterances: Sequence[Utterance],
    out_png: str | os.PathLike,
    max_speakers: int = 10,
    max_utts_per_speaker: int | None = None,
    seed: int = 0,
    perplexity: float | None = None,
    progress: bool = False,
    weights: str | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Paper Figure 2: t-SNE of per-utterance mean c_t, one colour per speaker, saved as a PNG.

    Speakers: the first ``max_speakers`` in sorted order (see :func:`select_speakers`).

    Args:
        model: CPC model (trained, or random init as a baseline), or a feature source
            (:func:`load_tsne_model` gives one for ``mfcc`` and folders of ``.npy``).
        utterances: candidates, e.g. from ``cpcspeech.corpus.find_utterances``.
        out_png: the figure, written atomically.
        max_speakers: how many speakers to show (the paper shows 10).
        max_utts_per_speaker: cap per speaker (None: all).
        seed: t-SNE ``random_state``; the same inputs and seed give the same embedding.
        perplexity: t-SNE perplexity, must be in (0, U); None picks :func:`auto_perplexity`.
        progress: show a progress bar while extracting features.
        weights: optional words on the model for the title, e.g. "random init (seed 0)".

    Returns:
        embedding: (U, 2) float array of t-SNE coordinates, one row per selected utterance;
        labels: the U speaker names, row by row.
    """
    from sklearn.manifold import TSNE

    _check_png_path(out_png)
    check_options(speakers=max_speakers, utts_per_speaker=max_utts_per_speaker, seed=seed)
    if not utterances:
        raise CPCSpeechError("t-SNE: expected at least 2 utterances, found none")
    chosen = select_speakers(utterances, max_speakers, max_utts_per_speaker)
    n = len(chosen)
    if n < 2:
        raise CPCSpeechError(f"t-SNE: expected at least 2 utterances, found {n}")
    if perplexity is None:
        perplexity = auto_perplexity(n)
    elif not (0 < perplexity < n) or not math.isfinite(perplexity):
        raise CPCSpeechError(
            f"t-SNE perplexity: expected a value in (0, {n}) for {n} utterances, found {perplexity}"
        )
    _new_figure(1, 1)  # fail on a missing matplotlib before the slow feature pass
    features = utterance_means(model, chosen, progress=progress)  # (U, c_dim)
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        learning_rate="auto",
        random_state=seed,
        # Exact gradients are O(U^2) but single-threaded and faster than Barnes-Hut for a
        # figure's few hundred points; Barnes-Hut takes over for large sets.
        method="exact" if n <= EXACT_TSNE_MAX_POINTS else "barnes_hut",
    )
    embedding = tsne.fit_transform(features)  # (U, 2)
    labels = [u.speaker for u in chosen]
    _plot_tsne(embedding, labels, out_png, perplexity=perplexity, seed=seed, weights=weights)
    return embedding, labels


def _plot_tsne(
    embedding: np.ndarray,
    labels: list[str],
    out_png: str | os.PathLike,
    perplexity: float,
    seed: int,
    weights: str | None,
) -> Path:
    speakers = sorted(set(labels))
    figure = _new_figure(7.5, 6.0)
    axes = figure.add_subplot(1, 1, 1)
    palette = "tab10" if len(speakers) <= 10 else "tab20"
    from matplotlib import colormaps

    cmap = colormaps[palette]
    markers = ("o", "s", "^", "D", "v", "P", "X")
    labels_array = np.asarray(labels)
    for i, speaker in enumerate(speakers):
        points = embedding[labels_array == speaker]  # (U_s, 2)
        axes.scatter(
            points[:, 0],
            points[:, 1],
            s=22,
            color=cmap(i % cmap.N),
            marker=markers[(i // cmap.N) % len(markers)],
            label=f"{speaker} ({len(points)})",
            alpha=0.85,
            edgecolors="none",
        )
    details = (f"{weights}, " if weights else "") + f"perplexity {perplexity:.3g}, seed {seed}"
    axes.set_title(
        f"t-SNE of per-utterance mean c_t: {len(speakers)} speakers, {len(labels)} utterances\n"
        f"({details})",
        fontsize=11,
    )
    axes.set_xlabel("t-SNE 1")
    axes.set_ylabel("t-SNE 2")
    axes.legend(
        title="speaker (utterances)",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        title_fontsize=9,
        ncols=1 if len(speakers) <= 20 else 2,
    )
    return _save_png(figure, out_png)


# ----- Figure 3: prediction accuracy per step k -----


def _acc_from_record(record: dict, where: str) -> list[float] | None:
    """acc_k1..acc_kK (contiguous from 1) or an ``accuracy`` list; None when neither is there."""
    if "accuracy" in record and record["accuracy"] not in (None, ""):
        values = record["accuracy"]
        if not isinstance(values, list):
            raise CPCSpeechError(
                f"{where}: expected 'accuracy' to be a list of numbers, found {values!r}"
            )
        return [_as_accuracy(v, f"{where} accuracy[{i}]") for i, v in enumerate(values)]
    keys = {k for k, v in record.items() if k.startswith("acc_k") and v not in (None, "")}
    if not keys:
        return None
    steps = []
    for key in keys:
        suffix = key[len("acc_k") :]
        if not suffix.isdigit() or int(suffix) < 1:
            raise CPCSpeechError(f"{where}: expected columns acc_k1, acc_k2, ..., found {key!r}")
        steps.append(int(suffix))
    steps.sort()
    if steps != list(range(1, len(steps) + 1)):
        raise CPCSpeechError(
            f"{where}: expected acc_k1..acc_k{max(steps)} without gaps, found steps {steps}"
        )
    return [_as_accuracy(record[f"acc_k{k}"], f"{where} acc_k{k}") for k in steps]


def _as_accuracy(value: object, where: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise CPCSpeechError(f"{where}: expected a number in [0, 1], found {value!r}") from err
    if not (0.0 <= number <= 1.0):
        raise CPCSpeechError(f"{where}: expected an accuracy in [0, 1], found {value!r}")
    return number


def _read_log_records(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        lines = read_text(path, CPCSpeechError).splitlines()
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        records = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                if i == last:  # a run killed mid-write can leave a torn last line
                    break
                raise CPCSpeechError(f"{path}:{i + 1}: not valid JSON ({err})") from err
            if not isinstance(record, dict):
                raise CPCSpeechError(f"{path}:{i + 1}: expected a JSON object per line")
            records.append(record)
        return records
    if path.suffix == ".csv":
        text = read_text(path, CPCSpeechError)
        return [dict(row) for row in csv.DictReader(io.StringIO(text, newline=""))]
    raise CPCSpeechError(f"{path}: expected a log.jsonl or log.csv file, found {path.suffix!r}")


def _accuracy_from_log(path: Path) -> tuple[list[float], str]:
    """The last validation record with accuracies, else the last training record."""
    records = _read_log_records(path)
    best: dict[str, tuple[int, list[float], dict]] = {}
    for i, record in enumerate(records):
        acc = _acc_from_record(record, f"{path} record {i + 1}")
        if acc is None:
            continue
        split = str(record.get("split") or "train")
        best[split] = (i, acc, record)
    chosen = best.get("valid") or best.get("train")
    if chosen is None:
        raise CPCSpeechError(
            f"{path}: no record with prediction accuracies (acc_k1..acc_kK or 'accuracy') among "
            f"{len(records)} record(s); found splits {sorted(best) or 'none'}"
        )
    _, acc, record = chosen
    split = "valid" if chosen is best.get("valid") else "train"
    step = record.get("step")
    return acc, f"{split}" + (f", step {step}" if step not in (None, "") else "")


def _accuracy_from_meta(path: Path) -> tuple[list[float], str]:
    try:
        meta = json.loads(read_text(path, CPCSpeechError))
    except json.JSONDecodeError as err:
        raise CPCSpeechError(f"{path}: not valid JSON ({err})") from err
    values = meta.get("valid_accuracy") if isinstance(meta, dict) else None
    if not values:
        raise CPCSpeechError(
            f"{path}: expected a non-empty 'valid_accuracy' list, found {values!r}; this "
            "checkpoint was saved without a validation pass (plot the run's log.jsonl instead)"
        )
    if not isinstance(values, list):
        raise CPCSpeechError(f"{path}: expected 'valid_accuracy' to be a list, found {values!r}")
    acc = [_as_accuracy(v, f"{path} valid_accuracy[{i}]") for i, v in enumerate(values)]
    step = meta.get("step")
    return acc, "valid" + (f", step {step}" if step is not None else "")


def read_prediction_accuracy(source: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Prediction accuracy per step k from a training log or a checkpoint.

    Args:
        source: ``log.jsonl`` / ``log.csv`` (records with acc_k1..acc_kK or an ``accuracy``
            list, optional ``split`` "train"/"valid"), a checkpoint folder or its ``meta.json``
            (``valid_accuracy``), or a run folder holding log.jsonl / log.csv.

    Returns:
        accuracy: (K,) float array, entry k-1 = accuracy of predicting z_{t+k};
        description: which record it came from, e.g. "valid, step 1000".
    """
    path = Path(source)
    if path.is_dir():
        candidates = [path / META_NAME] + [path / name for name in LOG_NAMES]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise CPCSpeechError(
                f"{path}: expected a checkpoint folder ({META_NAME}) or a run folder "
                f"({' or '.join(LOG_NAMES)}), found none of them"
            )
        path = found
    elif not path.is_file():
        raise CPCSpeechError(
            f"{path}: expected a log.jsonl, log.csv, meta.json or checkpoint folder, found nothing"
        )
    if path.name == META_NAME:
        acc, description = _accuracy_from_meta(path)
    else:
        acc, description = _accuracy_from_log(path)
    if not acc:
        raise CPCSpeechError(f"{path}: the accuracy list is empty")
    return np.asarray(acc, dtype=np.float64), description


def plot_prediction_steps(source: str | os.PathLike, out_png: str | os.PathLike) -> np.ndarray:
    """Paper Figure 3: accuracy of picking the positive z_{t+k} among the negatives, against k.

    Args:
        source: see :func:`read_prediction_accuracy`.
        out_png: the figure, written atomically.

    Returns:
        accuracy: (K,) the plotted values, k = 1..K.
    """
    _check_png_path(out_png)
    accuracy, description = read_prediction_accuracy(source)
    figure = _new_figure(6.0, 4.0)
    axes = figure.add_subplot(1, 1, 1)
    steps = np.arange(1, len(accuracy) + 1)
    axes.plot(steps, accuracy, marker="o", color="tab:blue")
    axes.set_xlabel("latent steps in the future (k)")
    axes.set_ylabel("prediction accuracy")
    axes.set_ylim(0.0, 1.0)
    axes.set_xticks(steps if len(steps) <= 24 else steps[:: math.ceil(len(steps) / 24)])
    axes.grid(True, alpha=0.3)
    axes.set_title(f"InfoNCE prediction accuracy per step k\n{Path(source).name} ({description})")
    _save_png(figure, out_png)
    return accuracy
