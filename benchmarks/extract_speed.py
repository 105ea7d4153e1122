"""CPU speed of CPCModel.extract in x real time (fp32 and bf16), peak memory, and bf16 error.

Run: .venv/bin/python benchmarks/extract_speed.py [--threads 2] [--model SPEC] [--quick]
Each (duration, precision) runs in a fresh subprocess, so its peak RSS (ru_maxrss) is its own.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

# Runnable from a clone without installing the package (python benchmarks/extract_speed.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cpcspeech.config import ModelConfig  # noqa: E402
from cpcspeech.model import CPCModel  # noqa: E402

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


def load_model(spec: str) -> CPCModel:
    if spec == "random":
        torch.manual_seed(0)
        return CPCModel().eval()
    return CPCModel.from_pretrained(spec).eval()


def random_audio(seconds: float, seed: int = 0) -> torch.Tensor:
    """(N,) float32 noise at 16 kHz; the speed does not depend on the signal."""
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(seconds * 16000), generator=generator)


def worker(args: argparse.Namespace) -> None:
    """Time ``extract`` on one duration and precision; print one JSON line."""
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    wav = random_audio(args.seconds)
    # Warm-up on a short clip with the same chunk shapes: oneDNN builds its kernels per shape.
    model.extract(random_audio(min(args.seconds, 45.0), seed=1), precision=args.precision)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model.extract(wav, precision=args.precision)
        times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"times": times, "peak_mib": peak_kib / 1024}))


def run_case(args: argparse.Namespace, seconds: float, repeats: int, precision: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--model", args.model]
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
    parser.add_argument("--model", default="random", help="'random' (seeded init) or a spec")
    parser.add_argument("--quick", action="store_true", help="10 s and 60 s only")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    exact = model_gflop_per_second(model.config)
    print(f"torch {torch.__version__}, {cpu_name()}, threads={args.threads}, model={args.model}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"model cost: {exact:.3f} GFLOP per audio second from the config "
        f"(limits below assume {ASSUMED_GFLOP_PER_SECOND} GFLOP/s of audio)"
    )
    limit = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        gflops = matmul_gflops(dtype)
        limit[precision] = gflops
        print(
            f"matmul 2048x2048 {precision}: {gflops:.0f} GFLOP/s -> limit "
            f"{gflops / ASSUMED_GFLOP_PER_SECOND:.1f}x real time"
        )

    print("audio      precision  x real time (median)  runs  fraction of matmul limit  peak RSS")
    for seconds, repeats in QUICK_CASES if args.quick else CASES:
        for precision in ("fp32", "bf16"):
            result = run_case(args, seconds, repeats, precision)
            speed = seconds / statistics.median(result["times"])
            fraction = speed * ASSUMED_GFLOP_PER_SECOND / limit[precision]
            label = f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
            print(
                f"{label:<10} {precision:<10} {speed:>19.1f}x  {repeats:>4}  "
                f"{fraction:>24.0%}  {result['peak_mib']:.0f} MiB"
            )

    wav = random_audio(10.0)
    for layer in ("z", "c"):
        fp32 = model.extract(wav, layer=layer)
        bf16 = model.extract(wav, layer=layer, precision="bf16")
        diff = (bf16 - fp32).abs().max().item()
        relative = ((bf16 - fp32).norm() / fp32.norm()).item()
        print(
            f"bf16 vs fp32 on 10 s, {layer}: max abs diff {diff:.2e} "
            f"(max |fp32| {fp32.abs().max().item():.2e}), relative error {relative:.2e}"
        )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
