"""The CPC audio model (van den Oord et al. 2018, section 3.1): strided CNN encoder + recurrent
context (GRU as in the paper; LSTM and RNN too, for CPC_audio checkpoints).

The W_k prediction heads belong to the loss (``cpcspeech.train.loss``), not to this model.
"""

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from cpcspeech.config import ModelConfig, section_from_dict
from cpcspeech.errors import ModelLoadError
from cpcspeech.files import temp_sibling, umask_mode, write_text_atomic
from cpcspeech.runtime import one_line

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "cpcspeech-cpc"
FORMAT_VERSION = 1


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
        """wav: (B, N) -> z: (B, T, z_dim), c: (B, T, c_dim) with T = num_frames(N)."""
        if wav.dim() != 2:
            raise ValueError(f"Expected wav of shape (B, N). Found: {tuple(wav.shape)}")
        if self.num_frames(wav.shape[1]) < 1:
            raise ValueError(
                f"Expected at least {self.min_samples} samples for one frame. Found: {wav.shape[1]}"
            )
        z = self.encoder(wav)  # (B, T, C)
        c, _ = self.context(z)  # (B, T, c_dim)
        return z, c

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

    # ----- save / load (config.json + model.safetensors, no pickle) -----
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json and model.safetensors into ``directory`` (atomic per file)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION}
        meta.update(json.loads(json.dumps(dataclasses.asdict(self.config))))
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = temp_sibling(directory / WEIGHTS_NAME)
        save_file(state, str(tmp), metadata={"format": "pt"})
        os.chmod(tmp, umask_mode())  # safetensors creates its files with mode 0600
        os.replace(tmp, directory / WEIGHTS_NAME)
        write_text_atomic(directory / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = "default",
        revision: str | None = None,
        map_location: str | torch.device = "cpu",
    ) -> "CPCModel":
        """Load a model in eval mode: a local directory, "default" (shipped weights), a Hub repo
        id, a CPC_audio checkpoint (converted in memory) or a published name (``cpcspeech models``).

        Loading is strict: a missing or unexpected tensor raises ModelLoadError.
        """
        from cpcspeech.weights.resolve import load_model  # avoids a cycle: pretrained -> model

        model, _ = load_model(str(name_or_path), revision=revision, map_location=map_location)
        return model

    @classmethod
    def from_directory(
        cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu"
    ) -> "CPCModel":
        """Load config.json + model.safetensors from a local directory, strictly."""
        directory = Path(directory)
        config = read_model_config(directory)  # every size within RANGES
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise ModelLoadError(f"{directory}: expected {WEIGHTS_NAME}, found none")
        # Nothing is allocated until the header agrees with the config: a config.json asking for
        # huge layers fails here, in milliseconds, whatever the weights file holds.
        check_header_matches(cls, config, read_safetensors_header(weights), str(weights))
        try:
            state = load_file(str(weights), device=str(map_location))
        except Exception as err:  # safetensors raises several types for corrupt files
            raise ModelLoadError(
                f"{weights}: not a valid safetensors file ({one_line(err)})"
            ) from err
        check_finite(state, str(weights))
        model = cls(config)
        load_state_strict(model, state, str(weights))
        return model.to(map_location)


def read_model_config(directory: str | os.PathLike) -> ModelConfig:
    """Read and validate ``config.json`` written by :meth:`CPCModel.save_pretrained`."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ModelLoadError(f"{directory}: expected a cpcspeech {CONFIG_NAME}, found none")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("model_type") != MODEL_TYPE:
        found = meta.get("model_type") if isinstance(meta, dict) else type(meta).__name__
        raise ModelLoadError(
            f"{path}: expected model_type {MODEL_TYPE!r}, found {found!r}; "
            "this is not a cpcspeech model"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"{path}: expected format_version {FORMAT_VERSION}, found "
            f"{meta.get('format_version')!r}; upgrade cpcspeech"
        )
    values = {k: v for k, v in meta.items() if k not in ("model_type", "format_version")}
    try:
        return section_from_dict(ModelConfig, values, "model")
    except Exception as err:
        raise ModelLoadError(f"{path}: incompatible model config: {err}") from err


def _names(names: list[str], limit: int = 4) -> str:
    """A short list for an error message: the first few names and how many more."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{f', ... and {len(names) - limit} more' if len(names) > limit else ''}]"


def _compare_shapes(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], source: str
) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ModelLoadError(
            f"{source}: weights do not match the model config; missing {_names(missing)}, "
            f"unexpected {_names(unexpected)}"
        )
    for key, shape in expected.items():
        if tuple(found[key]) != tuple(shape):
            raise ModelLoadError(
                f"{source}: tensor {key} expected shape {tuple(shape)} (from the model config), "
                f"found {tuple(found[key])}"
            )


SAFETENSORS_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


def read_safetensors_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name -> (dtype, shape) from a safetensors file's header, without reading tensors.

    The format: 8 bytes little-endian header length n, then n bytes of JSON mapping each name to
    ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data after the header).
    Offsets and sizes are checked against the file size, so the tensors can be no larger than
    the file.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _not_safetensors(path, f"{size} bytes")
        length = int.from_bytes(prefix, "little")
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise _not_safetensors(path, f"header length {length} in a {size}-byte file")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _not_safetensors(path, f"header is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise _not_safetensors(path, "header is not a mapping")
    data_bytes = size - 8 - length
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = entry["dtype"], tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (TypeError, KeyError, ValueError):
            raise _not_safetensors(path, f"malformed entry {name!r}") from None
        if dtype not in SAFETENSORS_FLOAT_DTYPES:
            raise ModelLoadError(
                f"{path}: tensor {name} expected a float dtype {SAFETENSORS_FLOAT_DTYPES}, "
                f"found {dtype!r}"
            )
        itemsize = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}[dtype]
        if any(d < 0 for d in shape) or not 0 <= begin <= end <= data_bytes:
            raise _not_safetensors(
                path, f"tensor {name} at bytes {begin}..{end} of {data_bytes}; truncated?"
            )
        if math.prod(shape) * itemsize != end - begin:
            raise _not_safetensors(path, f"tensor {name} of shape {shape} in {end - begin} bytes")
        out[name] = (dtype, shape)
    return out


def _not_safetensors(path: Path, reason: str) -> ModelLoadError:
    return ModelLoadError(f"{path}: not a valid safetensors file ({reason})")


def expected_shapes(cls: type, config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape the model built from ``config`` holds, on the meta device.

    Built generically (no per-architecture arithmetic), and without allocating memory.
    """
    with torch.device("meta"):
        model = cls(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_header_matches(
    cls: type,
    config: ModelConfig,
    header: dict[str, tuple[str, tuple[int, ...]]],
    source: str,
) -> None:
    """ModelLoadError unless the header holds exactly the tensors ``config`` implies."""
    _compare_shapes(
        expected_shapes(cls, config), {k: shape for k, (_, shape) in header.items()}, source
    )


def check_finite(state: dict[str, Tensor], source: str) -> None:
    """ModelLoadError naming the first tensor that holds NaN or inf, and how many in all."""
    bad = {}
    for key, value in state.items():
        if value.is_floating_point():
            count = int(value.numel() - torch.isfinite(value).sum())
            if count:
                bad[key] = count
    if bad:
        first = next(iter(bad))
        raise ModelLoadError(
            f"{source}: expected finite weights, found {sum(bad.values())} NaN/inf value(s) in "
            f"{len(bad)} tensor(s) (first: {first}, {bad[first]} of {state[first].numel()})"
        )


def load_state_strict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """load_state_dict with strict=True, re-raised as ModelLoadError naming the tensors."""
    _compare_shapes(
        {k: tuple(v.shape) for k, v in model.state_dict().items()},
        {k: tuple(v.shape) for k, v in state.items()},
        source,
    )
    model.load_state_dict(state, strict=True)
