"""Linear probes on frozen per-frame features (the CPC paper's Table 1): phone and speaker
classification of a feature source (a CPC model, a random-init CPC, MFCC features, .npy files).
The supervised baseline is in :mod:`cpcspeech.eval.supervised`, the table in
:mod:`cpcspeech.eval.table`.
"""

import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cpcspeech.config import check_options
from cpcspeech.errors import AlignmentError, CPCSpeechError
from cpcspeech.eval.data import EvalData
from cpcspeech.eval.features import (
    FeatureSource,
    FrameSet,
    extract_frames,
    load_feature_source,
    method_name,
)
from cpcspeech.files import check_writable_folder, write_json_atomic
from cpcspeech.runtime import resolve_device

TASKS = ("phone", "speaker")
# What the speaker probe classifies: each frame (the paper) or each utterance's mean feature.
SPEAKER_PROBE_MODES = ("frame", "utterance")


@dataclass(frozen=True)
class ProbeOptions:
    """How a probe is trained, checked when built.

    Attributes:
        layer: the feature layer, "c" (the paper's), "z" or "c1".."cN".
        hidden: 0 for a linear probe, else the width of a one-hidden-layer MLP.
        epochs: passes over the training frames (Adam, cosine learning rate).
        speaker_mode: one of :data:`SPEAKER_PROBE_MODES`.
        seed: seeds the probe and a ``random`` model.
        device: where features are made ("auto", "cpu", "cuda", "cuda:N" or a torch.device;
            kept as the resolved torch.device).
        progress: show progress bars on stderr.
    """

    layer: str = "c"
    hidden: int = 0
    epochs: int = 10
    speaker_mode: str = "frame"
    seed: int = 0
    device: str | torch.device = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        # Options that used to be ignored or silently clamped, checked before any work (the
        # layer name is checked against the model itself when its features are made).
        if self.speaker_mode not in SPEAKER_PROBE_MODES:
            raise CPCSpeechError(
                f"speaker mode: expected one of {', '.join(SPEAKER_PROBE_MODES)}, found "
                f"{self.speaker_mode!r}"
            )
        if not re.fullmatch(r"c\d*|z", self.layer):
            raise CPCSpeechError(f"--layer: expected c, z or c1..cN, found {self.layer!r}")
        if self.hidden < 0:
            raise CPCSpeechError(
                f"--hidden: expected 0 (linear) or a width >= 1, found {self.hidden}"
            )
        if self.epochs < 1:
            raise CPCSpeechError(f"--epochs: expected >= 1, found {self.epochs}")
        check_options(hidden=self.hidden, epochs=self.epochs, seed=self.seed)
        # frozen: the checked device replaces the name ("auto" -> cuda:LOCAL_RANK or cpu)
        object.__setattr__(self, "device", resolve_device(str(self.device), "--device"))


# ----- the probe classifier -----


class Probe(nn.Module):
    """Standardise with train statistics, then a linear layer (or a one-hidden-layer MLP).

    forward: x (B, D) -> logits (B, K).
    """

    def __init__(
        self, mean: np.ndarray, std: np.ndarray, num_classes: int, hidden: int = 0
    ) -> None:
        super().__init__()
        dim = mean.shape[0]
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_std", torch.as_tensor(1.0 / std, dtype=torch.float32))
        if hidden > 0:
            self.net = nn.Sequential(
                nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
            )
        else:
            self.net = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) * self.inv_std)


def feature_stats(features: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (float64 accumulation, chunked) of (F, D) features; std floored at 1e-6."""
    if features.shape[0] == 0:
        raise CPCSpeechError("probe: expected training frames, found none")
    total = np.zeros(features.shape[1])
    total_sq = np.zeros(features.shape[1])
    for start in range(0, features.shape[0], chunk):
        block = features[start : start + chunk].astype(np.float64)
        total += block.sum(0)
        total_sq += (block * block).sum(0)
    mean = total / features.shape[0]
    var = np.maximum(total_sq / features.shape[0] - mean * mean, 0.0)
    return mean, np.maximum(np.sqrt(var), 1e-6)


def train_probe(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    hidden: int = 0,
    epochs: int = 10,
    batch_size: int = 1024,
    lr: float = 2e-3,
    weight_decay: float = 1e-5,
    seed: int = 0,
    min_steps: int = 1000,
    num_threads: int | None = 1,
) -> Probe:
    """Multinomial logistic regression (or MLP) on standardised features with Adam.

    Minibatches follow a seeded permutation per epoch, the learning rate decays by a cosine to 0
    over a fixed number of steps, max(epochs x batches per epoch, min_steps) (small sets, such as
    per-utterance means, get more epochs), and weight decay is a small L2 penalty; so the result
    only depends on the data and the seed.

    Args:
        features: (F, D) float32, not modified.
        labels: (F,) int class ids in [0, num_classes).
        num_threads: torch intra-op threads while training (restored afterwards). The probe's
            matmuls are small, so one thread avoids the synchronisation cost that made 2 threads
            10x slower per step on a shared 2-core machine; None keeps the current setting.
    """
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train_probe(
            features, labels, num_classes, hidden, epochs, batch_size, lr, weight_decay, seed,
            min_steps,
        )  # fmt: skip
    finally:
        torch.set_num_threads(previous_threads)


def _train_probe(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    hidden: int,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    min_steps: int,
) -> Probe:
    if len(features) != len(labels):
        raise CPCSpeechError(
            f"probe: expected one label per frame, found {len(features)} frames and "
            f"{len(labels)} labels"
        )
    mean, std = feature_stats(features)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = Probe(mean, std, num_classes, hidden)
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(len(features) / batch_size))
    total_steps = max(epochs * steps_per_epoch, min_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)),
    )
    probe.train()
    step = 0
    while step < total_steps:
        order = torch.randperm(len(features), generator=generator).numpy()
        for start in range(0, len(order), batch_size):
            if step == total_steps:
                break
            step += 1
            index = np.sort(order[start : start + batch_size])  # sorted rows gather faster
            x = torch.from_numpy(features[index])  # (B, D)
            loss = F.cross_entropy(probe(x), labels_t[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return probe.eval()


@torch.inference_mode()
def predict(probe: nn.Module, features: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """(F, D) features -> (F,) int64 predicted classes, computed in chunks."""
    out = [
        probe(torch.from_numpy(np.ascontiguousarray(features[s : s + chunk]))).argmax(-1).numpy()
        for s in range(0, len(features), chunk)
    ]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def accuracy(probe: nn.Module, features: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of frames whose predicted class equals the label."""
    if len(labels) == 0:
        raise CPCSpeechError("probe: expected test frames, found none")
    return float(np.mean(predict(probe, features) == np.asarray(labels)))


# ----- one probe -----


@dataclass
class ProbeResult:
    """One cell of Table 1."""

    task: str
    method: str
    model: str
    accuracy: float
    n_train_frames: int
    n_test_frames: int
    n_classes: int
    seconds: float
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line: the accuracy, the method and the counts behind it."""
        return (
            f"{self.task} accuracy {100 * self.accuracy:.1f}% ({self.method}, "
            f"{self.n_classes} classes, {self.n_train_frames} train / {self.n_test_frames} "
            f"test samples, {self.seconds:.0f} s)"
        )


FeatureCache = dict[tuple[str, str], FrameSet]


def split_frames(
    source: FeatureSource,
    split: str,
    data: EvalData,
    cache: FeatureCache | None = None,
    progress: bool = True,
) -> FrameSet:
    """Features of one split ("train" or "test"), paired with the labels when there are any;
    kept in ``cache`` under (source name, split) and reused from it."""
    key = (source.name, split)
    if cache is not None and key in cache:
        return cache[key]
    utterances = data.train if split == "train" else data.test
    frames = extract_frames(
        source, utterances, data.alignment, progress=progress, description=f"{source.name} {split}"
    )
    if cache is not None:
        cache[key] = frames
    return frames


def task_targets(
    task: str, frames: FrameSet, data: EvalData, speaker_mode: str = "frame"
) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of one split: (F, D) per-frame features and (F,) phone or speaker ids, or in the
    speaker task's utterance mode (U, D) per-utterance means and (U,) speaker ids."""
    speakers = np.asarray([data.speakers[u.speaker] for u in frames.utterances])
    if task == "phone":
        return frames.features, frames.phones
    if speaker_mode == "utterance":
        return frames.utterance_means(), speakers
    return frames.features, speakers[frames.utterance_index()]


def num_classes(task: str, data: EvalData) -> int:
    """Phone classes of the alignment, or speakers of both splits."""
    return data.alignment.num_classes if task == "phone" else len(data.speakers)


def probe_source(
    task: str,
    source: FeatureSource,
    data: EvalData,
    method: str,
    options: ProbeOptions = ProbeOptions(),  # noqa: B008 - frozen, so one shared default is safe
    cache: FeatureCache | None = None,
) -> ProbeResult:
    """Extract (or reuse) features of both splits, train the probe on train, score on test."""
    check_task(task)
    if task == "phone" and data.alignment is None:
        raise AlignmentError("phone probe: expected phone labels (--labels), found none")
    started = time.perf_counter()
    mode, progress = options.speaker_mode, options.progress
    train_x, train_y = task_targets(
        task, split_frames(source, "train", data, cache, progress), data, mode
    )
    test_x, test_y = task_targets(
        task, split_frames(source, "test", data, cache, progress), data, mode
    )
    classes = num_classes(task, data)
    fitted = train_probe(
        train_x, train_y, classes, hidden=options.hidden, epochs=options.epochs, seed=options.seed
    )
    return ProbeResult(
        task=task,
        method=method,
        model=source.name,
        accuracy=accuracy(fitted, test_x, test_y),
        n_train_frames=len(train_y),
        n_test_frames=len(test_y),
        n_classes=classes,
        seconds=time.perf_counter() - started,
        details={
            "probe": f"mlp({options.hidden})" if options.hidden else "linear",
            "epochs": options.epochs,
            "speaker_mode": mode if task == "speaker" else None,
            "features": f"{source.dim}-d",
        },
    )


def run_probe(
    task: str,
    data: EvalData,
    model_spec: str,
    options: ProbeOptions = ProbeOptions(),  # noqa: B008 - frozen, so one shared default is safe
    out_dir: str | os.PathLike | None = None,
) -> ProbeResult:
    """Probe one feature source on one task ("phone" or "speaker").

    ``model_spec``: "mfcc", "random" (seeded) or a CPCModel directory / name. Speaker labels
    come from each utterance's speaker; with phone labels present the speaker task uses the same
    (label-paired) frames as the phone task. With ``out_dir``, the result is also written to
    ``out_dir/probe-TASK-MODEL.json`` (atomically; MODEL is the spec's last path component).
    """
    check_task(task)
    if out_dir is not None:
        check_writable_folder(out_dir)
    source = load_feature_source(
        model_spec, layer=options.layer, seed=options.seed, device=options.device
    )
    result = probe_source(task, source, data, method_name(model_spec), options)
    if out_dir is not None:
        name = Path(str(model_spec).rstrip("/\\")).name or "model"
        write_result(result, Path(out_dir) / f"probe-{task}-{name}.json")
    return result


def write_result(result: ProbeResult, path: Path) -> None:
    """One result as JSON (atomically); its path is recorded in ``details["output"]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    result.details["output"] = str(path)
    write_json_atomic(path, result.to_dict())


def check_task(task: str) -> None:
    if task not in TASKS:
        raise CPCSpeechError(f"probe task: expected one of {', '.join(TASKS)}, found {task!r}")
