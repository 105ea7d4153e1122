"""The supervised baseline of Table 1: a fresh CPCModel and a linear head trained end to end on
per-frame phone or speaker labels with a fixed budget, scored on the test split.
"""

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cpcspeech.config import NORMS, ModelConfig
from cpcspeech.errors import AlignmentError, CPCSpeechError
from cpcspeech.eval.data import EvalData
from cpcspeech.eval.features import cpc_source
from cpcspeech.eval.probes import (
    ProbeOptions,
    ProbeResult,
    accuracy,
    check_task,
    num_classes,
    split_frames,
    task_targets,
    write_result,
)
from cpcspeech.files import check_writable_folder
from cpcspeech.io.alignments import label_frames
from cpcspeech.model.cpc import CPCModel
from cpcspeech.runtime import progress_bar


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
    data: EvalData,
    budget: SupervisedBudget,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_eval: Callable[[int, CPCModel, nn.Linear], object] | None = None,
) -> tuple[CPCModel, nn.Linear]:
    """Train a fresh CPCModel + linear head on per-frame labels (phones or the speaker) of the
    train split.

    With ``budget.eval_every``, ``on_eval(step, cpc, head)`` is called every that many steps
    before the last, with the model in eval mode (training resumes afterwards).

    Each step draws ``batch_size`` utterances at random and one window inside each, starting on a
    10 ms frame boundary so window frame t pairs with utterance label start/160 + t (the rule of
    :func:`cpcspeech.alignments.match_frames`); frames past the end of the labels are ignored.
    Audio is read per window, never held for the whole set.

    Shapes: windows (batch_size, window) -> logits (batch_size, T, num_classes), T = 128 for the
    default 20480-sample window.
    """
    utterances, alignment = data.train, data.alignment
    if task == "phone":
        missing = [u.utt_id for u in utterances if alignment is None or u.utt_id not in alignment]
        if missing:
            raise AlignmentError(
                f"supervised baseline: {len(missing)} training utterances have no phone labels, "
                f"e.g. {missing[:10]}"
            )
    lengths = [u.measure().num_samples for u in utterances]
    usable = [i for i, n in enumerate(lengths) if n >= budget.window]
    if not usable:
        raise CPCSpeechError(
            f"supervised baseline: expected utterances of at least {budget.window} samples, "
            "found none"
        )
    model = _Supervised(num_classes(task, data), budget.seed, budget.norm).to(device)
    frames_per_window = model.cpc.num_frames(budget.window)
    optimizer = torch.optim.Adam(model.parameters(), lr=budget.lr)
    rng = np.random.default_rng(budget.seed)
    model.train()
    with progress_bar(enabled=progress) as bar:
        task_id = bar.add_task(f"supervised {task}", total=budget.steps)
        for step in range(1, budget.steps + 1):
            wavs, targets = [], []
            for i in rng.choice(usable, size=budget.batch_size):
                utt, num_samples = utterances[i], lengths[i]
                start = int(rng.integers(0, (num_samples - budget.window) // 160 + 1))
                wav = utt.load()[start * 160 : start * 160 + budget.window]
                target = np.full(frames_per_window, -100, dtype=np.int64)  # -100: ignored
                if task == "phone":
                    labels = alignment[utt.utt_id][start : start + frames_per_window]
                    target[: len(labels)] = labels
                else:
                    count = min(frames_per_window, label_frames(num_samples) - start)
                    target[:count] = data.speakers[utt.speaker]
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


def run_supervised_task(
    task: str,
    data: EvalData,
    budget: SupervisedBudget,
    options: ProbeOptions = ProbeOptions(),  # noqa: B008 - frozen, so one shared default is safe
    out_dir: str | os.PathLike | None = None,
    on_point: Callable[[int, float], object] | None = None,
) -> ProbeResult:
    """The supervised baseline of one task alone (the table's Supervised cell), with its test
    curve when ``budget.eval_every`` is set; written to ``out_dir/probe-TASK-supervised.json``.
    Of ``options`` only the device and the progress bar apply.

    ``on_point(step, test accuracy)`` is called as each point of the curve is measured, so a
    long run shows its curve while it trains."""
    check_task(task)
    if out_dir is not None:
        check_writable_folder(out_dir)
    result = run_supervised(task, data, budget, options.device, options.progress, on_point)
    if out_dir is not None:
        write_result(result, Path(out_dir) / f"probe-{task}-supervised.json")
    return result


def run_supervised(
    task: str,
    data: EvalData,
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
    curve: list[list[float]] = []  # [step, test accuracy]

    def score(step: int, cpc: CPCModel, head: nn.Linear) -> int:
        """Append (step, test accuracy) to the curve; return the number of test frames."""
        source = cpc_source(cpc, f"supervised-{task}", "c")
        test_x, test_y = task_targets(
            task, split_frames(source, "test", data, None, progress), data
        )
        head_cpu = copy.deepcopy(head).cpu().eval()
        curve.append([step, accuracy(head_cpu, test_x, test_y)])
        if on_point is not None:
            on_point(*curve[-1])
        return len(test_y)

    cpc, head = train_supervised(task, data, budget, device, progress, on_eval=score)
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
        n_classes=num_classes(task, data),
        seconds=time.perf_counter() - started,
        details=details,
    )
