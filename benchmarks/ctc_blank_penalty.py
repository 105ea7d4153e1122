"""Is the CTC probe's deletion-heavy PER a decoding artefact? Greedy PER against a blank penalty.

Trains the PER probe's CTC head (`cpcspeech probe per`'s `train_ctc`, linear by default) on the
train list, then decodes greedily after subtracting BETA from the blank's log-probability on
every frame, for several BETA, on the train list itself (how well the head fits) and on the test
list. BETA = 0 is what `probe per` reports. If a penalty turned the deletions into correct
phones, the PER would fall far below BETA = 0's; if the head simply cannot tell the phones
apart, deletions turn into substitutions and insertions instead and the PER stays high.

Run: python benchmarks/ctc_blank_penalty.py --data DIR [--model mfcc] [--epochs 20]
     [--ctc-hidden 0] [--train-utts 1500] [--test-utts 500]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

# Runnable from a clone without installing the package (python benchmarks/ctc_blank_penalty.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpcspeech.eval.ctc import greedy_decode  # noqa: E402
from cpcspeech.eval.data import resolve_eval_data  # noqa: E402
from cpcspeech.eval.features import extract_frames, load_feature_source  # noqa: E402
from cpcspeech.eval.per import CtcHead, PerOptions, score, train_ctc, with_targets  # noqa: E402
from cpcspeech.eval.phone_targets import resolve_targets  # noqa: E402
from cpcspeech.eval.probes import ProbeOptions  # noqa: E402

BETAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


@torch.inference_mode()
def log_probs(head: CtcHead, frames) -> list[np.ndarray]:
    """(T_u, C + 1) log-probabilities of every utterance, one at a time (no padding)."""
    out = []
    for u in range(len(frames.utterances)):
        x = torch.from_numpy(frames.features[frames.offsets[u] : frames.offsets[u + 1]])
        out.append(head(x[None], torch.as_tensor([len(x)]))[0].numpy())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="Kaldi data dir with labels and splits")
    parser.add_argument("--labels", help="default: converted_aligned_phones.txt in --data")
    parser.add_argument("--model", default="mfcc")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--ctc-hidden", type=int, default=0)
    parser.add_argument("--train-utts", type=int, default=1500)
    parser.add_argument("--test-utts", type=int, default=500)
    args = parser.parse_args()
    labels = args.labels or str(Path(args.data) / "converted_aligned_phones.txt")
    data = resolve_eval_data(args.data, labels)
    targets = resolve_targets(data.alignment, None, None, None)
    source = load_feature_source(args.model)
    options = PerOptions(ProbeOptions(epochs=args.epochs, progress=False), args.ctc_hidden)
    started = time.perf_counter()
    splits = {}
    for name, utterances, count in (
        ("train", data.train, args.train_utts), ("test", data.test, args.test_utts),
    ):  # fmt: skip
        kept, _ = with_targets(utterances[:count], targets, name)
        frames = extract_frames(source, kept, None, progress=False)
        splits[name] = (frames, [targets.sequences[u.utt_id] for u in kept])
    head = train_ctc(*splits["train"], targets.num_classes, options)
    blank = targets.num_classes
    counts = f"{len(splits['train'][1])} train / {len(splits['test'][1])} test utterances"
    print(f"{args.model}, {options.head_name()} head, {args.epochs} epochs, {counts}")
    print("| list | blank penalty | PER (%) | Sub (%) | Ins (%) | Del (%) |")
    print("|---|---|---|---|---|---|")
    for name, (frames, references) in splits.items():
        scores = log_probs(head, frames)
        for beta in BETAS:
            hyps = []
            for p in scores:
                shifted = p.copy()
                shifted[:, blank] -= beta
                hyps.append(greedy_decode(shifted, blank))
            s = score(references, hyps)
            n = s.ref_phones
            print(f"| {name} | {beta:g} | {100 * s.per:.1f} | {100 * s.substitutions / n:.1f} | "
                  f"{100 * s.insertions / n:.1f} | {100 * s.deletions / n:.1f} |")  # fmt: skip
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
