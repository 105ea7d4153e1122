"""Feature sources: what ``--model`` names (a CPC model, ``mfcc``, ``random`` or a folder of
``.npy`` files) turned into per-utterance, per-frame features; shared by probe, abx and units.
"""

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cpcspeech.errors import AlignmentError, CPCSpeechError
from cpcspeech.eval.mfcc import MFCC_DIM, mfcc_features
from cpcspeech.files import file_sha256
from cpcspeech.io.alignments import Alignment, match_frames
from cpcspeech.io.corpus import Utterance
from cpcspeech.model import random_model
from cpcspeech.model.cpc import CPCModel
from cpcspeech.model.serialization import parameters_sha256
from cpcspeech.runtime import one_line, progress_bar
from cpcspeech.weights.resolve import load_model, weights_sha256

# ----- feature sources -----


@dataclass
class FeatureSource:
    """A named function from one utterance to per-frame features.

    ``extract(wav)``: (N,) float32 at 16 kHz -> (T, dim) float32 numpy, frame t starting at
    sample 160 t. Sources that do not read audio (a folder of ``.npy``) set ``read`` instead:
    ``read(utterance)`` -> (T, dim). ``identity`` names the weights behind the features (the
    sha256 of a model's ``model.safetensors``, ``mfcc``, ...) so that saved artefacts such as a
    k-means codebook can refuse features of another model.
    """

    name: str
    dim: int
    extract: Callable[[np.ndarray], np.ndarray] | None
    identity: str = ""
    layer: str = ""
    read: Callable[[Utterance], np.ndarray] | None = None

    def utterance_features(self, utterance: Utterance) -> np.ndarray:
        """(T, dim) float32 features of one utterance."""
        if self.read is not None:
            return self.read(utterance)
        return self.extract(utterance.load())  # (N,) float32 at 16 kHz


def cpc_source(model: CPCModel, name: str, layer: str = "c", identity: str = "") -> FeatureSource:
    """Frozen CPCModel features: c_t (layer "c", the paper's probe input), z_t (layer "z") or
    one recurrent layer's output ("c1".."cN", see CPCModel.layers)."""
    if layer not in model.layers:
        raise CPCSpeechError(f"layer: expected one of {list(model.layers)}, found {layer!r}")
    model = model.eval()
    device = next(model.parameters()).device

    def extract(wav: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            feats = model.extract(torch.from_numpy(wav).to(device), layer=layer)  # (T, D)
        return feats.float().cpu().numpy()

    return FeatureSource(
        name=f"{name}:{layer}",
        dim=model.layer_dim(layer),
        extract=extract,
        identity=identity or parameters_sha256(model),
        layer=layer,
    )


def npy_folder_source(folder: str | Path) -> FeatureSource:
    """Precomputed features: one (T, D) ``.npy`` per utterance, 10 ms per row (as written by
    ``cpcspeech extract INPUT --out DIR/``).

    An utterance is found as ``UTT_ID.npy`` or, failing that, as the stem of its audio file,
    anywhere under ``folder``; a stem that occurs twice is an error when it is looked up.

    The source's identity is ``npy-sha256:`` and the sha256 of the folder's sorted relative
    ``.npy`` paths and the feature dimension: a codebook fitted on the folder applies to it
    again, and is refused for another folder (whose features may come from another model).
    """
    folder = Path(folder)
    by_stem: dict[str, list[Path]] = {}
    paths = sorted(folder.rglob("*.npy"))
    for path in paths:
        by_stem.setdefault(path.stem, []).append(path)
    if not by_stem:
        raise CPCSpeechError(f"{folder}: expected .npy feature files, found none")
    first = load_npy(paths[0], mmap_mode="r")
    if first.ndim != 2:
        raise CPCSpeechError(
            f"{folder}: expected (T, D) arrays in the .npy files, found shape {first.shape}"
        )
    dim = int(first.shape[1])

    def read(utterance: Utterance) -> np.ndarray:
        for stem in (utterance.utt_id, Path(utterance.path).stem):
            paths = by_stem.get(stem, [])
            if len(paths) > 1:
                raise CPCSpeechError(
                    f"{folder}: expected one {stem}.npy, found {len(paths)}: {paths[:3]}"
                )
            if paths:
                feats = load_npy(paths[0])
                if feats.ndim != 2 or feats.shape[1] != dim:
                    raise CPCSpeechError(
                        f"{paths[0]}: expected shape (T, {dim}), found {feats.shape}"
                    )
                return np.asarray(feats, dtype=np.float32)
        raise CPCSpeechError(
            f"{folder}: expected {utterance.utt_id}.npy for utterance {utterance.utt_id}, "
            "found none"
        )

    digest = hashlib.sha256(f"dim={dim}\n".encode())
    for path in paths:
        digest.update(
            path.relative_to(folder).as_posix().encode("utf-8", "surrogateescape") + b"\n"
        )
    return FeatureSource(
        name=f"npy:{folder.name}", dim=dim, extract=None,
        identity=f"npy-sha256:{digest.hexdigest()}", layer="npy", read=read,
    )  # fmt: skip


def load_npy(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """A feature ``.npy``; a file that is not one, or that holds Python objects (never
    unpickled), is one CPCSpeechError naming it."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise CPCSpeechError(
            f"{path}: expected a numeric .npy array, found an unreadable file ({one_line(err)})"
        ) from None


def load_feature_source(
    spec: str, layer: str = "c", seed: int = 0, device: str | torch.device = "cpu"
) -> FeatureSource:
    """``"mfcc"`` (39-d), ``"random"`` (seeded untrained CPCModel), a folder of ``.npy``
    features, or anything :func:`cpcspeech.load_model` accepts (a model or checkpoint directory,
    "default", a Hub id)."""
    if spec == "mfcc":
        return FeatureSource(
            name="mfcc", dim=MFCC_DIM, extract=mfcc_features, identity="mfcc", layer="mfcc"
        )
    if spec == "random":
        model = random_model(seed)
        return cpc_source(model.to(device), f"random(seed={seed})", layer)
    path = Path(spec)
    if path.is_dir() and not (path / "config.json").is_file() and any(path.rglob("*.npy")):
        return npy_folder_source(path)
    model, source = load_model(spec, map_location=device)  # any --model form, published too
    weights = source.checkpoint if source.kind == "cpc_audio" else source.directory
    identity = file_sha256(weights) if weights.is_file() else weights_sha256(weights)
    return cpc_source(model, str(spec), layer, identity=identity)


BASELINES = ("random", "mfcc")


def table_specs(model_spec: str | None, baselines: bool = True) -> list[str]:
    """The feature sources of a table's rows: the baselines (random init, MFCC) unless
    ``baselines`` is False, then ``model_spec`` unless it is None or already a baseline row."""
    specs = list(BASELINES) if baselines else []
    return specs + ([model_spec] if model_spec and model_spec not in specs else [])


def method_name(spec: str) -> str:
    """The row name of a ``--model`` spec in the probe and ABX tables."""
    if spec == "random":
        return "Random initialization"
    if spec == "mfcc":
        return "MFCC features"
    return f"CPC ({spec})"


# ----- per-frame feature sets -----


@dataclass
class FrameSet:
    """Frame features of a list of utterances, stored back to back.

    Attributes:
        features: (F, D) float32, utterance i's frames at rows offsets[i]:offsets[i + 1].
        phones: (F,) int64 phone ids, or None when no alignment was given.
        offsets: (U + 1,) int64 row offsets.
        utterances: the U utterances, in order.
    """

    features: np.ndarray
    phones: np.ndarray | None
    offsets: np.ndarray
    utterances: list[Utterance]

    @property
    def num_frames(self) -> int:
        return int(self.offsets[-1])

    def utterance_index(self) -> np.ndarray:
        """(F,) int64: the utterance each frame belongs to."""
        return np.repeat(np.arange(len(self.utterances)), np.diff(self.offsets))

    def utterance_means(self) -> np.ndarray:
        """(U, D) float32 mean feature of each utterance."""
        sums = np.add.reduceat(self.features, self.offsets[:-1], axis=0, dtype=np.float64)
        counts = np.maximum(np.diff(self.offsets), 1)[:, None]
        return (sums / counts).astype(np.float32)


def extract_frames(
    source: FeatureSource,
    utterances: Sequence[Utterance],
    alignment: Alignment | None = None,
    tolerance: int = 2,
    progress: bool = True,
    description: str = "features",
) -> FrameSet:
    """Stream utterances one at a time through ``source``; with labels, pair frames via
    :func:`cpcspeech.alignments.match_frames`.

    Memory is one utterance of audio plus the (F, D) float32 result; with an alignment the result
    is allocated once (label counts bound F), otherwise per-utterance arrays are joined at the end.

    Returns:
        FrameSet with F = sum over utterances of min(feature frames, label frames) (or all
        feature frames without an alignment).
    """
    utterances = list(utterances)
    if alignment is not None:
        missing = [u.utt_id for u in utterances if u.utt_id not in alignment]
        if missing:
            raise AlignmentError(
                f"{len(missing)} of {len(utterances)} utterances have no labels, e.g. "
                f"{missing[:10]}"
            )
        capacity = sum(len(alignment[u.utt_id]) for u in utterances)
        features = np.empty((capacity, source.dim), dtype=np.float32)
        phones = np.empty(capacity, dtype=np.int64)
    chunks: list[np.ndarray] = []
    offsets = np.zeros(len(utterances) + 1, dtype=np.int64)
    row = 0
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task(description, total=len(utterances))
        for i, utt in enumerate(utterances):
            feats = source.utterance_features(utt)  # (T, D)
            if alignment is not None:
                try:
                    feats, labels = match_frames(feats, alignment[utt.utt_id], tolerance)
                except AlignmentError as err:
                    raise AlignmentError(f"utterance {utt.utt_id} ({utt.path}): {err}") from err
                features[row : row + len(feats)] = feats
                phones[row : row + len(feats)] = labels
            else:
                chunks.append(np.asarray(feats, dtype=np.float32))
            row += len(feats)
            offsets[i + 1] = row
            bar.advance(task)
    if alignment is None:
        features = np.concatenate(chunks) if chunks else np.zeros((0, source.dim), dtype=np.float32)
        return FrameSet(features, None, offsets, utterances)
    return FrameSet(features[:row], phones[:row], offsets, utterances)
