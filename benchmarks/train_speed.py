"""CPU training speed of the paper's model + InfoNCE: steps/s and audio-s/s, fp32 vs bf16 autocast.

Also times a large matmul in each precision, to say what fraction of the machine's matmul limit a
training step reaches. Usage: python benchmarks/train_speed.py [--repeats 5] [--profile]

``--augment`` instead measures what time-domain augmentation (augment.py) costs a training step:
the CPU time of augmenting one batch in-process, and the median wall time of real training steps
(DataLoader with one worker process, the shipped recipe's model, bf16) without augmentation and
with the study's chain on one shared view (side "both", so the model's work is the same).
"""

import argparse
import importlib.util
import statistics
import sys
import time
import types
from pathlib import Path

import torch

if importlib.util.find_spec("cpcspeech") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpcspeech.config import LossConfig, ModelConfig  # noqa: E402
from cpcspeech.model.cpc import CPCModel  # noqa: E402
from cpcspeech.train.loss import InfoNCE  # noqa: E402

ASSUMED_GFLOP_PER_AUDIO_SECOND = 16.0  # training (forward + backward) per second of audio


def training_flops(model: CPCModel, num_samples: int, num_steps: int, num_negatives: int) -> dict:
    """Forward multiply-add FLOPs (2 per MAC) of one window; training is taken as ~3x forward."""
    cfg = model.config
    flops = {"encoder": 0, "context": 0, "heads": 0, "scores": 0}
    length, in_channels = num_samples, 1
    for kernel, stride, padding in zip(
        cfg.encoder_kernels, cfg.encoder_strides, cfg.encoder_paddings, strict=True
    ):
        length = (length + 2 * padding - kernel) // stride + 1
        flops["encoder"] += 2 * in_channels * cfg.encoder_channels * kernel * length
        in_channels = cfg.encoder_channels
    frames = length
    gates = 3 if cfg.context_type == "gru" else 4
    in_dim = cfg.encoder_channels
    for _ in range(cfg.context_layers):
        flops["context"] += 2 * gates * (in_dim + cfg.context_dim) * cfg.context_dim * frames
        in_dim = cfg.context_dim
    flops["heads"] = 2 * cfg.context_dim * cfg.encoder_channels * num_steps * frames
    # loss.info_nce_scores: per anchor a (K, D) x (D, K + N) product.
    flops["scores"] = 2 * cfg.encoder_channels * num_steps * (num_steps + num_negatives) * frames
    forward = sum(flops.values())
    return {**flops, "forward": forward, "train": 3 * forward}


def time_matmul(dtype: torch.dtype, size: int, repeats: int) -> float:
    """Median GFLOP/s of a (size x size) @ (size x size) product in ``dtype``."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def make_step(norm: str, precision: str, args: argparse.Namespace):
    """Build model, loss, optimizer and a batch; return a closure running one training step."""
    torch.manual_seed(0)
    norm, _, variant = norm.partition("@")
    model = CPCModel(ModelConfig(norm=norm))
    if variant == "before":  # the channel-norm encoder as it was before issue 12, for comparison
        from extract_speed import reference_forward  # this folder is on sys.path

        model.encoder.forward = types.MethodType(reference_forward, model.encoder)
    loss_fn = InfoNCE(
        LossConfig(prediction_steps=args.steps_k, num_negatives=args.negatives),
        z_dim=model.z_dim,
        c_dim=model.c_dim,
    )
    params = list(model.parameters()) + list(loss_fn.parameters())
    optimizer = torch.optim.Adam(params, lr=2e-4)
    wav = 0.1 * torch.randn(args.batch, args.samples)
    generator = torch.Generator().manual_seed(0)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            z, c = model(wav)
            out = loss_fn(z, c, generator=generator)
        out.loss.backward()
        optimizer.step()
        return out.loss.item()

    return model, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=20480)
    parser.add_argument("--steps-k", type=int, default=12)
    parser.add_argument("--negatives", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--norms", default="none,channel", help="comma-separated; 'channel@before': pre-issue-12"
    )
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--profile", action="store_true", help="profile one step per config")
    parser.add_argument("--augment", action="store_true", help="measure augmentation's cost")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.augment:
        augment_benchmark(args)
        return

    audio_per_step = args.batch * args.samples / 16000
    model = CPCModel(ModelConfig())
    flops = training_flops(model, args.samples, args.steps_k, args.negatives)
    per_second = 16000 / args.samples
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch} x "
        f"{args.samples} samples ({audio_per_step:.2f} audio-s/step), K={args.steps_k}, "
        f"N={args.negatives}, Adam lr 2e-4"
    )
    print("Model FLOPs per audio second (forward; 2 FLOPs per multiply-add):")
    for name in ("encoder", "context", "heads", "scores", "forward"):
        print(f"  {name:8s} {flops[name] * per_second / 1e9:7.2f} GFLOP")
    print(
        f"  training ~3x forward = {flops['train'] * per_second / 1e9:.2f} GFLOP per audio-s "
        f"(fraction below assumes {ASSUMED_GFLOP_PER_AUDIO_SECOND:.0f})"
    )

    matmul = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        matmul[precision] = time_matmul(dtype, args.matmul_size, repeats=5)
        print(f"matmul {args.matmul_size}^3 {precision}: {matmul[precision]:.1f} GFLOP/s")

    rows = []
    for norm in args.norms.split(","):
        for precision in args.precisions.split(","):
            _, step = make_step(norm, precision, args)
            for _ in range(args.warmup):
                step()
            times, cpu_times = [], []
            for _ in range(args.repeats):
                start, cpu_start = time.perf_counter(), time.process_time()
                loss = step()
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
            seconds = statistics.median(times)
            cpu_seconds = statistics.median(cpu_times)
            audio_rate = audio_per_step / seconds
            fraction = audio_rate * ASSUMED_GFLOP_PER_AUDIO_SECOND / matmul[precision]
            # What the step would take if every thread had its own core the whole time.
            idle_rate = audio_per_step / (cpu_seconds / args.threads)
            rows.append(
                (norm, precision, seconds, 1 / seconds, audio_rate, fraction, idle_rate, loss)
            )
            if args.profile:
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    step()
                print(f"--- profile norm={norm} precision={precision} ---")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    print()
    header = f"{'norm':8s} {'prec':5s} {'s/step':>8s} {'steps/s':>8s} {'audio-s/s':>10s}"
    print(header + f" {'of matmul':>10s} {'cpu-bound':>10s} {'loss':>8s}")
    for norm, precision, seconds, steps, audio_rate, fraction, idle_rate, loss in rows:
        print(
            f"{norm:8s} {precision:5s} {seconds:8.3f} {steps:8.3f} {audio_rate:10.2f} "
            f"{fraction:10.1%} {idle_rate:10.2f} {loss:8.3f}"
        )
    print(
        f"(wall-clock median of {args.repeats} steps after {args.warmup} warm-up steps; "
        f"'of matmul' = audio-s/s x {ASSUMED_GFLOP_PER_AUDIO_SECOND:.0f} GFLOP / matmul GFLOP/s "
        "in the same precision; 'cpu-bound' = audio-s/s from process CPU time / threads, i.e. "
        "an estimate for an unshared machine)"
    )


STUDY_CHAIN = dict(  # recipes/speechocean762/study.sh's augmentation
    pitch_p=0.5,
    reverb_p=0.5,
    band_reject_p=0.2,
    colored_noise_p=0.3,
    corpus_noise_p=0.3,
    time_dropout_p=0.2,
)


def augment_benchmark(args: argparse.Namespace) -> None:
    """Augmentation's CPU cost per batch, and the step time with and without it (see --help)."""
    import tempfile

    import numpy as np
    import soundfile as sf

    from cpcspeech.config import AugmentConfig, Config, DataConfig, OptimConfig
    from cpcspeech.io.corpus import find_utterances
    from cpcspeech.train.augment import window_rng
    from cpcspeech.train.loop import make_objective, make_optimizer
    from cpcspeech.train.windows import WindowCorpus, WindowSampler, make_augmenter, make_loader

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(40):  # 40 utterances of 3-6 s, 4 speakers
            folder = Path(tmp) / f"spk{i % 4}"
            folder.mkdir(exist_ok=True)
            n = int(rng.integers(3 * 16000, 6 * 16000))
            sf.write(folder / f"u{i}.flac", (0.1 * rng.standard_normal(n)).astype("float32"), 16000)
        corpus = WindowCorpus(find_utterances(tmp), window=args.samples)
        chain = AugmentConfig(side="both", **STUDY_CHAIN)
        augmenter = make_augmenter(chain, corpus, 16000)
        window = corpus.read(corpus_window_spec(corpus))
        cpu = []
        for r in range(max(args.repeats, 5)):
            start = time.process_time()
            for position in range(args.batch):
                augmenter(window, window_rng(0, 0, r, position))
            cpu.append(time.process_time() - start)
        augment_cpu = statistics.median(cpu)
        print(f"augmenting one batch of {args.batch} windows in-process: {augment_cpu:.3f} CPU-s")

        cfg = Config(
            data=DataConfig(root=tmp, window=args.samples, batch_size=args.batch),
            optim=OptimConfig(lr=2e-4),
        )
        cfg.model.norm = "channel"
        cfg.loss.num_negatives = 16
        cfg.train.precision = args.precisions.split(",")[0]
        results = {}
        for name, side in (("no augmentation", "none"), ("augmentation", "both")):
            objective = make_objective(cfg)
            optimizer, _ = make_optimizer(cfg.optim, objective)
            sampler = WindowSampler(corpus, args.batch, seed=0)
            loader = make_loader(corpus, sampler, 1, augmenter if side != "none" else None, side)
            times = []
            batches = iter(loader)
            for i in range(args.warmup + args.repeats):
                start = time.perf_counter()
                batch = next(batches)
                loss, _, _ = objective(batch.wav, batch.speakers, torch.Generator().manual_seed(i))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if i >= args.warmup:
                    times.append(time.perf_counter() - start)
            results[name] = statistics.median(times)
            print(f"step with the loader, {name}: {results[name]:.3f} s (median)")
        ratio = results["augmentation"] / results["no augmentation"]
        print(
            f"slowdown from augmentation: {ratio:.3f}x (goal <= 1.15x); augmentation's CPU per "
            f"batch is {augment_cpu / results['no augmentation']:.1%} of a step's wall time"
        )


def corpus_window_spec(corpus):
    from cpcspeech.train.windows import WindowSpec

    return WindowSpec(0, 0, corpus.window, 0, 0)


if __name__ == "__main__":
    main()
