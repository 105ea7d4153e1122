"""A folder of many short files against one long file: x real time and peak RSS of `extract`.

Synthesises --files files of 2-8 s (sample rates 8, 16, 22.05, 44.1 and 48 kHz; WAV, FLAC and
OGG, mono and stereo) in a temporary folder, and one 16 kHz FLAC of the same total duration.
Each case runs `extract_features` in a fresh subprocess, so its peak RSS (ru_maxrss) is its own;
the first case run is a warm-up of the page cache. Goals (issue 12): the folder within 15 % of
the long file's speed, and its peak RSS within 10 % of the long file's.

Run: python benchmarks/extract_corpus.py [--files 500] [--model default] [--precision bf16]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

# Runnable from a clone without installing the package (python benchmarks/extract_corpus.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RATES = (8000, 16000, 22050, 44100, 48000)
FORMATS = (("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS"))


def speechlike(seconds: float, rate: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """(N, channels) float32 noise under a slow random envelope (speed does not depend on it)."""
    n = int(seconds * rate)
    envelope = np.interp(np.arange(n), np.linspace(0, n, 20), rng.uniform(0.1, 1.0, 20))
    data = rng.normal(0, 0.1, (n, channels)) * envelope[:, None]
    return data.astype(np.float32)


def make_corpus(root: Path, num_files: int, seed: int = 0) -> tuple[Path, Path, float]:
    """Write ``num_files`` short files under root/folder and one long file; return both, seconds."""
    rng = np.random.default_rng(seed)
    folder = root / "folder"
    total = 0.0
    for i in range(num_files):
        seconds = float(rng.uniform(2.0, 8.0))
        rate = int(rng.choice(RATES))
        ext, subtype = FORMATS[i % len(FORMATS)]
        channels = 2 if i % 7 == 0 else 1
        path = folder / f"spk{i % 25:02d}" / f"utt{i:05d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), speechlike(seconds, rate, channels, rng), rate, subtype=subtype)
        total += sf.info(str(path)).duration
    long_file = root / "long.flac"
    with sf.SoundFile(str(long_file), "w", 16000, 1, subtype="PCM_16") as f:
        left = total
        while left > 0:  # written in 60 s blocks so this script's own memory stays small
            block = min(left, 60.0)
            f.write(speechlike(block, 16000, 1, rng)[:, 0])
            left -= block
    return folder, long_file, total


def worker(args: argparse.Namespace) -> None:
    """Extract one input to a .npy in a temporary folder; print one JSON line."""
    import torch

    from cpcspeech.extract import extract_features
    from cpcspeech.weights.resolve import load_model_for_cli

    torch.set_num_threads(args.threads)
    model, _ = load_model_for_cli(args.model)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = extract_features(
            model, [args.input], Path(out) / "feats.npy", precision=args.precision
        )
        wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "files": len(summary.ok),
                "audio_seconds": summary.audio_seconds,
                "wall": wall,
                "peak_mib": peak_kib / 1024,
            }
        )
    )


def run_case(args: argparse.Namespace, path: Path) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--input", str(path)]
    command += ["--model", args.model, "--precision", args.precision]
    command += ["--threads", str(args.threads)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per case (median)")
    parser.add_argument("--model", default="default", help="'default', 'random' or a spec")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        folder, long_file, total = make_corpus(Path(tmp), args.files)
        print(
            f"corpus: {args.files} files, {total:.0f} s (2-8 s each; {', '.join(map(str, RATES))}"
            f" Hz; wav/flac/ogg) and one {total:.0f} s FLAC; model {args.model}, "
            f"{args.precision}, {args.threads} threads"
        )
        run_case(args, long_file)  # warm-up: page cache, imports
        results: dict[str, list[dict]] = {"long file": [], "folder": []}
        for _ in range(args.repeats):  # alternate the cases so load changes hit both alike
            results["long file"].append(run_case(args, long_file))
            results["folder"].append(run_case(args, folder))
    print("case        files  audio s  x real time (median)  peak RSS (max)")
    summary = {}
    for name, runs in results.items():
        speed = statistics.median(r["audio_seconds"] / r["wall"] for r in runs)
        peak = max(r["peak_mib"] for r in runs)
        summary[name] = (speed, peak)
        print(
            f"{name:<10} {runs[0]['files']:>6} {runs[0]['audio_seconds']:>8.0f} "
            f"{speed:>20.1f}x {peak:>12.0f} MiB"
        )
    (long_speed, long_peak), (folder_speed, folder_peak) = summary["long file"], summary["folder"]
    print(
        f"folder / long file: speed {folder_speed / long_speed:.2f} (goal >= 0.85), "
        f"peak RSS {folder_peak / long_peak:.2f} (goal <= 1.10)"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
