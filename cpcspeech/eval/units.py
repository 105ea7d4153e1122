"""Discrete units: k-means on frame features (ZeroSpeech 2021 / GSLM style), codebooks saved as
safetensors + JSON, unit sequences per utterance, and the units' quality against phone labels
(phone purity, cluster purity, PNMI, ABX on one-hot units).
"""

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cpcspeech.config import check_options
from cpcspeech.errors import CPCSpeechError
from cpcspeech.eval.abx import AbxOptions, ABXResult, abx_items, score_source
from cpcspeech.eval.data import EvalData
from cpcspeech.eval.features import FeatureSource, extract_frames, load_feature_source
from cpcspeech.files import read_json, write_json_atomic, write_text_atomic
from cpcspeech.io.corpus import Utterance
from cpcspeech.io.sources import find_sources, first_clash
from cpcspeech.runtime import one_line, progress_bar, resolve_device

CODEBOOK_FORMAT = "cpcspeech-units"
CODEBOOK_VERSION = 1
METHODS = ("torch", "sklearn")


# ----- the codebook -----


@dataclass
class Codebook:
    """K centroids in feature space and what they were fitted on.

    Attributes:
        centroids: (K, D) float32.
        model: the ``--model`` spec the features came from ("default", "mfcc", a path, ...).
        model_sha256: the feature source's identity (the weights' sha256 for CPC models).
        layer: "c", "z", or "mfcc".
        standardize: each utterance's features were standardised (zero mean, unit variance per
            dimension) before fitting; the same is done before assignment.
    """

    centroids: torch.Tensor
    model: str
    model_sha256: str
    layer: str
    standardize: bool
    details: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def metadata(self) -> dict:
        return {
            "format": CODEBOOK_FORMAT,
            "format_version": CODEBOOK_VERSION,
            "k": self.k,
            "dim": self.dim,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "layer": self.layer,
            "standardize": self.standardize,
            **self.details,
        }

    def check_source(self, source: FeatureSource) -> None:
        """Refuse features of another dimension or another model."""
        if source.dim != self.dim:
            raise CPCSpeechError(
                f"codebook: expected {self.dim}-d features ({self.model}, layer {self.layer}), "
                f"found {source.dim}-d from {source.name}"
            )
        if source.identity != self.model_sha256 or (source.layer or "") != self.layer:
            raise CPCSpeechError(
                f"codebook: expected features of model sha256 {self.model_sha256[:12]}... layer "
                f"{self.layer!r}, found {source.identity[:12]}... layer {source.layer!r} "
                f"({source.name})"
            )

    def assign(self, features: np.ndarray) -> np.ndarray:
        """(T, D) features of one utterance -> (T,) int64 nearest-centroid ids."""
        x = torch.from_numpy(_prepare(np.asarray(features, dtype=np.float32), self.standardize))
        return nearest(x, self.centroids).numpy()


def codebook_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``X.safetensors`` and its ``X.json`` (a path without suffix gets ``.safetensors``)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    return path, path.with_suffix(".json")


def save_codebook(codebook: Codebook, path: str | os.PathLike) -> Path:
    """Write ``X.safetensors`` (centroids; metadata in its header too) and ``X.json``, each
    atomically. Returns the safetensors path."""
    weights, meta = codebook_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    header = {key: json.dumps(value) for key, value in codebook.metadata().items()}
    tmp = weights.with_name(f".{weights.name}.tmp")
    save_file({"centroids": codebook.centroids.contiguous()}, str(tmp), metadata=header)
    os.replace(tmp, weights)
    write_json_atomic(meta, codebook.metadata())
    return weights


def load_codebook(path: str | os.PathLike) -> Codebook:
    """Read a codebook written by :func:`save_codebook` (safetensors only, nothing unpickled)."""
    weights, meta_path = codebook_paths(path)
    if not weights.is_file():
        raise CPCSpeechError(f"{weights}: expected a units codebook (.safetensors), found none")
    if not meta_path.is_file():
        raise CPCSpeechError(f"{meta_path}: expected the codebook's JSON metadata, found none")
    meta = _check_codebook_meta(read_json(meta_path, CPCSpeechError), meta_path)
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # safetensors raises several types for corrupt files
        raise CPCSpeechError(f"{weights}: not a valid safetensors file ({one_line(err)})") from None
    if set(tensors) != {"centroids"}:
        raise CPCSpeechError(f"{weights}: expected one tensor 'centroids', found {sorted(tensors)}")
    centroids = tensors["centroids"].float()
    if tuple(centroids.shape) != (meta["k"], meta["dim"]):
        raise CPCSpeechError(
            f"{weights}: expected centroids of shape ({meta['k']}, {meta['dim']}) as the JSON "
            f"says, found {tuple(centroids.shape)}"
        )
    bad = int((~torch.isfinite(centroids)).sum())
    if bad:
        raise CPCSpeechError(
            f"{weights}: expected finite centroids, found {bad} NaN/inf value(s) of "
            f"{centroids.numel()}"
        )
    known = {"format", "format_version", "k", "dim", "model", "model_sha256", "layer"}
    details = {k: v for k, v in meta.items() if k not in known | {"standardize"}}
    return Codebook(
        centroids, meta["model"], meta["model_sha256"], meta["layer"], meta["standardize"],
        details,
    )  # fmt: skip


_META_TYPES = {"k": int, "dim": int, "model": str, "model_sha256": str, "layer": str,
               "standardize": bool}  # fmt: skip


def _check_codebook_meta(meta: object, path: Path) -> dict:
    """The codebook JSON: our format and version, and every field of the expected type."""
    if not isinstance(meta, dict):
        raise CPCSpeechError(f"{path}: expected a JSON object, found {type(meta).__name__}")
    if meta.get("format") != CODEBOOK_FORMAT or meta.get("format_version") != CODEBOOK_VERSION:
        raise CPCSpeechError(
            f"{path}: expected format {CODEBOOK_FORMAT!r} version {CODEBOOK_VERSION}, found "
            f"{meta.get('format')!r} version {meta.get('format_version')!r}"
        )
    for key, kind in _META_TYPES.items():
        value = meta.get(key)
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 1)):
            expected = "a positive int" if kind is int else kind.__name__
            raise CPCSpeechError(f"{path}: expected {key!r} to be {expected}, found {value!r}")
    return meta


# ----- k-means -----


def nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """(F, D) points, (K, D) centroids -> (F,) int64 index of the nearest centroid (L2)."""
    c_sq = (centroids * centroids).sum(1)  # (K,)
    out = [
        (c_sq[None, :] - 2.0 * x[s : s + chunk] @ centroids.T).argmin(1)
        for s in range(0, len(x), chunk)
    ]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def kmeans_torch(
    x: np.ndarray, k: int, seed: int = 0, max_iterations: int = 100, tolerance: float = 1e-4
) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding (on at most 20,000 points), full batch.

    Stops when the mean squared shift of the centroids falls below ``tolerance`` times the data's
    mean squared norm. An emptied cluster is re-seeded on the point farthest from its centroid.

    Args:
        x: (F, D) float32.

    Returns:
        (K, D) float32 centroids.
    """
    generator = torch.Generator().manual_seed(seed)
    points = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    centroids = _kmeans_pp(points, k, generator)
    scale = float((points * points).sum(1).mean()) + 1e-12
    for _ in range(max_iterations):
        assignment = nearest(points, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=k).float()
        updated = sums / counts.clamp_min(1.0)[:, None]
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):
            far = ((points - centroids[assignment]) ** 2).sum(1).topk(len(empty)).indices
            updated[empty] = points[far]
        shift = float(((updated - centroids) ** 2).sum(1).mean())
        centroids = updated
        if shift < tolerance * scale:
            break
    return centroids.numpy()


def _kmeans_pp(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    sample = points
    if len(points) > 20000:
        sample = points[torch.randperm(len(points), generator=generator)[:20000]]
    chosen = [int(torch.randint(len(sample), (1,), generator=generator))]
    best = ((sample - sample[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        probs = best / best.sum() if best.sum() > 0 else torch.full_like(best, 1 / len(best))
        pick = int(torch.multinomial(probs, 1, generator=generator))
        chosen.append(pick)
        best = torch.minimum(best, ((sample - sample[pick]) ** 2).sum(1))
    return sample[chosen].clone()


def kmeans_sklearn(x: np.ndarray, k: int, seed: int = 0, batch_size: int = 10000) -> np.ndarray:
    """scikit-learn's MiniBatchKMeans (k-means++ init, n_init 1); (F, D) -> (K, D) float32."""
    from sklearn.cluster import MiniBatchKMeans

    fitted = MiniBatchKMeans(
        n_clusters=k, batch_size=batch_size, random_state=seed, n_init=1, max_iter=100
    ).fit(x)
    return fitted.cluster_centers_.astype(np.float32)


def fit_kmeans(x: np.ndarray, k: int, method: str = "torch", seed: int = 0) -> np.ndarray:
    """(F, D) float32 -> (K, D) centroids with ``method`` "torch" or "sklearn"."""
    if method not in METHODS:
        raise CPCSpeechError(f"k-means method: expected torch or sklearn, found {method!r}")
    if k < 2 or k > len(x):
        raise CPCSpeechError(f"k-means: expected 2 <= K <= {len(x)} (frames), found K = {k}")
    return kmeans_torch(x, k, seed) if method == "torch" else kmeans_sklearn(x, k, seed)


# ----- fit and apply -----


@dataclass
class UnitsFitResult:
    codebook: Codebook
    path: Path
    n_utterances: int
    n_frames: int
    feature_seconds: float
    kmeans_seconds: float
    quality: dict | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["codebook"] = self.codebook.metadata()
        out["path"] = str(self.path)
        return out

    def describe(self) -> str:
        """What was written and how long it took; with the quality scores on a second line."""
        book = self.codebook
        text = (
            f"wrote {self.path} (K={book.k}, {book.dim}-d, model sha256 "
            f"{book.model_sha256[:12]}...): {self.n_frames} frames of {self.n_utterances} "
            f"utterances, features {self.feature_seconds:.1f} s, k-means "
            f"({book.details.get('method')}) {self.kmeans_seconds:.1f} s"
        )
        if not self.quality:
            return text
        q = self.quality
        text += (
            f"\ntest split: phone purity {q['phone_purity']:.3f}, cluster purity "
            f"{q['cluster_purity']:.3f}, PNMI {q['pnmi']:.3f}"
        )
        if "abx_within" in q:
            text += (
                f", ABX within {100 * q['abx_within']:.2f}%, across {100 * q['abx_across']:.2f}%"
            )
        return text


@dataclass(frozen=True)
class UnitsOptions:
    """How a codebook is fitted, checked when built.

    Attributes:
        k: the number of units (clusters).
        layer: the feature layer ("c", "z", "c1".."cN").
        standardize: standardise each utterance's features before fitting (and assigning).
        method: "torch" (Lloyd) or "sklearn" (minibatch), see :data:`METHODS`.
        max_frames: cluster at most this many frames (a seeded random subset).
        seed: seeds k-means, the subset and a ``random`` model.
        device: where features are made (kept as the resolved torch.device).
        progress: show progress bars on stderr.
    """

    k: int
    layer: str = "c"
    standardize: bool = False
    method: str = "torch"
    max_frames: int = 500_000
    seed: int = 0
    device: str | torch.device = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CPCSpeechError(
                f"k-means method: expected torch or sklearn, found {self.method!r}"
            )
        if self.k < 2:
            raise CPCSpeechError(f"--k: expected >= 2 units, found {self.k}")
        check_options(k=self.k, max_frames=self.max_frames, seed=self.seed)
        if self.max_frames < self.k:
            raise CPCSpeechError(
                f"--max-frames: expected at least K = {self.k} frames, found {self.max_frames}"
            )
        object.__setattr__(self, "device", resolve_device(str(self.device), "--device"))


def fit_units(
    data: EvalData,
    model_spec: str,
    out: str | os.PathLike,
    options: UnitsOptions,
) -> UnitsFitResult:
    """k-means on the frames of ``data.train`` and save the codebook; with labels, also score
    the units on ``data.test`` (see :func:`units_quality`), written to ``X.quality.json``.

    At most ``options.max_frames`` frames (a seeded random subset) are clustered.
    """
    seed = options.seed
    source = load_feature_source(model_spec, layer=options.layer, seed=seed, device=options.device)
    started = time.perf_counter()
    frames = _standardized_frames(
        source, data.train, options.standardize, options.progress, "units fit"
    )
    if len(frames) > options.max_frames:
        rng = np.random.default_rng(seed)
        frames = frames[np.sort(rng.choice(len(frames), options.max_frames, replace=False))]
    extracted = time.perf_counter()
    centroids = fit_kmeans(frames, options.k, options.method, seed)
    fitted = time.perf_counter()
    codebook = Codebook(
        torch.from_numpy(centroids), str(model_spec), source.identity,
        source.layer or options.layer, options.standardize,
        {"method": options.method, "n_frames": len(frames), "seed": seed},
    )  # fmt: skip
    path = save_codebook(codebook, out)
    result = UnitsFitResult(
        codebook, path, len(data.train), len(frames), extracted - started, fitted - extracted
    )
    if data.alignment is not None:
        result.quality = units_quality(codebook, source, data, progress=options.progress)
        write_json_atomic(path.with_suffix(".quality.json"), result.quality)
    return result


def _standardized_frames(
    source: FeatureSource,
    utterances: Sequence[Utterance],
    standardize: bool,
    progress: bool,
    description: str,
) -> np.ndarray:
    frame_set = extract_frames(source, utterances, progress=progress, description=description)
    if not standardize:
        return frame_set.features
    out = frame_set.features
    for i in range(len(utterances)):
        rows = slice(frame_set.offsets[i], frame_set.offsets[i + 1])
        out[rows] = _prepare(out[rows], True)
    return out


def _prepare(features: np.ndarray, standardize: bool) -> np.ndarray:
    """(T, D) -> (T, D); per-utterance standardisation (std floored at 1e-5) when asked."""
    if not standardize or len(features) == 0:
        return features
    mean = features.mean(0, keepdims=True)
    std = np.maximum(features.std(0, keepdims=True), 1e-5)
    return ((features - mean) / std).astype(np.float32)


def units_text(utt_id: str, units: np.ndarray, collapse: bool = False) -> str:
    """One line of ZeroSpeech / GSLM units: ``utt 12 12 45 ...`` (``collapse``: ``utt 12 45``)."""
    units = np.asarray(units)
    if collapse and len(units):
        units = units[np.concatenate([[True], units[1:] != units[:-1]])]
    return " ".join([utt_id, *map(str, units.tolist())])


@dataclass
class UnitsApplyResult:
    out: Path
    n_utterances: int
    n_frames: int
    seconds: float

    def describe(self) -> str:
        return (
            f"wrote {self.out}: {self.n_utterances} utterances, {self.n_frames} frames, "
            f"{self.seconds:.1f} s"
        )


def apply_units(
    codebook_path: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    model_spec: str | None = None,
    collapse: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    allow_commands: bool = False,
) -> UnitsApplyResult:
    """Unit sequences of audio files, folders or wav.scp files.

    ``out`` ending in ``.txt``: one ``utt u1 u2 ...`` line per input (ZeroSpeech / GSLM); any
    other ``out`` is a folder of (T,) int32 ``.npy`` arrays, one per input (``a/b.wav`` ->
    ``out/a/b.npy``; with ``collapse``, repeats are merged there too). The features come from
    the codebook's model unless ``model_spec`` names another, which must have the same weights.
    wav.scp commands and lhotse command / url sources need ``allow_commands``.
    """
    codebook = load_codebook(codebook_path)
    layer = codebook.layer if codebook.layer in ("c", "z") else "c"
    source = load_feature_source(model_spec or codebook.model, layer, seed, device)
    codebook.check_source(source)
    items = find_sources(inputs, allow_commands=allow_commands)
    _check_unique_ids(items)
    started = time.perf_counter()
    out = Path(out)
    text_mode = out.suffix == ".txt"
    lines, total = [], 0
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task("units", total=len(items))
        for item in items:
            feats = source.utterance_features(item)  # read through item.load()
            units = codebook.assign(feats)
            total += len(units)
            if text_mode:
                lines.append(units_text(item.id, units, collapse))
            else:
                if collapse and len(units):
                    units = units[np.concatenate([[True], units[1:] != units[:-1]])]
                target = out / f"{item.id}.npy"
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp.npy")
                np.save(tmp, units.astype(np.int32))
                os.replace(tmp, target)
            bar.advance(task)
    if text_mode:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, "\n".join(lines) + "\n")
    return UnitsApplyResult(out, len(items), total, time.perf_counter() - started)


def _check_unique_ids(items: Sequence[Utterance]) -> None:
    """Each output line or file is named by the utterance id: two inputs of one id would
    overwrite each other (extract refuses them too)."""
    clash = first_clash(items, lambda item: item.id)
    if clash is not None:
        earlier, item = clash
        raise CPCSpeechError(
            f"{item.label} and {earlier.label} have the same utterance id {item.id!r}; "
            "expected each id once (give them separately)"
        )


# ----- quality against phone labels -----


def purity_and_pnmi(phones: np.ndarray, units: np.ndarray) -> dict[str, float]:
    """Phone purity, cluster purity and PNMI of frame-level units (Hsu et al. 2021, HuBERT).

    With p(y, z) the joint frequency of phone y and unit z over frames: phone purity =
    sum_z max_y p(y, z); cluster purity = sum_y max_z p(y, z); PNMI = I(y; z) / H(y).

    Args:
        phones, units: (F,) int ids of the same frames.
    """
    if len(phones) != len(units) or len(phones) == 0:
        raise CPCSpeechError(
            f"units quality: expected one unit per labelled frame, found {len(units)} units and "
            f"{len(phones)} labels"
        )
    _, y = np.unique(phones, return_inverse=True)
    _, z = np.unique(units, return_inverse=True)
    joint = np.zeros((y.max() + 1, z.max() + 1))
    np.add.at(joint, (y, z), 1.0)
    joint /= joint.sum()
    p_y, p_z = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mutual = float((joint[nz] * np.log(joint[nz] / np.outer(p_y, p_z)[nz])).sum())
    entropy = float(-(p_y[p_y > 0] * np.log(p_y[p_y > 0])).sum())
    return {
        "phone_purity": float(joint.max(0).sum()),
        "cluster_purity": float(joint.max(1).sum()),
        "pnmi": mutual / entropy if entropy > 0 else 0.0,
    }


def one_hot_source(codebook: Codebook, source: FeatureSource) -> FeatureSource:
    """Features -> (T, K) one-hot rows of their units (for ABX on units)."""
    codebook.check_source(source)
    cache: dict[str, np.ndarray] = {}  # utterance id -> (T,) units: quality reads each twice

    def read(utterance: Utterance) -> np.ndarray:
        if utterance.utt_id not in cache:
            cache[utterance.utt_id] = codebook.assign(source.utterance_features(utterance))
        return np.eye(codebook.k, dtype=np.float32)[cache[utterance.utt_id]]

    return FeatureSource(
        name=f"units(K={codebook.k}):{source.name}", dim=codebook.k, extract=None,
        identity=f"units:{source.identity}", layer="units", read=read,
    )  # fmt: skip


def units_quality(
    codebook: Codebook,
    source: FeatureSource,
    data: EvalData,
    with_abx: bool = True,
    progress: bool = True,
) -> dict:
    """Purity, PNMI (all labelled frames, silence included) and ABX on one-hot units (angular)
    of ``data.test``, against ``data.alignment``."""
    if data.alignment is None:
        raise CPCSpeechError("units quality: expected phone labels (--labels), found none")
    units = one_hot_source(codebook, source)
    frame_set = extract_frames(
        units, data.test, data.alignment, progress=progress, description="units quality"
    )
    quality: dict = purity_and_pnmi(frame_set.phones, frame_set.features.argmax(1))
    quality.update(n_frames=len(frame_set.phones), n_utterances=len(data.test))
    if with_abx:
        utterances, items = abx_items(data)
        options = AbxOptions(progress=progress)
        abx: ABXResult = score_source(units, utterances, items, "units", options)
        quality.update(abx_within=abx.within, abx_across=abx.across)
    return quality
