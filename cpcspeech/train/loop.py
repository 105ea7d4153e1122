"""The CPC training loop: Adam on InfoNCE, validation, atomic checkpoints, exact resume, DDP.

One process per GPU under ``torchrun``; each process draws negatives from its own batch only,
as in the paper (section 3.1). A killed run resumed with ``resume=True`` repeats the same losses.
The loop's named steps follow in the order they run; ``train`` at the end joins them.
"""

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import MofNCompleteColumn
from torch import Tensor, nn

from cpcspeech.config import Config, config_to_dict, save_config
from cpcspeech.model.cpc import CPCModel
from cpcspeech.model.serialization import load_state_strict
from cpcspeech.runtime import cpu_lacks_bf16, distributed_env, progress_bar, resolve_device
from cpcspeech.train.checkpoints import (
    LoadedCheckpoint,
    TrainingError,
    check_resumable,
    checkpoint_name,
    clean_temporaries,
    list_checkpoints,
    newest_verified_checkpoint,
    prune_checkpoints,
    restore_best_file,
    write_best_file,
    write_checkpoint,
)
from cpcspeech.train.objective import (
    CPCObjective,
    check_window,
    make_objective,
    make_optimizer,
    step_seed,
    validate,
)
from cpcspeech.train.runlog import RunLog, log_record
from cpcspeech.train.state import TrainProgress, rng_state, set_rng_state
from cpcspeech.train.windows import (
    CorpusStats,
    WindowBatch,
    WindowCorpus,
    WindowSampler,
    check_batching,
    corpus_stats,
    fixed_batches,
    load_split,
    make_augmenter,
    make_loader,
)

VALID_SEED_OFFSET = 7_919  # the validation windows' plan seed is data.seed + this
Say = Callable[..., None]  # console.print on rank 0, a no-op elsewhere


@dataclass
class TrainResult:
    """What a finished (or already complete) run reports."""

    out_dir: Path
    step: int
    train_loss: float
    valid_loss: float | None
    best_checkpoint: str
    audio_seconds: float
    wall_seconds: float
    is_main: bool = True  # False on ranks > 0 under DDP (they print nothing)


# ----- before the first step -----
@dataclass
class _Processes:
    """Where this process sits: DDP rank and world, its device, and whether it writes."""

    rank: int
    world_size: int
    device: torch.device
    is_main: bool


def _start_processes(cfg: Config) -> _Processes:
    """Rank and world from torchrun's environment; joins the process group when W > 1."""
    env = distributed_env()
    device = resolve_device(cfg.train.device, option="train.device")
    if env.world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Processes(env.rank, env.world_size, device, env.rank == 0)


def _find_start(
    out_dir: Path, cfg: Config, resume: bool, say: Say, is_main: bool
) -> LoadedCheckpoint | None:
    """The newest checkpoint that verifies, read, to resume from; or None. Refuses to overwrite
    a run, and to resume with a config that differs beyond RESUMABLE_CHANGES."""
    checkpoints = list_checkpoints(out_dir)
    if resume and checkpoints:
        start = newest_verified_checkpoint(checkpoints, say, move_aside=is_main)
        if start is None:
            raise TrainingError(
                f"cannot resume: none of the {len(checkpoints)} checkpoint(s) in "
                f"{out_dir / 'checkpoints'} verifies (moved aside as *.corrupt); run again to "
                "start from step 0, or choose another train.out_dir"
            )
        check_resumable(start.path, start.config, cfg)
        return start
    if resume:
        say(f"[yellow]no checkpoint in {out_dir}/checkpoints; starting from step 0[/]")
    elif checkpoints:
        raise TrainingError(
            f"{out_dir} already holds checkpoints (latest {checkpoints[-1].name}); pass --resume "
            "to continue, or choose another train.out_dir"
        )
    return None


def _load_data(cfg: Config) -> tuple[WindowCorpus, list[WindowBatch]]:
    """The training corpus and the fixed validation batches (empty without a valid list)."""
    train_corpus = load_split(cfg.data, cfg.data.train_list, sample_rate=cfg.model.sample_rate)
    check_batching(cfg.data, len(train_corpus.speaker_index))
    valid_batches: list[WindowBatch] = []
    if cfg.data.valid_list and cfg.train.valid_batches > 0:
        valid_corpus = load_split(cfg.data, cfg.data.valid_list, sample_rate=cfg.model.sample_rate)
        valid_batches = fixed_batches(
            valid_corpus,
            cfg.data.batch_size,
            cfg.train.valid_batches,
            cfg.data.seed + VALID_SEED_OFFSET,
            cfg.data.speakers_per_batch,
        )
    return train_corpus, valid_batches


def _restore(
    start: LoadedCheckpoint,
    objective: CPCObjective,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
) -> TrainProgress:
    """Load weights, optimiser, scheduler and RNG from a checkpoint; return the loop's progress."""
    load_state_strict(objective.model, start.model_state, str(start.path))
    load_state_strict(objective.loss, start.heads_state, str(start.path))
    state = start.trainer_state
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return TrainProgress.from_state(state)


def _init_from_model(cfg: Config, model: CPCModel, say: Say) -> None:
    """Copy a trained model's encoder and context into ``model`` (``train.init_from``)."""
    from cpcspeech.weights.resolve import load_model

    trained, source = load_model(cfg.train.init_from)
    wanted, found = config_to_dict(cfg.model), config_to_dict(trained.config)
    diff = [k for k in wanted if wanted[k] != found.get(k)]
    if diff:
        detail = ", ".join(
            f"model.{k}: expected {wanted[k]!r}, found {found.get(k)!r}" for k in diff
        )
        raise TrainingError(
            f"train.init_from {cfg.train.init_from!r}: its model config differs from this "
            f"run's in {detail}; set the run's model section to match"
        )
    load_state_strict(model, trained.state_dict(), f"train.init_from {cfg.train.init_from!r}")
    say(f"encoder and context initialised from {source.kind} {source.directory}; heads fresh")


class _Bar:
    """The rich progress bar on a terminal: steps done of train.max_steps and the last log."""

    def __init__(self, console: Console, max_steps: int, step: int) -> None:
        self.bar = progress_bar(
            MofNCompleteColumn(), "{task.fields[info]}", transient=False, console=console
        )
        self.task = self.bar.add_task("train", total=max_steps, completed=step, info="")
        self.bar.start()

    def update(self, step: int, info: str | None = None) -> None:
        fields = {} if info is None else {"info": info}
        self.bar.update(self.task, completed=step, **fields)

    def stop(self) -> None:
        self.bar.stop()


@dataclass
class _Run:
    """One process's training run: what the steps below share."""

    cfg: Config
    procs: _Processes
    out_dir: Path
    console: Console
    objective: CPCObjective
    model_for_step: nn.Module  # the objective, or DDP around it
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    progress: TrainProgress
    valid_batches: list[WindowBatch]
    run_log: RunLog | None = None
    bar: _Bar | None = None


def _build_run(
    cfg: Config,
    procs: _Processes,
    out_dir: Path,
    console: Console,
    start: LoadedCheckpoint | None,
    valid_batches: list[WindowBatch],
    say: Say,
) -> _Run:
    """The objective, its optimiser and the progress: restored from ``start``, or fresh (with
    ``train.init_from`` copied in); wrapped in DDP when W > 1."""
    objective = make_objective(cfg).to(procs.device)
    optimizer, scheduler = make_optimizer(cfg.optim, objective)
    progress = TrainProgress(accuracy_sum=[0.0] * cfg.loss.prediction_steps)
    if start is not None:
        progress = _restore(start, objective, optimizer, scheduler)
    elif cfg.train.init_from:
        _init_from_model(cfg, objective.model, say)
    model_for_step: nn.Module = objective
    if procs.world_size > 1:
        device_ids = [procs.device.index] if procs.device.type == "cuda" else None
        model_for_step = nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)
    objective.train()
    return _Run(
        cfg,
        procs,
        out_dir,
        console,
        objective,
        model_for_step,
        optimizer,
        scheduler,
        progress,
        valid_batches,
    )


def _announce(run: _Run, stats: CorpusStats, say: Say) -> None:
    cfg, procs = run.cfg, run.procs
    say(f"outputs -> {run.out_dir} (config.yaml, log.jsonl, log.csv, checkpoints/)")
    say(
        f"train: {stats.num_utterances} utterances, {stats.num_speakers} speakers, "
        f"{stats.hours:.2f} h; {stats.num_short} shorter than {cfg.data.window} samples "
        f"({stats.short_policy}ped); {stats.windows_per_epoch} windows and "
        f"{stats.batches_per_epoch} batches of {cfg.data.batch_size} per process per epoch"
        f"; valid: {len(run.valid_batches)} fixed batches; device {procs.device}, "
        f"world {procs.world_size}"
    )
    if cfg.augment.enabled:
        say(f"augment: side {cfg.augment.side}, {cfg.data.num_workers} loader worker(s)")
    if cfg.train.budget_seconds > 0:
        say(f"budget: {cfg.train.budget_seconds:.0f} {cfg.train.budget_clock} seconds")
    if procs.device.type == "cpu" and cfg.train.precision == "bf16" and cpu_lacks_bf16():
        say(
            "[yellow]warning: train.precision is bf16, but this CPU lists neither avx512_bf16 "
            "nor amx_bf16 in /proc/cpuinfo, so bf16 is emulated (a training step took 9x "
            "fp32's time on one such CPU); set train.precision=fp32[/]"
        )


def _open_outputs(run: _Run, start: LoadedCheckpoint | None, stats: CorpusStats, say: Say) -> None:
    """Rank 0: clear half-written checkpoints, write config.yaml, say what runs, make best.txt
    agree with a resumed state, and open the run log (cut back to the resumed step)."""
    clean_temporaries(run.out_dir)
    save_config(run.cfg, run.out_dir / "config.yaml")
    _announce(run, stats, say)
    if start is not None:
        say(
            f"resuming from {start.path.name} (epoch {run.progress.epoch}, batch "
            f"{run.progress.batch_index})"
        )
        restore_best_file(run.out_dir, run.progress.best_name)
    cfg = run.cfg
    run.run_log = RunLog(
        run.out_dir, cfg.loss.prediction_steps, cfg.train.tensorboard, run.progress.step
    )


# ----- each step -----
class _SessionClock:
    """This session's wall and CPU time and audio, added to the resumed run's totals."""

    def __init__(self, progress: TrainProgress, audio_per_step: float) -> None:
        self.start, self.cpu = time.perf_counter(), time.process_time()
        self.wall_at_start, self.cpu_at_start = progress.wall_seconds, progress.cpu_seconds
        self.audio_per_step = audio_per_step  # seconds of audio one step reads, all ranks
        self.audio = 0.0
        self.elapsed = 0.0

    def tick(self, progress: TrainProgress) -> None:
        """One more step: count its audio and bring the progress' clocks up to now."""
        progress.audio_seconds += self.audio_per_step
        self.audio += self.audio_per_step
        self.elapsed = time.perf_counter() - self.start
        progress.wall_seconds = self.wall_at_start + self.elapsed
        progress.cpu_seconds = self.cpu_at_start + time.process_time() - self.cpu

    @property
    def speed(self) -> float:
        """Seconds of audio per second this session."""
        return self.audio / max(self.elapsed, 1e-9)


def _budget_spent(run: _Run) -> bool:
    """True once the run has used ``train.budget_seconds`` (agreed across DDP ranks)."""
    cfg, progress = run.cfg, run.progress
    if cfg.train.budget_seconds <= 0:
        return False
    used = progress.cpu_seconds if cfg.train.budget_clock == "cpu" else progress.wall_seconds
    spent = torch.tensor([1.0 if used >= cfg.train.budget_seconds else 0.0])
    if run.procs.world_size > 1:
        spent = spent.to(run.procs.device)
        dist.all_reduce(spent, op=dist.ReduceOp.MAX)
    return bool(spent.item() > 0)


def _is_finished(run: _Run) -> bool:
    return run.progress.step >= run.cfg.train.max_steps or _budget_spent(run)


def _train_step(run: _Run, batch: WindowBatch) -> Tensor:
    """One Adam update on one batch; adds the loss to the running sum; returns accuracy (K,)."""
    cfg, progress, device = run.cfg, run.progress, run.procs.device
    wav = batch.wav.to(device, non_blocking=True)
    speakers = batch.speakers.to(device, non_blocking=True)
    context = None
    if batch.wav_context is not None:
        context = batch.wav_context.to(device, non_blocking=True)
    generator = torch.Generator(device=device)
    generator.manual_seed(step_seed(cfg.train.seed, progress.step, run.procs.rank))
    loss, _, accuracy = run.model_for_step(wav, speakers, generator, context)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.optim.grad_clip > 0:
        nn.utils.clip_grad_norm_(run.objective.parameters(), cfg.optim.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise TrainingError(
            f"step {progress.step}: the loss is {loss_value}; lower optim.lr, add "
            "optim.warmup_steps or optim.grad_clip"
        )
    progress.loss_sum += loss_value
    return accuracy


def _log_train(run: _Run, lr: float, speed: float) -> None:
    """Average the accumulated loss and accuracy over ranks, write them, reset the sums."""
    progress, procs = run.progress, run.procs
    sums = torch.tensor(
        [progress.loss_sum, *progress.accuracy_sum, float(progress.count)], dtype=torch.float64
    )
    if procs.world_size > 1:
        sums = sums.to(procs.device)
        dist.all_reduce(sums)
        sums = sums.cpu()
    count = float(sums[-1])
    progress.train_loss = float(sums[0]) / count
    mean_acc = (sums[1:-1] / count).tolist()
    progress.loss_sum, progress.count = 0.0, 0
    progress.accuracy_sum = [0.0] * len(mean_acc)
    if run.run_log is None:
        return
    run.run_log.write(
        log_record(
            progress.step,
            "train",
            progress.train_loss,
            mean_acc,
            lr,
            progress.audio_seconds,
            progress.wall_seconds,
        )
    )
    line = (
        f"step {progress.step}/{run.cfg.train.max_steps}  loss {progress.train_loss:.4f}  "
        f"acc_k1 {mean_acc[0]:.3f}  acc_k{len(mean_acc)} {mean_acc[-1]:.3f}  "
        f"lr {lr:.2e}  {speed:.1f} audio-s/s"
    )
    if run.bar is not None:
        run.bar.update(progress.step, info=line.split("  ", 1)[1])
    else:
        run.console.print(line, highlight=False)


def _validate_and_log(run: _Run, lr: float) -> None:
    """Validation loss and per-k accuracy on the fixed batches, logged (rank 0 only)."""
    progress = run.progress
    progress.last_valid, progress.valid_accuracy = validate(
        run.objective, run.valid_batches, run.procs.device, run.cfg.train.seed + VALID_SEED_OFFSET
    )
    if run.run_log is not None:
        run.run_log.write(
            log_record(
                progress.step,
                "valid",
                progress.last_valid,
                progress.valid_accuracy,
                lr,
                progress.audio_seconds,
                progress.wall_seconds,
            )
        )
    run.console.print(
        f"step {progress.step}  valid loss {progress.last_valid:.4f}  "
        + " ".join(f"k{k}:{a:.2f}" for k, a in enumerate(progress.valid_accuracy, 1)),
        highlight=False,
    )


def _hardware(device: torch.device, world_size: int) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = (
            f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
        )
    return f"{world_size} x {name}" if world_size > 1 else name


def _save_checkpoint(run: _Run) -> None:
    """Write checkpoints/step-N with everything exact resume needs, update best, prune."""
    progress = run.progress
    name = checkpoint_name(progress.step)
    if progress.last_valid is not None and progress.last_valid < progress.best_loss:
        progress.best_name, progress.best_loss = name, progress.last_valid
    trainer_state = progress.to_state(
        run.optimizer.state_dict(), run.scheduler.state_dict(), rng_state()
    )
    meta = progress.to_meta(_hardware(run.procs.device, run.procs.world_size))
    write_checkpoint(run.out_dir, progress.step, run.objective, trainer_state, meta, run.cfg)
    write_best_file(run.out_dir, progress.best_name)
    prune_checkpoints(run.out_dir, run.cfg.train.keep_last, progress.best_name)


def _advance(run: _Run, batch: WindowBatch, clock: _SessionClock) -> bool:
    """One training step and what follows it (log, validate, checkpoint); True once finished."""
    cfg, progress = run.cfg, run.progress
    progress.step += 1
    lr = run.optimizer.param_groups[0]["lr"]
    accuracy = _train_step(run, batch)
    progress.epoch, progress.batch_index = batch.epoch, batch.batch_index + 1
    progress.accuracy_sum = [
        a + float(b) for a, b in zip(progress.accuracy_sum, accuracy, strict=True)
    ]
    progress.count += 1
    clock.tick(progress)
    finished = _is_finished(run)
    if progress.step % cfg.train.log_every == 0 or finished:
        _log_train(run, lr, clock.speed)
    elif run.bar is not None:
        run.bar.update(progress.step)
    is_checkpoint = progress.step % cfg.train.checkpoint_every == 0 or finished
    is_valid = progress.step % cfg.train.valid_every == 0 or is_checkpoint
    if run.procs.is_main and run.valid_batches and is_valid:
        _validate_and_log(run, lr)
    if is_checkpoint and run.procs.is_main:
        _save_checkpoint(run)
    return finished


def _close(run: _Run) -> None:
    if run.bar is not None:
        run.bar.stop()
    if run.run_log is not None:
        run.run_log.close()
    if run.procs.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def _silent(*args: object, **kwargs: object) -> None:
    """``say`` on ranks > 0: only rank 0 prints."""


# ----- the run -----
def train(cfg: Config, resume: bool = False, console: Console | None = None) -> TrainResult:
    """Train CPC with ``cfg``; with ``resume`` continue from the latest checkpoint in out_dir.

    Launched by ``torchrun`` (RANK/WORLD_SIZE set) it runs data-parallel: one batch of
    ``data.batch_size`` windows per process, gradients averaged, only rank 0 writes. The run
    stops at ``train.max_steps`` or, with ``train.budget_seconds``, once that much time is used.
    """
    console = console or Console(stderr=True)
    procs = _start_processes(cfg)
    say = console.print if procs.is_main else _silent
    check_window(cfg)  # before the run folder is made
    out_dir = Path(cfg.train.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    start = _find_start(out_dir, cfg, resume, say, procs.is_main)
    train_corpus, valid_batches = _load_data(cfg)
    run = _build_run(cfg, procs, out_dir, console, start, valid_batches, say)
    progress = run.progress
    sampler = WindowSampler(
        train_corpus,
        cfg.data.batch_size,
        cfg.data.speakers_per_batch,
        cfg.data.seed,
        procs.rank,
        procs.world_size,
        progress.epoch,
        progress.batch_index,
    )
    augmenter = make_augmenter(cfg.augment, train_corpus, cfg.model.sample_rate)
    if procs.is_main:
        _open_outputs(run, start, corpus_stats(train_corpus, sampler), say)
    seconds_per_batch = cfg.data.batch_size * cfg.data.window / cfg.model.sample_rate
    clock = _SessionClock(progress, seconds_per_batch * procs.world_size)
    finished = _is_finished(run)
    if procs.is_main and console.is_terminal and not finished:
        run.bar = _Bar(console, cfg.train.max_steps, progress.step)
    loader = make_loader(
        train_corpus, sampler, cfg.data.num_workers, augmenter, cfg.augment.side, procs.rank
    )
    try:
        for batch in [] if finished else loader:
            if _advance(run, batch, clock):
                break
    finally:
        _close(run)
    return TrainResult(
        out_dir=out_dir,
        step=progress.step,
        train_loss=progress.train_loss,
        valid_loss=progress.last_valid,
        best_checkpoint=progress.best_name,
        audio_seconds=progress.audio_seconds,
        wall_seconds=progress.wall_seconds,
        is_main=procs.is_main,
    )
