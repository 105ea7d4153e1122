"""The CPC audio model (van den Oord et al. 2018, section 3.1): strided CNN encoder + recurrent
context (GRU as in the paper; LSTM and RNN too, for CPC_audio checkpoints).

The W_k prediction heads belong to the loss (``cpcspeech.train.loss``), not to this model.
"""

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cpcspeech.config import ModelConfig
from cpcspeech.errors import ModelLoadError
from cpcspeech.model.serialization import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_model_size,
    load_state_strict,
    read_checked_weights,
    read_model_config,
    save_model_dir,
)


class ChannelNorm(nn.Module):
    """CPC_audio's ChannelNorm: normalise each frame over channels (unbiased variance), then a
    per-channel affine. Per frame, so it keeps the encoder causal."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, T) -> (B, C, T)."""
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class FrameLayerNorm(nn.LayerNorm):
    """nn.LayerNorm over channels of each frame, for (B, C, T) input."""

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, T) -> (B, C, T)."""
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def channel_norm_relu(x: Tensor, norm: ChannelNorm) -> Tensor:
    """ReLU(ChannelNorm(x)) on channels-last activations, as one fused per-frame layer_norm.

    ChannelNorm divides by sqrt(s^2 + eps) with the unbiased variance s^2 = C/(C-1) * v, where v
    is the biased variance that layer_norm uses. Since
    sqrt(C/(C-1) * v + eps) = sqrt(C/(C-1)) * sqrt(v + eps * (C-1)/C),
    layer_norm with eps' = eps * (C-1)/C and its weight scaled by sqrt((C-1)/C) is ChannelNorm
    exactly (up to float rounding; tested to 1e-5). The ReLU runs in place on layer_norm's output,
    which autograd allows because layer_norm's backward needs only its input.

    Args:
        x: (B, T, C) in float32 or bfloat16, C contiguous.
        norm: the ChannelNorm whose eps, weight (1, C, 1) and bias (1, C, 1) apply.

    Returns:
        (B, T, C) in x's dtype.
    """
    channels = x.shape[-1]
    ratio = (channels - 1) / channels
    weight = (norm.weight.reshape(channels) * math.sqrt(ratio)).to(x.dtype)
    bias = norm.bias.reshape(channels).to(x.dtype)
    return F.layer_norm(x, (channels,), weight, bias, norm.eps * ratio).relu_()


def _make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "channel":
        return ChannelNorm(channels)
    if kind == "layer":
        return FrameLayerNorm(channels)
    if kind == "batch":
        # Running statistics are buffers of the model; extract() always uses them (eval mode).
        return nn.BatchNorm1d(channels)
    if kind == "instance":
        # Per utterance and channel over time, as CPC_audio's "instanceNorm": not causal.
        return nn.InstanceNorm1d(channels, affine=True)
    return nn.Identity()


_RNNS = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}


class Encoder(nn.Module):
    """g_enc: a stack of strided Conv1d -> norm -> ReLU layers mapping samples to z_t."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.encoder_channels
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_ch = 1
        for k, s, p in zip(
            config.encoder_kernels, config.encoder_strides, config.encoder_paddings, strict=True
        ):
            self.convs.append(nn.Conv1d(in_ch, channels, kernel_size=k, stride=s, padding=p))
            self.norms.append(_make_norm(config.norm, channels))
            in_ch = channels

    def forward(self, wav: Tensor) -> Tensor:
        """wav: (B, N) float samples -> z: (B, T, C) with T = num_frames(N)."""
        if self.config.norm == "channel":
            return self._forward_channels_last(wav)
        x = wav.unsqueeze(1)  # (B, 1, N)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.relu(norm(conv(x)))  # (B, C, T_layer)
        return x.transpose(1, 2)  # (B, T, C)

    def _forward_channels_last(self, wav: Tensor) -> Tensor:
        """The channel-norm encoder through :meth:`forward_gemm`, with autograd, for speed.

        Each strided conv is one matrix product of the unfolded channels-last input with the
        conv's weight as a matrix, and the norm + ReLU one fused layer_norm per frame. On our
        2-core CPUs this beat oneDNN's convolutions for inference and, by about 2x, for the
        training step's forward + backward (`benchmarks/train_speed.py`); the same maths as
        ChannelNorm on (B, C, T), within 1e-5 in float32.

        Args:
            wav: (B, N) float samples.

        Returns:
            z: (B, T, C), T = num_frames(N).
        """
        return self.forward_gemm(wav, self.gemm_weights(wav.dtype, detach=False))

    def gemm_weights(self, dtype: torch.dtype, detach: bool = True) -> list[tuple[Tensor, Tensor]]:
        """Each conv's weight as a (kernel * C_in, C_out) matrix in ``dtype``, and its bias.

        Row ``j * C_in + i`` of the matrix is tap j of input channel i, the order in which
        :meth:`forward_gemm` lays out its unfolded input. ``detach=False`` keeps them in the
        autograd graph (training).
        """
        pairs = []
        for conv in self.convs:
            weight, bias = conv.weight, conv.bias
            if detach:
                weight, bias = weight.detach(), bias.detach()
            matrix = weight.permute(2, 1, 0).reshape(-1, conv.out_channels)
            pairs.append((matrix.to(dtype), bias.to(dtype)))
        return pairs

    def forward_gemm(self, wav: Tensor, weights: list[tuple[Tensor, Tensor]]) -> Tensor:
        """The encoder with each conv one GEMM: the same maths as the conv stack.

        Activations stay channels-last, so a strided conv is one matrix product of the unfolded
        input (T, kernel * C_in) with the (kernel * C_in, C_out) weight. In bf16 this runs near
        the CPU's GEMM speed; on our AMD EPYC (AVX512-BF16) it was a little faster than oneDNN's
        bf16 conv1d. Channel norm runs fused with the ReLU in the compute dtype (layer_norm
        accumulates in float32); other norms run in float32. Within 1e-5 of :meth:`forward` in
        float32.

        Args:
            wav: (B, N) float samples.
            weights: ``gemm_weights(dtype)``; their dtype is the compute dtype.

        Returns:
            z: (B, T, C) in that dtype, T = num_frames(N).
        """
        dtype = weights[0][0].dtype
        batch = wav.shape[0]
        x = wav.to(dtype).unsqueeze(2)  # (B, N, 1)
        for conv, norm, (weight, bias) in zip(self.convs, self.norms, weights, strict=True):
            kernel, stride, padding = conv.kernel_size[0], conv.stride[0], conv.padding[0]
            x = F.pad(x, (0, 0, padding, padding))  # (B, L, C_in)
            frames = (x.shape[1] - kernel) // stride + 1
            # (B, T, C_in, kernel) -> (B, T, kernel, C_in) -> (B * T, kernel * C_in)
            blocks = x.unfold(1, kernel, stride).transpose(2, 3).reshape(batch * frames, -1)
            x = torch.addmm(bias, blocks, weight).view(batch, frames, -1)  # (B, T, C)
            if isinstance(norm, ChannelNorm):
                x = channel_norm_relu(x, norm)  # (B, T, C), fused, in the compute dtype
                continue
            if not isinstance(norm, nn.Identity):
                x = norm(x.float().transpose(1, 2)).transpose(1, 2).to(dtype)  # (B, T, C)
            x = x.relu_()
        return x  # (B, T, C)


class CPCModel(nn.Module):
    """Encoder g_enc (samples -> z_t) and autoregressive context g_ar (z_<=t -> c_t).

    Frame t of z and c starts at sample ``frame_shift * t`` and covers 10 ms at 16 kHz; its
    receptive field is samples ``[frame_shift*t - left_context, frame_shift*t + right_context]``.
    c_t depends only on samples up to the end of frame t's receptive field (causal).
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ModelConfig()
        cfg = self.config
        if torch.empty(0).device.type != "meta":  # a real build: count it on meta first
            check_model_size(CPCModel, cfg)
        self.encoder = Encoder(cfg)
        rnn = _RNNS[cfg.context_type]
        self.context = rnn(
            cfg.encoder_channels, cfg.context_dim, num_layers=cfg.context_layers, batch_first=True
        )

    # ----- geometry, all derived from the config -----
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_shift(self) -> int:
        """Samples between consecutive frames: the product of the strides (160 by default)."""
        shift = 1
        for s in self.config.encoder_strides:
            shift *= s
        return shift

    @property
    def z_dim(self) -> int:
        return self.config.encoder_channels

    @property
    def c_dim(self) -> int:
        return self.config.context_dim

    @property
    def causal(self) -> bool:
        """Whether frame t depends only on samples up to its receptive field's end.

        False for norm "instance", which normalises over the whole utterance; :meth:`extract`
        then runs the encoder in one pass, since chunks cannot equal it.
        """
        return self.config.norm != "instance"

    @property
    def layers(self) -> tuple[str, ...]:
        """Names :meth:`extract` accepts: "z" (encoder), "c" (top context layer) and "c1".."cN"
        (the output of recurrent layer 1..N, N = context_layers; "cN" equals "c")."""
        return ("z", "c", *(f"c{i}" for i in range(1, self.config.context_layers + 1)))

    def layer_dim(self, layer: str) -> int:
        """Feature size D of ``layer`` (see :attr:`layers`): z_dim for "z", else c_dim."""
        if layer not in self.layers:
            raise ValueError(f"Expected layer in {list(self.layers)}. Found: {layer!r}")
        return self.z_dim if layer == "z" else self.c_dim

    def num_frames(self, num_samples: int) -> int:
        """Frames the encoder gives for ``num_samples`` samples; ``(n + 1) // 160`` by default."""
        n = int(num_samples)
        cfg = self.config
        for k, s, p in zip(
            cfg.encoder_kernels, cfg.encoder_strides, cfg.encoder_paddings, strict=True
        ):
            n = (n + 2 * p - k) // s + 1
            if n <= 0:
                return 0
        return n

    @property
    def min_samples(self) -> int:
        """The fewest samples that give at least one frame."""
        n = 1
        while self.num_frames(n) < 1:
            n += 1
        return n

    @property
    def receptive_field(self) -> tuple[int, int]:
        """(left_context, right_context) in samples around ``frame_shift * t`` for frame t."""
        cfg = self.config
        left, size, jump = 0, 1, 1
        for k, s, p in zip(
            cfg.encoder_kernels, cfg.encoder_strides, cfg.encoder_paddings, strict=True
        ):
            left += p * jump
            size += (k - 1) * jump
            jump *= s
        return left, size - left - 1

    # ----- forward -----
    def forward(self, wav: Tensor) -> tuple[Tensor, Tensor]:
        """wav: (B, N) -> z: (B, T, z_dim), c: (B, T, c_dim) with T = num_frames(N).

        Every row is N samples long; for a right-padded batch of utterances of different
        lengths use :meth:`forward_padded`, which also returns each row's frame count.
        """
        if wav.dim() != 2:
            raise ValueError(f"Expected wav of shape (B, N). Found: {tuple(wav.shape)}")
        if self.num_frames(wav.shape[1]) < 1:
            raise ValueError(
                f"Expected at least {self.min_samples} samples for one frame. Found: {wav.shape[1]}"
            )
        z = self.encoder(wav)  # (B, T, C)
        c, _ = self.context(z)  # (B, T, c_dim)
        return z, c

    def forward_padded(
        self, wav: Tensor, lengths: "Tensor | list[int]", precision: str = "fp32"
    ) -> tuple[Tensor, Tensor, Tensor]:
        """A right-padded batch of utterances, each row exactly as one utterance alone gives.

        Row i of z and c equals ``forward(wav[i:i+1, :lengths[i]])`` on its valid frames (float
        rounding aside, < 1e-5); the frames past ``frame_lengths[i]`` are zero. In eval mode (batch
        norm uses its running statistics); training-mode batch norm would see the padding.

        Args:
            wav: (B, N) float samples, row i valid on its first ``lengths[i]`` samples.
            lengths: (B,) samples of each row, 0 <= lengths[i] <= N.
            precision: "fp32", or "bf16" for the encoder's bfloat16 GEMMs (see :meth:`extract`).

        Returns:
            z: (B, T, z_dim), c: (B, T, c_dim) and frame_lengths: (B,) int64 on wav's device,
            with T = num_frames(N) and frame_lengths[i] = num_frames(lengths[i]) (0 for a row
            shorter than ``min_samples``).
        """
        z, frame_lengths = self.encode_padded(wav, lengths, precision)  # (B, T, C), (B,)
        batch, frames = z.shape[:2]
        rows = [i for i, t in enumerate(frame_lengths.tolist()) if t > 0]
        if not rows:
            return z, z.new_zeros(batch, frames, self.c_dim), frame_lengths
        every = len(rows) == batch
        # Packed, so the recurrent network stops at each row's own end.
        lengths_cpu = frame_lengths[rows].cpu()
        packed = pack_padded_sequence(
            z if every else z[rows], lengths_cpu, batch_first=True, enforce_sorted=False
        )
        c_packed, _ = self.run_context(packed)
        c, _ = pad_packed_sequence(c_packed, batch_first=True, total_length=frames)  # (B', T, D)
        if not every:  # rows too short for a frame keep zeros
            index = (torch.tensor(rows, device=c.device),)
            c = z.new_zeros(batch, frames, self.c_dim).index_put(index, c)
        return z, c, frame_lengths

    def encode_padded(
        self, wav: Tensor, lengths: "Tensor | list[int]", precision: str = "fp32"
    ) -> tuple[Tensor, Tensor]:
        """The encoder part of :meth:`forward_padded`: z (B, T, z_dim) float32, frame_lengths (B,).

        Right-padding changes only the frames whose receptive field reaches past a row's end (the
        convs' own zero padding differs from the batch's). Those last frames are recomputed from
        a short pass over the row's tail, which starts on the frame grid with a left margin, as
        chunked :meth:`extract` does. A non-causal encoder (norm "instance") runs each row alone.
        """
        if wav.dim() != 2:
            raise ValueError(f"Expected wav of shape (B, N). Found: {tuple(wav.shape)}")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"Expected precision 'fp32' or 'bf16'. Found: {precision!r}")
        sizes = [int(n) for n in (lengths.tolist() if isinstance(lengths, Tensor) else lengths)]
        if len(sizes) != wav.shape[0] or any(not 0 <= n <= wav.shape[1] for n in sizes):
            raise ValueError(
                f"Expected {wav.shape[0]} lengths in [0, {wav.shape[1]}]. Found: {sizes}"
            )
        weights = self.encoder.gemm_weights(torch.bfloat16) if precision == "bf16" else None

        def encode(x: Tensor) -> Tensor:  # (B, N) -> (B, T, C) float32
            return self.encoder(x) if weights is None else self.encoder.forward_gemm(x, weights)

        frames = [self.num_frames(n) for n in sizes]
        frame_lengths = torch.tensor(frames, dtype=torch.long, device=wav.device)
        total = self.num_frames(wav.shape[1])
        if total == 0:
            return wav.new_zeros(wav.shape[0], 0, self.z_dim), frame_lengths
        # A non-causal encoder sees the padding in every frame: each row then runs alone.
        z_padded = encode(wav).float() if self.causal else None  # (B, T, C)
        shift, (left, right) = self.frame_shift, self.receptive_field
        margin_l, margin_r = -(-left // shift) + 2, -(-right // shift) + 2
        rows = []
        for i, (n, valid) in enumerate(zip(sizes, frames, strict=True)):
            body = max(0, valid - margin_r) if self.causal else 0  # frames that never see padding
            start = max(0, body - margin_l)  # the tail's pass starts on the frame grid
            parts = [z_padded[i, :body]] if body > 0 else []
            if valid > body:
                tail = encode(wav[i : i + 1, start * shift : n]).float()  # (1, T_tail, C)
                parts.append(tail[0, body - start : valid - start])
            parts.append(wav.new_zeros(total - valid, self.z_dim, dtype=torch.float32))
            rows.append(torch.cat(parts))  # (T, C)
        return torch.stack(rows), frame_lengths  # (B, T, C), (B,)

    def run_context(self, z: Tensor, state: object = None) -> tuple[Tensor, object]:
        """z: (B, T, z_dim), optional recurrent state -> c: (B, T, c_dim) and the new state."""
        return self.context(z, state)

    def context_stack(self, depth: int) -> list[nn.Module]:
        """The first ``depth`` recurrent layers as single-layer RNNs sharing this model's weights.

        A stacked nn.GRU/LSTM/RNN (no dropout) is exactly its layers run one after the other,
        so running these in turn gives layer ``depth``'s output, which the fused module hides.
        The modules are not registered: the state dict is unchanged.
        """
        cfg = self.config
        stack = []
        for i in range(depth):
            in_dim = cfg.encoder_channels if i == 0 else cfg.context_dim
            single = _RNNS[cfg.context_type](in_dim, cfg.context_dim, batch_first=True)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                # RNNBase.__setattr__ keeps its flat weight list in step with these.
                setattr(single, f"{name}_l0", getattr(self.context, f"{name}_l{i}"))
            stack.append(single.train(self.context.training))
        return stack

    @torch.no_grad()
    def extract(
        self,
        wav: "Tensor | np.ndarray",
        layer: str = "c",
        chunk_seconds: float = 20.0,
        precision: str = "fp32",
    ) -> Tensor:
        """Features of one utterance, computed in chunks with the recurrent state carried across.

        Args:
            wav: (N,) float32 samples at ``sample_rate`` (or (1, N)); a torch tensor or a numpy
                array such as :func:`cpcspeech.load_audio` returns.
            layer: "c" for context vectors c_t (the top recurrent layer), "z" for encoder
                outputs z_t, or "c1".."cN" for the output of recurrent layer 1..N (see
                :attr:`layers`; ZeroSpeech 2021's baseline uses "c2" of a 4-layer LSTM).
            chunk_seconds: audio per chunk; bounds peak memory and does not change the result
                (beyond float rounding, < 1e-5). With norm "instance" (not causal) the encoder
                runs on the whole utterance in one pass whatever this is, as CPC_audio does.
            precision: "fp32" runs the encoder exactly as :meth:`forward`. "bf16" runs the
                encoder's convolutions as bfloat16 GEMMs (same weights, rounded to bf16; norms,
                the GRU/LSTM and the output stay float32), for CPUs with native bf16 (AVX512-BF16
                or AMX); speeds in benchmarks/extract_speed.py. Rounding to an 8-bit mantissa
                gives a relative error vs fp32 (||bf16 - fp32|| / ||fp32||) of about 3e-3 on z
                and 5e-4 on c with norm "none", and about 6e-3 on z with "channel"/"layer"
                (seeded random weights and noise input; trained weights may differ).

        Batch norm always uses its running statistics here (the model runs in eval mode for the
        call and is put back as it was).

        Returns:
            (T, D) float32 on the model's device, T = num_frames(N), D = layer_dim(layer);
            (0, D) when N is shorter than ``min_samples``.
        """
        dim = self.layer_dim(layer)
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"Expected precision 'fp32' or 'bf16'. Found: {precision!r}")
        if not 0 < chunk_seconds < math.inf:
            raise ValueError(f"Expected a finite chunk_seconds > 0. Found: {chunk_seconds}")
        if isinstance(wav, np.ndarray):
            wav = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
        if wav.dim() == 2 and wav.shape[0] == 1:
            wav = wav[0]
        if wav.dim() != 1:
            raise ValueError(f"Expected wav of shape (N,) or (1, N). Found: {tuple(wav.shape)}")
        param = next(self.parameters())
        wav = wav.to(device=param.device, dtype=param.dtype)
        total = self.num_frames(wav.shape[0])
        # Filled in place: concatenating chunk outputs would briefly double the peak memory.
        out = wav.new_empty(total, dim)  # (T, D)
        if total == 0:
            return out
        was_training = self.training
        self.eval()
        try:
            return self._extract_into(out, wav, layer, chunk_seconds, precision)
        finally:
            self.train(was_training)

    def _extract_into(
        self, out: Tensor, wav: Tensor, layer: str, chunk_seconds: float, precision: str
    ) -> Tensor:
        """The chunk loop of :meth:`extract`: fills out (T, D) from wav (N,)."""
        total = out.shape[0]
        weights = self.encoder.gemm_weights(torch.bfloat16) if precision == "bf16" else None
        shift = self.frame_shift
        left, right = self.receptive_field
        # Margins of whole frames keep every layer's stride grid aligned with the full pass, and
        # are wide enough that kept frames never see a chunk edge's zero padding.
        margin_l = -(-left // shift) + 2
        margin_r = -(-right // shift) + 2
        chunk = max(1, int(chunk_seconds * self.sample_rate) // shift)
        if not self.causal:
            chunk = total  # a chunk's statistics would differ from the utterance's
        if layer in ("c", "z"):
            stack = [self.context]
        else:
            stack = self.context_stack(int(layer[1:]))  # layer "ck": the first k layers
        states: list[object] = [None] * len(stack)
        for t0 in range(0, total, chunk):
            t1 = min(t0 + chunk, total)
            a = max(0, t0 - margin_l)
            b = t1 + margin_r
            seg = wav[a * shift : (b * shift if b < total else wav.shape[0])].unsqueeze(0)
            if weights is None:
                z = self.encoder(seg)  # (1, T_seg, C)
            else:
                z = self.encoder.forward_gemm(seg, weights)  # (1, T_seg, C) bfloat16
            z = z[:, t0 - a : t1 - a].float()  # (1, t1 - t0, C)
            if layer == "z":
                out[t0:t1] = z[0]
                continue
            c = z
            for i, rnn in enumerate(stack):
                c, states[i] = rnn(c, states[i])  # (1, t1 - t0, c_dim)
            out[t0:t1] = c[0]
        return out  # (T, D)

    # ----- save / load (config.json + model.safetensors, no pickle; see serialization.py) -----
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json and model.safetensors into ``directory`` (atomic per file)."""
        return save_model_dir(self, self.config, directory)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        revision: str | None = None,
        map_location: str | torch.device = "cpu",
    ) -> "CPCModel":
        """Load a local model directory (config.json + model.safetensors) in eval mode, strictly.

        A training checkpoint folder (``checkpoints/step-NNNNNNNN``) is such a directory too. Any
        other spec (a shipped name such as "default", a Hub repo id, a training run folder, a
        published name, a CPC_audio checkpoint) or a ``revision`` raises ModelLoadError naming
        their loader, :func:`cpcspeech.load_model`, which accepts every spec ``--model`` accepts.
        """
        path = Path(directory).expanduser()
        if revision is None and (path / CONFIG_NAME).is_file():
            return cls.from_directory(path, map_location=map_location).eval()
        if revision is not None:
            found = f"revision {revision!r}, which only a Hub repo id takes"
        elif path.is_dir():
            found = f"a folder without {CONFIG_NAME}"
        else:
            found = "a file" if path.exists() else "no such path"
        spec = os.fspath(directory)
        call = f"{spec!r}" + (f", revision={revision!r}" if revision is not None else "")
        raise ModelLoadError(
            f"CPCModel.from_pretrained({call}): expected a local model directory ({CONFIG_NAME} "
            f"+ {WEIGHTS_NAME}), found {found}; for a shipped name, a Hub repo id, a training run, "
            f"a published name or a CPC_audio checkpoint use cpcspeech.load_model({call}), which "
            "returns (model, source)"
        )

    @classmethod
    def from_directory(
        cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu"
    ) -> "CPCModel":
        """Load config.json + model.safetensors from a local directory, strictly.

        The model is returned in the mode a new module has (training); see :meth:`from_pretrained`
        for eval mode.
        """
        config = read_model_config(directory)  # every size within RANGES
        state = read_checked_weights(cls, config, directory, map_location)
        model = cls(config)
        load_state_strict(model, state, str(Path(directory) / WEIGHTS_NAME))
        return model.to(map_location)
