"""Linear probes on frozen per-frame features (the CPC paper's Table 1): phone and speaker
classification for a CPC model, a random-init CPC, MFCC features and a supervised baseline.
"""

import copy
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cpcspeech.config import NORMS, ModelConfig, load_config
from cpcspeech.errors import AlignmentError, CPCSpeechError
from cpcspeech.eval.features import (
    FeatureSource,
    FrameSet,
    cpc_source,
    extract_frames,
    load_feature_source,
    progress_bar,
)
from cpcspeech.files import check_writable_folder, write_text_atomic
from cpcspeech.io.alignments import Alignment, detect_format, label_frames, read_alignment
from cpcspeech.io.audio import audio_info, load_audio
from cpcspeech.io.corpus import Utterance, find_utterances, speaker_ids
from cpcspeech.model.cpc import CPCModel
from cpcspeech.runtime import resolve_device

TASKS = ("phone", "speaker")
SPEAKER_MODES = ("frame", "utterance")


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


# ----- supervised baseline -----


@dataclass
class SupervisedBudget:
    """Fixed training budget of the supervised baseline (encoder + GRU + linear head, end to end).

    The default is deliberately small so it runs on a CPU in minutes; the paper trains to
    convergence, so this row is a lower bound unless the budget is raised.
    """

    steps: int = 100
    batch_size: int = 8
    window: int = 20480  # samples per window (1.28 s, the paper's training window)
    lr: float = 1e-3
    seed: int = 0
    # Also score the test list every this many steps (0: only at the end), to see where the
    # test accuracy stops rising; the row itself is the accuracy after ``steps``.
    eval_every: int = 0
    # The encoder's normalisation (ModelConfig.norm): "none" is the paper's model, "channel" the
    # shipped weights' shape, so the ceiling can also be read against the model users run.
    norm: str = "none"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "window"):
            if getattr(self, name) < 1:
                raise CPCSpeechError(
                    f"supervised {name}: expected >= 1, found {getattr(self, name)}"
                )
        if self.eval_every < 0:
            raise CPCSpeechError(f"supervised eval_every: expected >= 0, found {self.eval_every}")
        if not 0 < self.lr < math.inf:
            raise CPCSpeechError(f"supervised lr: expected a finite value > 0, found {self.lr}")
        if self.norm not in NORMS:
            raise CPCSpeechError(
                f"supervised norm: expected one of {', '.join(NORMS)}, found {self.norm!r}"
            )

    def describe(self) -> str:
        return (
            f"{self.steps} Adam steps x {self.batch_size} windows of {self.window} samples, "
            f"lr {self.lr}, seed {self.seed}, encoder norm {self.norm}"
        )


class _Supervised(nn.Module):
    def __init__(self, num_classes: int, seed: int, norm: str = "none") -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.cpc = CPCModel(ModelConfig(norm=norm))
            self.head = nn.Linear(self.cpc.c_dim, num_classes)

    def forward(self, wav: Tensor) -> Tensor:
        """wav: (B, N) -> logits (B, T, K)."""
        _, c = self.cpc(wav)  # (B, T, c_dim)
        return self.head(c)


def train_supervised(
    task: str,
    utterances: Sequence[Utterance],
    alignment: Alignment | None,
    num_classes: int,
    speaker_index: dict[str, int],
    budget: SupervisedBudget,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_eval: Callable[[int, CPCModel, nn.Linear], object] | None = None,
) -> tuple[CPCModel, nn.Linear]:
    """Train a fresh CPCModel + linear head on per-frame labels (phones or the speaker).

    With ``budget.eval_every``, ``on_eval(step, cpc, head)`` is called every that many steps
    before the last, with the model in eval mode (training resumes afterwards).

    Each step draws ``batch_size`` utterances at random and one window inside each, starting on a
    10 ms frame boundary so window frame t pairs with utterance label start/160 + t (the rule of
    :func:`cpcspeech.alignments.match_frames`); frames past the end of the labels are ignored.
    Audio is read per window, never held for the whole set.

    Shapes: windows (batch_size, window) -> logits (batch_size, T, num_classes), T = 128 for the
    default 20480-sample window.
    """
    if task == "phone":
        missing = [u.utt_id for u in utterances if alignment is None or u.utt_id not in alignment]
        if missing:
            raise AlignmentError(
                f"supervised baseline: {len(missing)} training utterances have no phone labels, "
                f"e.g. {missing[:10]}"
            )
    lengths = [audio_info(u.path).num_samples for u in utterances]
    usable = [i for i, n in enumerate(lengths) if n >= budget.window]
    if not usable:
        raise CPCSpeechError(
            f"supervised baseline: expected utterances of at least {budget.window} samples, "
            "found none"
        )
    model = _Supervised(num_classes, budget.seed, budget.norm).to(device)
    frames_per_window = model.cpc.num_frames(budget.window)
    optimizer = torch.optim.Adam(model.parameters(), lr=budget.lr)
    rng = np.random.default_rng(budget.seed)
    model.train()
    with progress_bar(progress) as bar:
        task_id = bar.add_task(f"supervised {task}", total=budget.steps)
        for step in range(1, budget.steps + 1):
            wavs, targets = [], []
            for i in rng.choice(usable, size=budget.batch_size):
                utt, num_samples = utterances[i], lengths[i]
                start = int(rng.integers(0, (num_samples - budget.window) // 160 + 1))
                wav = load_audio(utt.path)[start * 160 : start * 160 + budget.window]
                target = np.full(frames_per_window, -100, dtype=np.int64)  # -100: ignored
                if task == "phone":
                    labels = alignment[utt.utt_id][start : start + frames_per_window]
                    target[: len(labels)] = labels
                else:
                    count = min(frames_per_window, label_frames(num_samples) - start)
                    target[:count] = speaker_index[utt.speaker]
                wavs.append(wav)
                targets.append(target)
            wav_t = torch.from_numpy(np.stack(wavs)).to(device)  # (B, window)
            target_t = torch.from_numpy(np.stack(targets)).to(device)  # (B, T)
            logits = model(wav_t)  # (B, T, K)
            loss = F.cross_entropy(logits.flatten(0, 1), target_t.flatten(), ignore_index=-100)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.advance(task_id)
            every = budget.eval_every
            if on_eval and every and step % every == 0 and step < budget.steps:
                model.eval()
                on_eval(step, model.cpc, model.head)
                model.train()
    model.eval()
    return model.cpc, model.head


# ----- one probe, one table -----


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


@dataclass
class ProbeData:
    """Resolved inputs: train/test utterances and their labels."""

    root: Path
    train: list[Utterance]
    test: list[Utterance]
    alignment: Alignment | None
    speaker_index: dict[str, int]


def resolve_probe_data(
    data: str | os.PathLike,
    labels: str | os.PathLike | None,
    train_list: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
    label_format: str | None = None,
    phones: str | os.PathLike | None = None,
) -> ProbeData:
    """Find the corpus (a data dir / corpus root, or a training YAML's data.root), the splits
    (default ``train_split.txt`` / ``test_split.txt`` in the data dir) and read the labels.

    CTM and TextGrid labels are rasterised to ``1 + (N - 400) // 160`` frames per utterance, N read
    from the audio header.
    """
    data = Path(data)
    if data.is_file() and data.suffix.lower() in (".yaml", ".yml"):
        root = Path(load_config(data).data.root)
    else:
        root = data
    lists = []
    for given, default, option in (
        (train_list, "train_split.txt", "--train-list"),
        (test_list, "test_split.txt", "--test-list"),
    ):
        if given is None:
            if not (root / default).is_file():
                raise CPCSpeechError(f"{root}: expected {default} (or pass {option}), found none")
            given = root / default
        lists.append(given)
    train = find_utterances(root, lists[0])
    test = find_utterances(root, lists[1])
    overlap = {u.utt_id for u in train} & {u.utt_id for u in test}
    if overlap:
        raise CPCSpeechError(
            f"train and test lists share {len(overlap)} utterances, e.g. {sorted(overlap)[:5]}"
        )
    alignment = None
    if labels is not None:
        fmt = label_format or detect_format(labels)
        num_frames = None
        if fmt in ("ctm", "textgrid"):
            num_frames = {
                u.utt_id: label_frames(audio_info(u.path).num_samples) for u in train + test
            }
        alignment = read_alignment(labels, fmt, phones=phones, num_frames=num_frames)
    return ProbeData(root, train, test, alignment, speaker_ids(train + test))


FeatureCache = dict[tuple[str, str], FrameSet]


def _frames(
    source: FeatureSource,
    split: str,
    data: ProbeData,
    cache: FeatureCache | None,
    progress: bool,
) -> FrameSet:
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


def _task_targets(task: str, frames: FrameSet, data: ProbeData, mode: str):
    """(X, y) of one split: per-frame features, or per-utterance means in utterance mode."""
    speakers = np.asarray([data.speaker_index[u.speaker] for u in frames.utterances])
    if task == "phone":
        return frames.features, frames.phones
    if mode == "utterance":
        return frames.utterance_means(), speakers
    return frames.features, speakers[frames.utterance_index()]


def probe_source(
    task: str,
    source: FeatureSource,
    data: ProbeData,
    method: str,
    hidden: int = 0,
    epochs: int = 10,
    speaker_mode: str = "frame",
    seed: int = 0,
    cache: FeatureCache | None = None,
    progress: bool = True,
) -> ProbeResult:
    """Extract (or reuse) features of both splits, train the probe on train, score on test."""
    _check_task(task, speaker_mode)
    if task == "phone" and data.alignment is None:
        raise AlignmentError("phone probe: expected phone labels (--labels), found none")
    started = time.perf_counter()
    train_x, train_y = _task_targets(
        task, _frames(source, "train", data, cache, progress), data, speaker_mode
    )
    test_x, test_y = _task_targets(
        task, _frames(source, "test", data, cache, progress), data, speaker_mode
    )
    num_classes = data.alignment.num_classes if task == "phone" else len(data.speaker_index)
    fitted = train_probe(train_x, train_y, num_classes, hidden=hidden, epochs=epochs, seed=seed)
    return ProbeResult(
        task=task,
        method=method,
        model=source.name,
        accuracy=accuracy(fitted, test_x, test_y),
        n_train_frames=len(train_y),
        n_test_frames=len(test_y),
        n_classes=num_classes,
        seconds=time.perf_counter() - started,
        details={
            "probe": f"mlp({hidden})" if hidden else "linear",
            "epochs": epochs,
            "speaker_mode": speaker_mode if task == "speaker" else None,
            "features": f"{source.dim}-d",
        },
    )


def run_probe(
    task: str,
    data: str | os.PathLike,
    labels: str | os.PathLike | None,
    model_spec: str,
    train_list: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
    label_format: str | None = None,
    phones: str | os.PathLike | None = None,
    layer: str = "c",
    hidden: int = 0,
    epochs: int = 10,
    speaker_mode: str = "frame",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    out_dir: str | os.PathLike | None = None,
) -> ProbeResult:
    """Probe one feature source on one task ("phone" or "speaker").

    ``model_spec``: "mfcc", "random" (seeded) or a CPCModel directory / name. Speaker labels
    come from each utterance's speaker; with phone labels present the speaker task uses the same
    (label-paired) frames as the phone task. With ``out_dir``, the result is also written to
    ``out_dir/probe-TASK-MODEL.json`` (atomically; MODEL is the spec's last path component).
    """
    _check_task(task, speaker_mode)
    _check_options(layer, hidden, epochs, device, out_dir)
    probe_data = resolve_probe_data(data, labels, train_list, test_list, label_format, phones)
    source = load_feature_source(model_spec, layer=layer, seed=seed, device=device)
    result = probe_source(
        task,
        source,
        probe_data,
        _method_name(model_spec),
        hidden,
        epochs,
        speaker_mode,
        seed,
        progress=progress,
    )
    if out_dir is not None:
        name = Path(str(model_spec).rstrip("/\\")).name or "model"
        _write_result(result, Path(out_dir) / f"probe-{task}-{name}.json")
    return result


def _write_result(result: ProbeResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    result.details["output"] = str(path)
    write_text_atomic(path, json.dumps(result.to_dict(), indent=2) + "\n")


def run_supervised_task(
    task: str,
    data: str | os.PathLike,
    labels: str | os.PathLike | None,
    budget: SupervisedBudget,
    train_list: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
    label_format: str | None = None,
    phones: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    out_dir: str | os.PathLike | None = None,
    on_point: Callable[[int, float], object] | None = None,
) -> ProbeResult:
    """The supervised baseline of one task alone (the table's Supervised cell), with its test
    curve when ``budget.eval_every`` is set; written to ``out_dir/probe-TASK-supervised.json``.

    ``on_point(step, test accuracy)`` is called as each point of the curve is measured, so a
    long run shows its curve while it trains."""
    _check_task(task, "frame")
    _check_options("c", 0, 1, device, out_dir)
    probe_data = resolve_probe_data(data, labels, train_list, test_list, label_format, phones)
    result = run_supervised(task, probe_data, budget, device, progress, on_point)
    if out_dir is not None:
        _write_result(result, Path(out_dir) / f"probe-{task}-supervised.json")
    return result


def run_supervised(
    task: str,
    data: ProbeData,
    budget: SupervisedBudget,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_point: Callable[[int, float], object] | None = None,
) -> ProbeResult:
    """Train the supervised baseline on the train list and score its own head on the test list
    (``on_point(step, accuracy)`` hears each point of the test curve as it is measured)."""
    if task == "phone" and data.alignment is None:
        raise AlignmentError("supervised phone baseline: expected phone labels, found none")
    started = time.perf_counter()
    num_classes = data.alignment.num_classes if task == "phone" else len(data.speaker_index)
    curve: list[list[float]] = []  # [step, test accuracy]

    def score(step: int, cpc: CPCModel, head: nn.Linear) -> int:
        """Append (step, test accuracy) to the curve; return the number of test frames."""
        source = cpc_source(cpc, f"supervised-{task}", "c")
        test_x, test_y = _task_targets(
            task, _frames(source, "test", data, None, progress), data, "frame"
        )
        head_cpu = copy.deepcopy(head).cpu().eval()
        curve.append([step, accuracy(head_cpu, test_x, test_y)])
        if on_point is not None:
            on_point(*curve[-1])
        return len(test_y)

    cpc, head = train_supervised(
        task, data.train, data.alignment, num_classes, data.speaker_index, budget, device,
        progress, on_eval=score,
    )  # fmt: skip
    n_test = score(budget.steps, cpc, head)
    details = {"budget": budget.describe(), "n_train_frames": "frames seen in training"}
    if budget.eval_every:
        details["curve"] = curve
    return ProbeResult(
        task=task,
        method="Supervised",
        model=f"supervised-{task}",
        accuracy=curve[-1][1],
        n_train_frames=budget.steps * budget.batch_size * cpc.num_frames(budget.window),
        n_test_frames=n_test,
        n_classes=num_classes,
        seconds=time.perf_counter() - started,
        details=details,
    )


def run_table(
    data: str | os.PathLike,
    labels: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_spec: str | None = None,
    train_list: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
    label_format: str | None = None,
    phones: str | os.PathLike | None = None,
    layer: str = "c",
    hidden: int = 0,
    epochs: int = 10,
    speaker_mode: str = "frame",
    seed: int = 0,
    supervised: SupervisedBudget | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    baselines: bool = True,
) -> tuple[list[ProbeResult], str]:
    """All rows of Table 1 for both tasks: Random initialization and MFCC features (unless
    ``baselines`` is False), CPC (when ``model_spec`` is given) and Supervised (when a budget is
    given).

    Features are extracted once per (source, split) and reused by both tasks. Writes
    ``out_dir/table.md`` and ``out_dir/table.json`` atomically.

    Returns:
        the results and the markdown table.
    """
    _check_task(TASKS[0], speaker_mode)
    _check_options(layer, hidden, epochs, device, out_dir)
    probe_data = resolve_probe_data(data, labels, train_list, test_list, label_format, phones)
    specs = (["random", "mfcc"] if baselines else []) + ([model_spec] if model_spec else [])
    if not specs and supervised is None:
        raise CPCSpeechError(
            "probe table without baselines: expected --model or --supervised-steps, found neither"
        )
    results: list[ProbeResult] = []
    for spec in specs:
        cache: FeatureCache = {}  # one source's features at a time bounds memory
        source = load_feature_source(spec, layer=layer, seed=seed, device=device)
        for task in TASKS:
            results.append(
                probe_source(
                    task,
                    source,
                    probe_data,
                    _method_name(spec),
                    hidden,
                    epochs,
                    speaker_mode,
                    seed,
                    cache,
                    progress,
                )
            )
    if supervised is not None:
        for task in TASKS:
            results.append(run_supervised(task, probe_data, supervised, device, progress))
    table = format_table(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "table.md", table)
    write_text_atomic(
        out_dir / "table.json",
        json.dumps(
            {
                "data": str(probe_data.root),
                "labels": str(labels),
                "n_train_utterances": len(probe_data.train),
                "n_test_utterances": len(probe_data.test),
                "results": [r.to_dict() for r in results],
            },
            indent=2,
        )
        + "\n",
    )
    return results, table


def format_table(results: Sequence[ProbeResult]) -> str:
    """Markdown in the shape of the paper's Table 1: Method | Phone | Speaker (accuracy, %)."""
    rows: dict[str, dict[str, float]] = {}
    for r in results:
        rows.setdefault(r.method, {})[r.task] = r.accuracy
    lines = [
        "| Method | Phone classification | Speaker classification |",
        "|---|---|---|",
    ]
    for method, cells in rows.items():
        phone, speaker = (
            f"{100 * cells[t]:.1f}" if t in cells else "-" for t in ("phone", "speaker")
        )
        lines.append(f"| {method} | {phone} | {speaker} |")
    return "\n".join(lines) + "\n"


# ----- helpers -----


def _method_name(spec: str) -> str:
    if spec == "random":
        return "Random initialization"
    if spec == "mfcc":
        return "MFCC features"
    return f"CPC ({spec})"


def _check_task(task: str, speaker_mode: str) -> None:
    if task not in TASKS:
        raise CPCSpeechError(f"probe task: expected one of {', '.join(TASKS)}, found {task!r}")
    if speaker_mode not in SPEAKER_MODES:
        raise CPCSpeechError(
            f"speaker mode: expected one of {', '.join(SPEAKER_MODES)}, found {speaker_mode!r}"
        )


def _check_options(
    layer: str, hidden: int, epochs: int, device: str | torch.device, out_dir: object
) -> None:
    """Options that used to be ignored or silently clamped, checked before any work (the layer
    name is checked against the model itself when its features are made: c, z or c1..cN)."""
    if not re.fullmatch(r"c\d*|z", layer):
        raise CPCSpeechError(f"--layer: expected c, z or c1..cN, found {layer!r}")
    if hidden < 0:
        raise CPCSpeechError(f"--hidden: expected 0 (linear) or a width >= 1, found {hidden}")
    if epochs < 1:
        raise CPCSpeechError(f"--epochs: expected >= 1, found {epochs}")
    if not isinstance(device, torch.device):
        resolve_device(device)
    if out_dir is not None:
        check_writable_folder(out_dir)
