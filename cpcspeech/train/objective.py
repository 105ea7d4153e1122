"""What training minimises: the CPC model and its InfoNCE head in one module, its optimiser, the
negatives' seeds, the window check and the validation pass."""

from contextlib import nullcontext

import numpy as np
import torch
from torch import Tensor, nn

from cpcspeech.config import Config, OptimConfig
from cpcspeech.errors import ConfigError
from cpcspeech.model.cpc import CPCModel
from cpcspeech.model.serialization import MAX_PARAMETERS
from cpcspeech.train.loss import InfoNCE
from cpcspeech.train.windows import WindowBatch


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


def check_objective_size(cfg: Config) -> None:
    """ConfigError unless the model and its prediction heads together hold at most
    :data:`MAX_PARAMETERS` values. Counted on the ``meta`` device, so a config asking for 1000
    steps of 2048 x 2048 heads (4 G values) fails before anything is allocated."""
    with torch.device("meta"):
        model = CPCModel(cfg.model)
        heads = InfoNCE(cfg.loss, model.z_dim, model.c_dim)
    body = sum(v.numel() for v in model.state_dict().values())
    count = body + sum(v.numel() for v in heads.state_dict().values())
    if count > MAX_PARAMETERS:
        raise ConfigError(
            f"model + loss: expected at most {MAX_PARAMETERS:,} parameters, found a config "
            f"asking for {count:,} ({4 * count / 1e9:.1f} GB in float32), {count - body:,} of "
            f"them in the predictor (loss.prediction_steps {cfg.loss.prediction_steps}, "
            f"loss.predictor {cfg.loss.predictor!r}, loss.predictor_hidden "
            f"{cfg.loss.predictor_hidden})"
        )


def make_objective(cfg: Config) -> CPCObjective:
    """CPCModel(cfg.model) + InfoNCE(cfg.loss) initialised from train.seed."""
    check_objective_size(cfg)
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


@torch.no_grad()
def validate(
    objective: CPCObjective, batches: list[WindowBatch], device: torch.device, seed: int
) -> tuple[float, list[float]]:
    """Mean loss and per-k accuracy (K values) over fixed batches, with fixed negatives per batch
    (each batch's generator is seeded by ``step_seed(seed, b, 0, stream=1)``)."""
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
