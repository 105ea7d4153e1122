"""The CPC training loop: Adam on InfoNCE, validation, atomic checkpoints, exact resume, DDP.

One process per GPU under ``torchrun``; each process draws negatives from its own batch only,
as in the paper (section 3.1). A killed run resumed with ``resume=True`` repeats the same losses.
"""

import csv
import json
import math
import os
import platform
import random
import re
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from cpcspeech.config import (
    Config,
    OptimConfig,
    config_from_dict,
    config_to_dict,
    read_yaml,
    save_config,
)
from cpcspeech.errors import ConfigError, CPCSpeechError
from cpcspeech.files import (
    file_sha256,
    replace_folder,
    temp_dir,
    temp_sibling,
    umask_mode,
    write_text_atomic,
)
from cpcspeech.model.cpc import CPCModel, load_state_strict
from cpcspeech.runtime import cpu_lacks_bf16, distributed_env, one_line, resolve_device
from cpcspeech.train.loss import InfoNCE
from cpcspeech.train.windows import (
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

TRAINER_NAME = "trainer.pt"
HEADS_NAME = "heads.safetensors"
META_NAME = "meta.json"
BEST_NAME = "best.txt"
TRAINER_FORMAT = 1
# Keys that may differ when resuming: they change neither the maths nor the data order.
RESUMABLE_CHANGES = (
    "train.max_steps",
    "train.log_every",
    "train.tensorboard",
    "train.keep_last",
    "data.num_workers",
    "train.budget_seconds",
)
VALID_SEED_OFFSET = 7_919  # the validation windows' plan seed is data.seed + this


class TrainingError(CPCSpeechError):
    """Training cannot start or continue (no checkpoint to resume, config mismatch, NaN loss)."""


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


class CPCObjective(nn.Module):
    """The CPC model and its InfoNCE head in one module, so DDP syncs both.

    The encoder runs under bf16 autocast when asked; the context network and the loss always
    run in fp32.
    """

    def __init__(self, model: CPCModel, loss: InfoNCE, bf16: bool = False) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.bf16 = bf16

    def forward(
        self,
        wav: Tensor,
        speakers: Tensor,
        generator: torch.Generator | None = None,
        wav_context: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """wav: (B, N), speakers: (B,) -> loss (), loss_per_step (K,), accuracy (K,).

        With ``wav_context`` (B, N), the context c_t is computed from it and the targets
        z_{t+k} from ``wav`` (augmentation of one side, Kharitonov et al. 2020).
        """
        device_type = wav.device.type
        autocast = torch.autocast(device_type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with autocast:
            z = self.model.encoder(wav)  # (B, T, z_dim): the targets
            z_context = z if wav_context is None else self.model.encoder(wav_context)
        # The recurrent context runs in fp32: it is cheap next to the encoder, and oneDNN has
        # no bf16 LSTM on some CPUs ("could not create a primitive descriptor").
        with torch.autocast(device_type, enabled=False):
            c, _ = self.model.run_context(z_context.float())  # (B, T, c_dim)
        with torch.autocast(device_type, enabled=False):
            out = self.loss(z.float(), c.float(), speakers=speakers, generator=generator)
        return out.loss, out.loss_per_step, out.accuracy


def step_seed(seed: int, step: int, rank: int, stream: int = 0) -> int:
    """Seed of the negatives' generator for one (step, rank): resume-exact and rank-distinct.

    ``stream`` separates uses: 0 for training steps, 1 for validation batches.
    """
    entropy = [int(seed), int(step), int(rank), int(stream), 0x4E47]
    state = np.random.SeedSequence(entropy).generate_state(1)
    return int(state[0])


def make_objective(cfg: Config) -> CPCObjective:
    """CPCModel(cfg.model) + InfoNCE(cfg.loss) initialised from train.seed."""
    torch.manual_seed(cfg.train.seed)
    model = CPCModel(cfg.model)
    loss = InfoNCE(cfg.loss, model.z_dim, model.c_dim)
    return CPCObjective(model, loss, bf16=cfg.train.precision == "bf16")


def make_optimizer(
    optim: OptimConfig, objective: CPCObjective
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """Adam with two parameter groups, the model (encoder + GRU) and the W_k heads.

    Group 0 is the model at ``optim.lr`` with the warm-up; group 1 is the heads at
    ``optim.head_lr`` (or ``lr``), warmed up only if ``optim.warmup_heads``.
    """
    head_lr = optim.head_lr if optim.head_lr > 0 else optim.lr
    optimizer = torch.optim.Adam(
        [
            {"params": list(objective.model.parameters()), "lr": optim.lr},
            {"params": list(objective.loss.parameters()), "lr": head_lr},
        ],
        betas=optim.betas,
        weight_decay=optim.weight_decay,
    )
    model_factor = warmup_factor(optim.warmup_steps)
    head_factor = model_factor if optim.warmup_heads else warmup_factor(0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [model_factor, head_factor])
    return optimizer, scheduler


def warmup_factor(warmup_steps: int):
    """LambdaLR factor: linear warm-up from 1/warmup_steps to 1 over warmup_steps steps."""

    def factor(step: int) -> float:
        if warmup_steps <= 0:
            return 1.0
        return min(1.0, (step + 1) / warmup_steps)

    return factor


# ----- checkpoints -----
def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders (step-NNNNNNNN) under out_dir/checkpoints, oldest first.

    Folders moved aside as corrupt (``step-NNNNNNNN.corrupt``) are not listed.
    """
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if p.is_dir() and re.fullmatch(r"step-\d+", p.name) and (p / TRAINER_NAME).is_file()
    ]
    return sorted(found, key=lambda p: p.name)


def write_checkpoint(
    out_dir: Path,
    step: int,
    objective: CPCObjective,
    trainer_state: dict[str, Any],
    meta: dict[str, Any],
    cfg: Config,
) -> Path:
    """Write checkpoints/step-NNNNNNNN into a temporary folder, then rename it into place.

    The folder is a model directory (config.json + model.safetensors, as save_pretrained writes
    them) plus heads.safetensors (W_k), trainer.pt, config.yaml and meta.json.
    """
    folder = out_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / checkpoint_name(step)
    tmp = temp_dir(folder, prefix=f".tmp-{final.name}-")
    objective.model.save_pretrained(tmp)
    heads = {k: v.detach().cpu().contiguous() for k, v in objective.loss.state_dict().items()}
    save_file(heads, str(tmp / HEADS_NAME), metadata={"format": "pt"})
    os.chmod(tmp / HEADS_NAME, umask_mode())  # safetensors creates its files with mode 0600
    torch.save(trainer_state, tmp / TRAINER_NAME)
    save_config(cfg, tmp / "config.yaml")
    # Resume verifies these (verify_checkpoint): a truncated or garbled file is caught before use.
    meta = {**meta, "sha256": {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}}
    (tmp / META_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    replace_folder(tmp, final)  # the same step may be written again (a finished run resumed)
    return final


def prune_checkpoints(out_dir: Path, keep_last: int, best: str) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (0 keeps all); never the best."""
    if keep_last <= 0:
        return
    checkpoints = list_checkpoints(out_dir)
    for path in checkpoints[:-keep_last]:
        if path.name != best:
            shutil.rmtree(path, ignore_errors=True)


def _clean_temporaries(out_dir: Path) -> None:
    folder = out_dir / "checkpoints"
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(p, ignore_errors=True)


def load_trainer_state(path: Path) -> dict[str, Any]:
    """trainer.pt, loaded with weights_only=True (plain tensors, dicts, lists, numbers)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise TrainingError(f"{path}: cannot load trainer state ({one_line(err)})") from err


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: Config, current: Config) -> list[str]:
    """Dotted keys whose values differ, except those in RESUMABLE_CHANGES."""
    a, b = _flatten(config_to_dict(saved)), _flatten(config_to_dict(current))
    return sorted(
        k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES
    )


def _read_checkpoint_config(path: Path) -> Config:
    return config_from_dict(read_yaml(path / "config.yaml"))


@dataclass
class LoadedCheckpoint:
    """Everything resume needs from one verified checkpoint folder, read into memory."""

    path: Path
    config: Config
    model_state: dict[str, Tensor]
    heads_state: dict[str, Tensor]
    trainer_state: dict[str, Any]


def verify_checkpoint(path: Path) -> LoadedCheckpoint:
    """Check a checkpoint's files against the sha256 sums in its meta.json, then read them.

    Checkpoints written before the sums existed are only read. Any failure (missing, truncated
    or garbled file) raises TrainingError with a one-line reason.
    """
    try:
        meta = json.loads((path / META_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrainingError(f"{path.name}: {META_NAME} unreadable ({one_line(err)})") from None
    sums = meta.get("sha256", {}) if isinstance(meta, dict) else None
    if not isinstance(sums, dict):
        raise TrainingError(f"{path.name}: {META_NAME} expected a mapping, found {type(meta)}")
    for name, expected in sums.items():
        if not (path / name).is_file():
            raise TrainingError(f"{path.name}: {name} is missing")
        found = file_sha256(path / name)
        if found != expected:
            raise TrainingError(
                f"{path.name}: {name} sha256 expected {expected[:12]}..., found {found[:12]}..."
            )
    try:
        config = _read_checkpoint_config(path)
        model_state = load_file(str(path / "model.safetensors"))
        heads_state = load_file(str(path / HEADS_NAME))
    except Exception as err:  # safetensors raises several types for corrupt files
        raise TrainingError(f"{path.name}: unreadable ({one_line(err)})") from None
    state = load_trainer_state(path / TRAINER_NAME)
    return LoadedCheckpoint(path, config, model_state, heads_state, state)


def newest_verified_checkpoint(
    checkpoints: list[Path], say, move_aside: bool = True
) -> LoadedCheckpoint | None:
    """The newest checkpoint that verifies; each newer one that fails is renamed to
    ``step-NNNNNNNN.corrupt`` (rank 0 only: ``move_aside``) and reported in one line."""
    for path in reversed(checkpoints):
        try:
            return verify_checkpoint(path)
        except TrainingError as err:
            aside = path.with_name(path.name + ".corrupt")
            n = 1
            while aside.exists():
                n += 1
                aside = path.with_name(f"{path.name}.corrupt{n}")
            if move_aside:
                os.replace(path, aside)
            say(
                f"checkpoint {err}; moved aside to {aside.name}, trying the previous one",
                style="yellow",
                markup=False,
                highlight=False,
            )
    return None


def _restore_best_file(out_dir: Path, best_name: str) -> None:
    """Make checkpoints/best.txt agree with the resumed state (a newer best may be gone)."""
    best_file = out_dir / "checkpoints" / BEST_NAME
    if best_name and (out_dir / "checkpoints" / best_name).is_dir():
        write_text_atomic(best_file, best_name + "\n")
    else:
        best_file.unlink(missing_ok=True)


def check_window(cfg: Config) -> None:
    """data.window must give more than K = loss.prediction_steps frames (InfoNCE predicts k=1..K).

    Checked before anything is written; the geometry comes from CPCModel.num_frames, built on the
    meta device so no memory is allocated.
    """
    with torch.device("meta"):
        model = CPCModel(cfg.model)
    steps = cfg.loss.prediction_steps
    frames = model.num_frames(cfg.data.window)
    if frames > steps:
        return
    needed = model.frame_shift * (steps + 1)
    while model.num_frames(needed - 1) > steps:
        needed -= 1
    while model.num_frames(needed) <= steps:
        needed += 1
    raise ConfigError(
        f"data.window = {cfg.data.window} samples gives {frames} frame(s); loss.prediction_steps "
        f"= {steps} needs more than {steps}, so data.window must be >= {needed}"
    )


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----- logging -----
class RunLog:
    """log.jsonl + log.csv in out_dir (rank 0 only), and optional TensorBoard."""

    def __init__(self, out_dir: Path, num_steps_k: int, tensorboard: bool, keep_until: int):
        self.jsonl = out_dir / "log.jsonl"
        self.csv = out_dir / "log.csv"
        self.fields = (
            ["step", "split", "loss"]
            + [f"acc_k{k}" for k in range(1, num_steps_k + 1)]
            + ["lr", "audio_seconds", "wall_seconds"]
        )
        records = []
        if self.jsonl.is_file():  # resumed: keep only what the checkpoint covers
            with open(self.jsonl, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        rec = json.loads(line)
                        if rec["step"] <= keep_until:
                            records.append(rec)
        write_text_atomic(self.jsonl, "".join(json.dumps(r) + "\n" for r in records))
        tmp = temp_sibling(self.csv)
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(records)
        os.replace(tmp, self.csv)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ConfigError(
                    "train.tensorboard is true but tensorboard is not installed; "
                    "pip install 'cpcspeech[tensorboard]'"
                ) from err
            self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        with open(self.csv, "a", encoding="utf-8", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(record)
        if self.writer is not None:
            split, step = record["split"], record["step"]
            for key, value in record.items():
                if key == "loss" or key.startswith("acc_k"):
                    self.writer.add_scalar(f"{split}/{key}", value, step)
            self.writer.add_scalar("train/lr", record["lr"], step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _record(
    step: int, split: str, loss: float, accuracy: list[float], lr: float, audio: float, wall: float
) -> dict[str, Any]:
    rec: dict[str, Any] = {"step": step, "split": split, "loss": loss}
    rec.update({f"acc_k{k}": a for k, a in enumerate(accuracy, 1)})
    rec.update({"lr": lr, "audio_seconds": audio, "wall_seconds": wall})
    return rec


@torch.no_grad()
def validate(
    objective: CPCObjective, batches: list[WindowBatch], device: torch.device, seed: int
) -> tuple[float, list[float]]:
    """Mean loss and per-k accuracy over fixed batches, with fixed negatives per batch."""
    was_training = objective.training
    objective.eval()
    losses, accs = [], []
    for b, batch in enumerate(batches):
        generator = torch.Generator(device=device)
        generator.manual_seed(step_seed(seed, b, 0, stream=1))
        loss, _, accuracy = objective(
            batch.wav.to(device), batch.speakers.to(device), generator=generator
        )
        losses.append(float(loss))
        accs.append(accuracy.float().cpu())
    objective.train(was_training)
    return float(np.mean(losses)), torch.stack(accs).mean(0).tolist()


def _hardware(device: torch.device, world_size: int) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = (
            f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
        )
    return f"{world_size} x {name}" if world_size > 1 else name


# ----- the loop, in named steps -----
@dataclass
class _Processes:
    """Where this process sits: DDP rank and world, its device, and whether it writes."""

    rank: int
    world_size: int
    device: torch.device
    is_main: bool


@dataclass
class _Progress:
    """Everything the loop carries from step to step; a checkpoint saves all of it."""

    step: int = 0
    epoch: int = 0
    batch_index: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    loss_sum: float = 0.0
    accuracy_sum: list[float] | None = None
    count: int = 0
    best_name: str = ""
    best_loss: float = math.inf
    last_valid: float | None = None
    valid_accuracy: list[float] | None = None
    train_loss: float = math.nan


def _start_processes(cfg: Config) -> _Processes:
    """Rank and world from torchrun's environment; joins the process group when W > 1."""
    env = distributed_env()
    rank, world_size = env.rank, env.world_size
    device = resolve_device(cfg.train.device, option="train.device")
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Processes(rank, world_size, device, rank == 0)


def _find_start(
    out_dir: Path, cfg: Config, resume: bool, say, is_main: bool
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
        start_dir = start.path
        diff = config_differences(start.config, cfg)
        if diff:
            saved = _flatten(config_to_dict(start.config))
            now = _flatten(config_to_dict(cfg))
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
            raise TrainingError(
                f"cannot resume {start_dir}: the config differs in {detail}; only "
                f"{', '.join(RESUMABLE_CHANGES)} may change on resume"
            )
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
    progress: _Progress,
) -> None:
    """Load weights, optimiser, scheduler, RNG and the loop's progress from a checkpoint."""
    load_state_strict(objective.model, start.model_state, str(start.path))
    load_state_strict(objective.loss, start.heads_state, str(start.path))
    state = start.trainer_state
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    progress.step, progress.epoch = state["step"], state["epoch"]
    progress.batch_index = state["batch_index"]
    progress.audio_seconds, progress.wall_seconds = state["audio_seconds"], state["wall_seconds"]
    progress.cpu_seconds = state.get("cpu_seconds", 0.0)  # absent before budgets existed
    progress.loss_sum = state["accumulator"]["loss_sum"]
    progress.accuracy_sum = list(state["accumulator"]["accuracy_sum"])
    progress.count = state["accumulator"]["count"]
    progress.best_name, progress.best_loss = state["best"]["name"], state["best"]["valid_loss"]
    progress.last_valid = state["best"]["last_valid_loss"]


def _init_from_model(cfg: Config, model: CPCModel, say) -> None:
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


def _announce(say, out_dir: Path, stats, cfg: Config, valid_batches, procs: _Processes) -> None:
    say(f"outputs -> {out_dir} (config.yaml, log.jsonl, log.csv, checkpoints/)")
    say(
        f"train: {stats.num_utterances} utterances, {stats.num_speakers} speakers, "
        f"{stats.hours:.2f} h; {stats.num_short} shorter than {cfg.data.window} samples "
        f"({stats.short_policy}ped); {stats.windows_per_epoch} windows and "
        f"{stats.batches_per_epoch} batches of {cfg.data.batch_size} per process per epoch"
        f"; valid: {len(valid_batches)} fixed batches; device {procs.device}, "
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


def _progress_bar(console: Console, cfg: Config, step: int):
    """A rich progress bar on a terminal (None elsewhere) and its task id."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task = bar.add_task("train", total=cfg.train.max_steps, completed=step, info="")
    bar.start()
    return bar, task


def _budget_spent(cfg: Config, progress: _Progress, procs: _Processes) -> bool:
    """True once the run has used ``train.budget_seconds`` (agreed across DDP ranks)."""
    if cfg.train.budget_seconds <= 0:
        return False
    used = progress.cpu_seconds if cfg.train.budget_clock == "cpu" else progress.wall_seconds
    spent = torch.tensor([1.0 if used >= cfg.train.budget_seconds else 0.0])
    if procs.world_size > 1:
        spent = spent.to(procs.device)
        dist.all_reduce(spent, op=dist.ReduceOp.MAX)
    return bool(spent.item() > 0)


def _log_train(
    cfg: Config,
    progress: _Progress,
    procs: _Processes,
    lr: float,
    speed: float,
    run_log: "RunLog | None",
    console: Console,
    bar,
) -> None:
    """Average the accumulated loss and accuracy over ranks, write them, reset the sums."""
    assert progress.accuracy_sum is not None
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
    if run_log is None:
        return
    run_log.write(
        _record(
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
        f"step {progress.step}/{cfg.train.max_steps}  loss {progress.train_loss:.4f}  "
        f"acc_k1 {mean_acc[0]:.3f}  acc_k{len(mean_acc)} {mean_acc[-1]:.3f}  "
        f"lr {lr:.2e}  {speed:.1f} audio-s/s"
    )
    if bar is not None:
        bar[0].update(bar[1], completed=progress.step, info=line.split("  ", 1)[1])
    else:
        console.print(line, highlight=False)


def _save_checkpoint(
    out_dir: Path,
    cfg: Config,
    objective: CPCObjective,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    progress: _Progress,
    procs: _Processes,
) -> None:
    """Write checkpoints/step-N with everything exact resume needs, update best, prune."""
    name = checkpoint_name(progress.step)
    if progress.last_valid is not None and progress.last_valid < progress.best_loss:
        progress.best_name, progress.best_loss = name, progress.last_valid
    trainer_state = {
        "format_version": TRAINER_FORMAT,
        "step": progress.step,
        "epoch": progress.epoch,
        "batch_index": progress.batch_index,
        "audio_seconds": progress.audio_seconds,
        "wall_seconds": progress.wall_seconds,
        "cpu_seconds": progress.cpu_seconds,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
        "accumulator": {
            "loss_sum": progress.loss_sum,
            "accuracy_sum": list(progress.accuracy_sum or []),
            "count": progress.count,
        },
        "best": {
            "name": progress.best_name,
            "valid_loss": progress.best_loss,
            "last_valid_loss": progress.last_valid,
        },
    }
    meta = {
        "step": progress.step,
        "audio_seconds": progress.audio_seconds,
        "wall_seconds": progress.wall_seconds,
        "cpu_seconds": progress.cpu_seconds,
        "hardware": _hardware(procs.device, procs.world_size),
        "valid_loss": progress.last_valid,
        "valid_accuracy": progress.valid_accuracy or [],
        "train_loss": progress.train_loss,
    }
    write_checkpoint(out_dir, progress.step, objective, trainer_state, meta, cfg)
    if progress.best_name:
        write_text_atomic(out_dir / "checkpoints" / BEST_NAME, progress.best_name + "\n")
    prune_checkpoints(out_dir, cfg.train.keep_last, progress.best_name)


def train(cfg: Config, resume: bool = False, console: Console | None = None) -> TrainResult:
    """Train CPC with ``cfg``; with ``resume`` continue from the latest checkpoint in out_dir.

    Launched by ``torchrun`` (RANK/WORLD_SIZE set) it runs data-parallel: one batch of
    ``data.batch_size`` windows per process, gradients averaged, only rank 0 writes. The run
    stops at ``train.max_steps`` or, with ``train.budget_seconds``, once that much time is used.
    """
    console = console or Console(stderr=True)
    procs = _start_processes(cfg)
    say = console.print if procs.is_main else (lambda *a, **k: None)
    check_window(cfg)  # before the run folder is made
    out_dir = Path(cfg.train.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    start = _find_start(out_dir, cfg, resume, say, procs.is_main)
    train_corpus, valid_batches = _load_data(cfg)

    objective = make_objective(cfg).to(procs.device)
    optimizer, scheduler = make_optimizer(cfg.optim, objective)
    progress = _Progress(accuracy_sum=[0.0] * cfg.loss.prediction_steps)
    if start is not None:
        _restore(start, objective, optimizer, scheduler, progress)
    elif cfg.train.init_from:
        _init_from_model(cfg, objective.model, say)
    model_for_step: nn.Module = objective
    if procs.world_size > 1:
        device_ids = [procs.device.index] if procs.device.type == "cuda" else None
        model_for_step = nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)
    objective.train()

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
        _clean_temporaries(out_dir)
        save_config(cfg, out_dir / "config.yaml")
        _announce(say, out_dir, corpus_stats(train_corpus, sampler), cfg, valid_batches, procs)
        if start is not None:
            say(
                f"resuming from {start.path.name} (epoch {progress.epoch}, batch "
                f"{progress.batch_index})"
            )
            _restore_best_file(out_dir, progress.best_name)
    run_log = (
        RunLog(out_dir, cfg.loss.prediction_steps, cfg.train.tensorboard, progress.step)
        if procs.is_main
        else None
    )

    seconds_per_batch = cfg.data.batch_size * cfg.data.window / cfg.model.sample_rate
    session_start, session_cpu, session_audio = time.perf_counter(), time.process_time(), 0.0
    wall_at_start, cpu_at_start = progress.wall_seconds, progress.cpu_seconds
    finished = progress.step >= cfg.train.max_steps or _budget_spent(cfg, progress, procs)
    bar = None
    if procs.is_main and console.is_terminal and not finished:
        bar = _progress_bar(console, cfg, progress.step)
    loader = make_loader(
        train_corpus,
        sampler,
        cfg.data.num_workers,
        augmenter,
        cfg.augment.side,
        procs.rank,
    )
    try:
        for batch in [] if finished else loader:
            progress.step += 1
            lr = optimizer.param_groups[0]["lr"]
            accuracy = _train_step(
                cfg, model_for_step, objective, optimizer, scheduler, batch, progress, procs
            )
            progress.epoch, progress.batch_index = batch.epoch, batch.batch_index + 1
            progress.accuracy_sum = [
                a + float(b) for a, b in zip(progress.accuracy_sum or [], accuracy, strict=True)
            ]
            progress.count += 1
            progress.audio_seconds += seconds_per_batch * procs.world_size
            session_audio += seconds_per_batch * procs.world_size
            elapsed = time.perf_counter() - session_start
            progress.wall_seconds = wall_at_start + elapsed
            progress.cpu_seconds = cpu_at_start + time.process_time() - session_cpu
            finished = progress.step >= cfg.train.max_steps or _budget_spent(cfg, progress, procs)

            if progress.step % cfg.train.log_every == 0 or finished:
                speed = session_audio / max(elapsed, 1e-9)
                _log_train(cfg, progress, procs, lr, speed, run_log, console, bar)
            elif bar is not None:
                bar[0].update(bar[1], completed=progress.step)
            is_checkpoint = progress.step % cfg.train.checkpoint_every == 0 or finished
            is_valid = progress.step % cfg.train.valid_every == 0 or is_checkpoint
            if procs.is_main and valid_batches and is_valid:
                _validate_and_log(
                    cfg, objective, valid_batches, procs, progress, lr, run_log, console
                )
            if is_checkpoint and procs.is_main:
                _save_checkpoint(out_dir, cfg, objective, optimizer, scheduler, progress, procs)
            if finished:
                break
    finally:
        if bar is not None:
            bar[0].stop()
        if run_log is not None:
            run_log.close()
        if procs.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
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


def _train_step(
    cfg: Config,
    model_for_step: nn.Module,
    objective: CPCObjective,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    batch: WindowBatch,
    progress: _Progress,
    procs: _Processes,
) -> Tensor:
    """One Adam update on one batch; adds the loss to the running sum; returns accuracy (K,)."""
    device = procs.device
    wav = batch.wav.to(device, non_blocking=True)
    speakers = batch.speakers.to(device, non_blocking=True)
    context = None
    if batch.wav_context is not None:
        context = batch.wav_context.to(device, non_blocking=True)
    generator = torch.Generator(device=device)
    generator.manual_seed(step_seed(cfg.train.seed, progress.step, procs.rank))
    loss, _, accuracy = model_for_step(wav, speakers, generator, context)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.optim.grad_clip > 0:
        nn.utils.clip_grad_norm_(objective.parameters(), cfg.optim.grad_clip)
    optimizer.step()
    scheduler.step()
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise TrainingError(
            f"step {progress.step}: the loss is {loss_value}; lower optim.lr, add "
            "optim.warmup_steps or optim.grad_clip"
        )
    progress.loss_sum += loss_value
    return accuracy


def _validate_and_log(
    cfg: Config,
    objective: CPCObjective,
    valid_batches: list[WindowBatch],
    procs: _Processes,
    progress: _Progress,
    lr: float,
    run_log: "RunLog | None",
    console: Console,
) -> None:
    """Validation loss and per-k accuracy on the fixed batches, logged (rank 0 only)."""
    progress.last_valid, progress.valid_accuracy = validate(
        objective, valid_batches, procs.device, cfg.train.seed + VALID_SEED_OFFSET
    )
    if run_log is not None:
        run_log.write(
            _record(
                progress.step,
                "valid",
                progress.last_valid,
                progress.valid_accuracy,
                lr,
                progress.audio_seconds,
                progress.wall_seconds,
            )
        )
    console.print(
        f"step {progress.step}  valid loss {progress.last_valid:.4f}  "
        + " ".join(f"k{k}:{a:.2f}" for k, a in enumerate(progress.valid_accuracy, 1)),
        highlight=False,
    )
