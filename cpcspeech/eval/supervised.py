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
from cpcspeech.eval.supervised_state import (
    has_state,
    load_state,
    read_curve,
    save_state,
    write_curve,
)
from cpcspeech.files import check_writable_folder
from cpcspeech.io.alignments import label_frames
from cpcspeech.model.cpc import CPCModel
from cpcspeech.ranges import PRECISIONS
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
    # "bf16" runs the encoder under bf16 autocast (the GRU, head and loss stay in float32), about
    # twice as fast on CPUs with AMX / AVX512-BF16; may change when a saved run continues.
    precision: str = "fp32"

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
        if self.precision not in PRECISIONS:
            raise CPCSpeechError(
                f"supervised precision: expected one of {', '.join(PRECISIONS)}, "
                f"found {self.precision!r}"
            )

    def describe(self) -> str:
        return (
            f"{self.steps} Adam steps x {self.batch_size} windows of {self.window} samples, "
            f"lr {self.lr}, seed {self.seed}, encoder norm {self.norm}"
            + ("" if self.precision == "fp32" else f", encoder in {self.precision}")
        )


class _Supervised(nn.Module):
    def __init__(self, num_classes: int, seed: int, norm: str = "none") -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.cpc = CPCModel(ModelConfig(norm=norm))
            self.head = nn.Linear(self.cpc.c_dim, num_classes)

    def forward(self, wav: Tensor, bf16: bool = False) -> Tensor:
        """wav: (B, N) -> logits (B, T, K) in float32. With ``bf16`` the encoder runs under
        bf16 autocast; the GRU and the head run in float32 (as in :mod:`cpcspeech.train`)."""
        with torch.autocast(wav.device.type, dtype=torch.bfloat16, enabled=bf16):
            z = self.cpc.encoder(wav)  # (B, T, z_dim)
        with torch.autocast(wav.device.type, enabled=False):
            c, _ = self.cpc.run_context(z.float())  # (B, T, c_dim)
            return self.head(c)


def _usable(utterances, budget: SupervisedBudget) -> tuple[list[int], list[int]]:
    """(lengths in samples, indices of the utterances at least one window long)."""
    lengths = [u.measure().num_samples for u in utterances]
    usable = [i for i, n in enumerate(lengths) if n >= budget.window]
    if not usable:
        raise CPCSpeechError(
            f"supervised baseline: expected utterances of at least {budget.window} samples, "
            "found none"
        )
    return lengths, usable


def _draw_batch(task, data, budget, rng, usable, lengths, frames_per_window):
    """One training batch: wav (B, window) float32 and targets (B, T) int64 (-100: ignored).

    Each window starts on a 10 ms frame boundary so window frame t pairs with utterance label
    start/160 + t (the rule of :func:`cpcspeech.io.alignments.match_frames`)."""
    wavs, targets = [], []
    for i in rng.choice(usable, size=budget.batch_size):
        utt, num_samples = data.train[i], lengths[i]
        start = int(rng.integers(0, (num_samples - budget.window) // 160 + 1))
        wav = utt.load()[start * 160 : start * 160 + budget.window]
        target = np.full(frames_per_window, -100, dtype=np.int64)
        if task == "phone":
            labels = data.alignment[utt.utt_id][start : start + frames_per_window]
            target[: len(labels)] = labels
        else:
            count = min(frames_per_window, label_frames(num_samples) - start)
            target[:count] = data.speakers[utt.speaker]
        wavs.append(wav)
        targets.append(target)
    return torch.from_numpy(np.stack(wavs)), torch.from_numpy(np.stack(targets))


def train_supervised(
    task: str,
    data: EvalData,
    budget: SupervisedBudget,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_eval: Callable[[int, CPCModel, nn.Linear], object] | None = None,
    state_dir: str | os.PathLike | None = None,
) -> tuple[CPCModel, nn.Linear]:
    """Train a fresh CPCModel + linear head on per-frame labels (phones or the speaker) of the
    train split.

    With ``budget.eval_every``, ``on_eval(step, cpc, head)`` is called every that many steps
    before the last, with the model in eval mode (training resumes afterwards). With
    ``state_dir`` the run saves its state there after each of those calls and at the end; if it
    already holds a state of the same budget (``steps`` may differ), continues from it.

    Each step draws ``batch_size`` utterances at random and one window inside each (see
    ``_draw_batch``); frames past the end of the labels are ignored. Audio is read per window.

    Shapes: windows (batch_size, window) -> logits (batch_size, T, num_classes), T = 128 for the
    default 20480-sample window.
    """
    if task == "phone":
        labelled = data.alignment or {}
        missing = [u.utt_id for u in data.train if u.utt_id not in labelled]
        if missing:
            raise AlignmentError(
                f"supervised baseline: {len(missing)} training utterances have no phone labels, "
                f"e.g. {missing[:10]}"
            )
    lengths, usable = _usable(data.train, budget)
    model = _Supervised(num_classes(task, data), budget.seed, budget.norm).to(device)
    frames_per_window = model.cpc.num_frames(budget.window)
    optimizer = torch.optim.Adam(model.parameters(), lr=budget.lr)
    rng = np.random.default_rng(budget.seed)
    first = 1
    if state_dir is not None and has_state(state_dir):
        first = load_state(state_dir, budget, model, optimizer, rng) + 1
    model.train()
    with progress_bar(enabled=progress) as bar:
        task_id = bar.add_task(f"supervised {task}", total=budget.steps, completed=first - 1)
        for step in range(first, budget.steps + 1):
            wav_t, target_t = _draw_batch(
                task, data, budget, rng, usable, lengths, frames_per_window
            )
            logits = model(wav_t.to(device), budget.precision == "bf16")  # (B, T, K)
            loss = F.cross_entropy(
                logits.flatten(0, 1), target_t.to(device).flatten(), ignore_index=-100
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.advance(task_id)
            every = budget.eval_every
            if on_eval and every and step % every == 0 and step < budget.steps:
                model.eval()
                on_eval(step, model.cpc, model.head)
                if state_dir is not None:
                    save_state(state_dir, step, budget, model, optimizer, rng)
                model.train()
    if state_dir is not None and first <= budget.steps:
        save_state(state_dir, budget.steps, budget, model, optimizer, rng)
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
    long run shows its curve while it trains. With ``out_dir`` the JSON is rewritten after every
    point (``details["complete"]`` false until the end), so a stopped run keeps its curve, and
    the run's state is kept in ``out_dir/supervised-TASK-state/``: the same command run again
    continues from the last point (a larger ``--supervised-steps`` trains on). The model as it
    stands at the last point (encoder + GRU, without the head) is written as a model directory,
    ``out_dir/supervised-TASK-model/``, so that any evaluation that takes ``--model`` (ABX,
    units, probes on other layers) can read the supervised row too."""
    check_task(task)
    if out_dir is None:
        return run_supervised(task, data, budget, options.device, options.progress, on_point)
    check_writable_folder(out_dir)
    path = Path(out_dir) / f"probe-{task}-supervised.json"

    def point(step: int, acc: float, partial: ProbeResult) -> None:
        write_result(partial, path)
        if on_point is not None:
            on_point(step, acc)

    result = run_supervised(
        task, data, budget, options.device, options.progress, point,
        state_dir=Path(out_dir) / f"supervised-{task}-state",
        model_dir=Path(out_dir) / f"supervised-{task}-model",
    )  # fmt: skip
    write_result(result, path)
    return result


def run_supervised(
    task: str,
    data: EvalData,
    budget: SupervisedBudget,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_point: Callable[..., object] | None = None,
    state_dir: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
) -> ProbeResult:
    """Train the supervised baseline on the train list and score its own head on the test list.

    ``on_point(step, accuracy)`` hears each point of the test curve as it is measured (with
    ``state_dir``, as ``on_point(step, accuracy, partial_result)``, and the curve is kept in the
    saved state so that a resumed run reports it whole). With ``model_dir`` the model (without
    its head) is saved there as a model directory at every point, after it is scored."""
    if task == "phone" and data.alignment is None:
        raise AlignmentError("supervised phone baseline: expected phone labels, found none")
    started = time.perf_counter()
    curve: list[list[float]] = read_curve(state_dir) if state_dir is not None else []
    n_test = [0]

    def score(step: int, cpc: CPCModel, head: nn.Linear) -> None:
        """Append (step, test accuracy) to the curve."""
        source = cpc_source(cpc, f"supervised-{task}", "c")
        test_x, test_y = task_targets(
            task, split_frames(source, "test", data, None, progress), data
        )
        curve[:] = [point for point in curve if point[0] < step]
        curve.append([step, accuracy(copy.deepcopy(head).cpu().eval(), test_x, test_y)])
        n_test[0] = len(test_y)
        if model_dir is not None:
            cpc.save_pretrained(model_dir)
        if state_dir is not None:
            write_curve(state_dir, curve)
        if on_point is None:
            return
        if state_dir is None:
            on_point(*curve[-1])
        else:
            frames = cpc.num_frames(budget.window)
            partial = _result(task, data, budget, curve, (frames, n_test[0]), started, False)
            on_point(*curve[-1], partial)

    cpc, head = train_supervised(task, data, budget, device, progress, score, state_dir)
    score(budget.steps, cpc, head)
    frames = cpc.num_frames(budget.window)
    return _result(task, data, budget, curve, (frames, n_test[0]), started, complete=True)


def _result(task, data, budget, curve, counts, started, complete: bool) -> ProbeResult:
    """The Supervised cell as it stands after the curve's last point; counts = (frames per
    window, test frames)."""
    frames, n_test = counts
    step = int(curve[-1][0])
    details: dict = {"budget": budget.describe(), "n_train_frames": "frames seen in training"}
    if budget.eval_every:
        details["curve"] = [list(point) for point in curve]
    if not complete:
        details["complete"] = False
        details["steps_done"] = step
    return ProbeResult(
        task=task,
        method="Supervised",
        model=f"supervised-{task}",
        accuracy=curve[-1][1],
        n_train_frames=step * budget.batch_size * frames,
        n_test_frames=n_test,
        n_classes=num_classes(task, data),
        seconds=time.perf_counter() - started,
        details=details,
    )
