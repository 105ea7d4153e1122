"""Speed of CPCModel.extract in x real time (fp32 and bf16), peak memory, and bf16 error.

Run: .venv/bin/python benchmarks/extract_speed.py [--threads 2] [--models LIST] [--quick]
--models (default "default,random,default@before"): "default" is the shipped weights
(norm: channel), "random" the paper model (norm: none, seeded init), and "SPEC@before" the same
weights through the channel-norm encoder as it was before issue 12 (channels-first Conv1d, then
the ChannelNorm module; in bf16 the norm round-trips through float32), kept here only to give
before/after figures from one run. Cases are interleaved across models, so load changes hit all
alike. Each (model, duration, precision) runs in a fresh subprocess, so its peak RSS
(ru_maxrss) is its own. On a machine with CUDA (--device auto) it times the GPU instead, and
peak memory is torch.cuda.max_memory_allocated.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

# Runnable from a clone without installing the package (python benchmarks/extract_speed.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cpcspeech.config import ModelConfig  # noqa: E402
from cpcspeech.model import random_model  # noqa: E402
from cpcspeech.model.cpc import CPCModel  # noqa: E402
from cpcspeech.weights.resolve import load_model as load_any_model  # noqa: E402

ASSUMED_GFLOP_PER_SECOND = 5.0  # the model's cost per audio second used for the matmul limit
CASES = [(10.0, 5), (600.0, 3), (3600.0, 1)]  # (audio seconds, timed repeats)
QUICK_CASES = [(10.0, 3), (60.0, 1)]


def model_gflop_per_second(config: ModelConfig) -> float:
    """Multiply-adds x 2 per audio second: every conv layer, then the GRU/LSTM (biases ignored)."""
    flop, rate, in_channels = 0.0, float(config.sample_rate), 1
    for kernel, stride in zip(config.encoder_kernels, config.encoder_strides, strict=True):
        rate /= stride  # output frames per second of this layer
        flop += 2 * in_channels * kernel * config.encoder_channels * rate
        in_channels = config.encoder_channels
    gates = 3 if config.context_type == "gru" else 4
    in_dim = config.encoder_channels
    for _ in range(config.context_layers):
        flop += 2 * gates * (in_dim + config.context_dim) * config.context_dim * rate
        in_dim = config.context_dim
    return flop / 1e9


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Median GFLOP/s of a (size x size) @ (size x size) product in ``dtype``."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def reference_forward(encoder, wav: torch.Tensor) -> torch.Tensor:
    """The encoder before issue 12: channels-first Conv1d -> norm module -> ReLU."""
    x = wav.unsqueeze(1)  # (B, 1, N)
    for conv, norm in zip(encoder.convs, encoder.norms, strict=True):
        x = F.relu(norm(conv(x)))  # (B, C, T)
    return x.transpose(1, 2)  # (B, T, C)


def reference_forward_gemm(encoder, wav: torch.Tensor, weights: list) -> torch.Tensor:
    """forward_gemm before issue 12: every norm transposed to float32 (B, C, T) and back."""
    dtype = weights[0][0].dtype
    batch = wav.shape[0]
    x = wav.to(dtype).unsqueeze(2)  # (B, N, 1)
    for conv, norm, (weight, bias) in zip(encoder.convs, encoder.norms, weights, strict=True):
        kernel, stride, padding = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        x = F.pad(x, (0, 0, padding, padding))
        frames = (x.shape[1] - kernel) // stride + 1
        blocks = x.unfold(1, kernel, stride).transpose(2, 3).reshape(batch * frames, -1)
        x = torch.addmm(bias, blocks, weight).view(batch, frames, -1)  # (B, T, C)
        if not isinstance(norm, torch.nn.Identity):
            x = norm(x.float().transpose(1, 2)).transpose(1, 2).to(dtype)
        x = x.relu_()
    return x


def load_model(spec: str) -> CPCModel:
    name, _, variant = spec.partition("@")
    if name == "random":
        model = random_model(0).eval()  # the weights torch.manual_seed(0); CPCModel() gives
    else:
        model, _ = load_any_model(name)
    if variant == "before":
        encoder = model.encoder
        encoder.forward = types.MethodType(reference_forward, encoder)
        encoder.forward_gemm = types.MethodType(reference_forward_gemm, encoder)
    elif variant:
        raise SystemExit(f"--models: expected SPEC or SPEC@before, found {spec!r}")
    return model


def describe(spec: str) -> str:
    name, _, variant = spec.partition("@")
    text = {"random": "paper model (norm none)", "default": "shipped (norm channel)"}.get(
        name, name
    )
    return text + (", before" if variant else "")


def random_audio(seconds: float, seed: int = 0) -> torch.Tensor:
    """(N,) float32 noise at 16 kHz; the speed does not depend on the signal."""
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(seconds * 16000), generator=generator)


def worker(args: argparse.Namespace) -> None:
    """Time ``extract`` on one duration and precision; print one JSON line."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model(args.model).to(device)
    wav = random_audio(args.seconds).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # Warm-up on a short clip with the same chunk shapes: oneDNN builds its kernels per shape.
    model.extract(random_audio(min(args.seconds, 45.0), seed=1), precision=args.precision)
    sync()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model.extract(wav, precision=args.precision)
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"times": times, "peak_mib": peak_mib}))


def run_case(
    args: argparse.Namespace, spec: str, seconds: float, repeats: int, precision: str
) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--model", spec]
    command += ["--device", args.device]
    command += ["--threads", str(args.threads), "--seconds", str(seconds)]
    command += ["--repeats", str(repeats), "--precision", precision]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--models",
        default="default,random,default@before",
        help="comma-separated: 'default', 'random' (paper model), a spec, or SPEC@before",
    )
    parser.add_argument("--matmul-size", type=int, default=2048, help="the limit's matmul size")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole set of cases")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--model", default="random", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="10 s and 60 s only")
    parser.add_argument(
        "--case",
        action="append",
        help="SECONDS:REPEATS, repeatable; replaces the default cases (e.g. --case 10:5)",
    )
    parser.add_argument(
        "--precisions",
        default="fp32,bf16",
        help="comma-separated; use fp32 alone on a CPU without bf16 instructions (no "
        "avx512_bf16 / AMX in /proc/cpuinfo), where bf16 is emulated and slow",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        worker(args)
        return

    torch.set_num_threads(args.threads)
    specs = args.models.split(",")
    model = load_model(specs[0])
    exact = model_gflop_per_second(model.config)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
    print(f"torch {torch.__version__}, {where}, threads={args.threads}, models={args.models}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"model cost: {exact:.3f} GFLOP per audio second from the config "
        f"(limits below assume {ASSUMED_GFLOP_PER_SECOND} GFLOP/s of audio)"
    )
    precisions = args.precisions.split(",")
    limit = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if precision not in precisions:
            continue
        gflops = matmul_gflops(dtype, size=args.matmul_size)
        limit[precision] = gflops
        print(
            f"matmul {args.matmul_size}^2 {precision}: {gflops:.0f} GFLOP/s -> limit "
            f"{gflops / ASSUMED_GFLOP_PER_SECOND:.1f}x real time"
        )

    times: dict[tuple[str, float, str], list[float]] = {}
    peaks: dict[tuple[str, float, str], float] = {}
    cases = QUICK_CASES if args.quick else CASES
    if args.case:
        cases = [(float(c.split(":")[0]), int(c.split(":")[1])) for c in args.case]
    for _ in range(args.rounds):
        for seconds, repeats in cases:
            for precision in precisions:
                for spec in specs:  # interleaved, so the models share the load changes
                    result = run_case(args, spec, seconds, repeats, precision)
                    key = (spec, seconds, precision)
                    times.setdefault(key, []).extend(result["times"])
                    peaks[key] = max(peaks.get(key, 0.0), result["peak_mib"])
    print(
        "model                            audio   precision  x real time (median)  runs  "
        "vs paper model  of matmul limit  peak memory"
    )
    for spec in specs:
        for seconds, _ in cases:
            for precision in precisions:
                key = (spec, seconds, precision)
                median = statistics.median(times[key])
                paper = ("random", seconds, precision)
                ratio = median / statistics.median(times[paper]) if paper in times else None
                speed = seconds / median
                fraction = speed * ASSUMED_GFLOP_PER_SECOND / limit[precision]
                label = f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
                versus = f"{ratio:.2f}x time" if ratio is not None else "-"
                print(
                    f"{describe(spec):<32} {label:<7} {precision:<10} {speed:>19.1f}x  "
                    f"{len(times[key]):>4}  {versus:>14}  {fraction:>15.0%}  "
                    f"{peaks[key]:.0f} MiB"
                )

    wav = random_audio(10.0)
    for layer in ("z", "c") if "bf16" in precisions else ():
        fp32 = model.extract(wav, layer=layer)
        bf16 = model.extract(wav, layer=layer, precision="bf16")
        diff = (bf16 - fp32).abs().max().item()
        relative = ((bf16 - fp32).norm() / fp32.norm()).item()
        print(
            f"bf16 vs fp32 on 10 s, {describe(specs[0])}, {layer}: max abs diff {diff:.2e} "
            f"(max |fp32| {fp32.abs().max().item():.2e}), relative error {relative:.2e}"
        )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
