"""Phone error rate of a CTC phone recogniser on frozen features (``cpcspeech probe per``), as
Libri-light's evaluation (Kahn et al. 2020) and CPC_audio's ``linear_separability.py --CTC``.

A CTC head (standardisation, optionally a one-layer bidirectional LSTM, then a linear layer to the
phone classes plus a blank) is trained on the train list's features and phone sequences, then
decodes the test list greedily or with a prefix beam search. PER is the corpus-level rate: the
total edit distance over the test list divided by the total reference length. CPC_audio instead
averages each utterance's rate; that figure is reported too (``per_utterance_mean``).
"""

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from cpcspeech.errors import CPCSpeechError
from cpcspeech.eval.ctc import EditCounts, edit_counts, greedy_decode, prefix_beam_search
from cpcspeech.eval.data import EvalData
from cpcspeech.eval.features import (
    FeatureSource,
    FrameSet,
    extract_frames,
    load_feature_source,
    method_name,
    table_specs,
)
from cpcspeech.eval.phone_targets import PhoneTargets, resolve_targets
from cpcspeech.eval.probes import ProbeOptions, feature_stats
from cpcspeech.files import check_writable_folder, write_text_atomic
from cpcspeech.io.corpus import Utterance
from cpcspeech.runtime import progress_bar

RECURRENT = ("lstm", "gru")


@dataclass(frozen=True)
class PerOptions:
    """How the CTC probe is trained and decoded, checked when built.

    Attributes:
        probe: the shared probe options (layer, epochs, seed, device, progress); its ``hidden``
            (the frame probe's MLP) must be 0.
        ctc_hidden: 0 for a linear head, else the units per direction of a one-layer
            bidirectional recurrent layer before it.
        rnn: "lstm" or "gru", the recurrent layer's kind.
        beam: 0 for greedy decoding, else the prefix beam width.
        batch_size: utterances per step (grouped by length).
        lr: Adam's peak learning rate (cosine decay to 0); None: 1e-2 for a linear head, 2e-3
            with a recurrent layer.
        blank_bias: the blank output's starting bias (the phones' start at 0). Below 0, a
            linear head first learns to name every frame of a phone, the optimum a head that
            sees one frame at a time can reach; from 0 it may settle in spikes whose phone stays
            below the blank on every frame (greedy then deletes it). On real features 0 did
            better in our runs, so it is the default.
    """

    probe: ProbeOptions = ProbeOptions()
    ctc_hidden: int = 0
    rnn: str = "lstm"
    beam: int = 0
    batch_size: int = 8
    lr: float | None = None
    blank_bias: float = 0.0

    def __post_init__(self) -> None:
        if self.probe.hidden:
            raise CPCSpeechError(
                f"probe per: expected --hidden 0 (use --ctc-hidden), found {self.probe.hidden}"
            )
        if self.ctc_hidden < 0:
            raise CPCSpeechError(f"--ctc-hidden: expected >= 0, found {self.ctc_hidden}")
        if self.rnn not in RECURRENT:
            raise CPCSpeechError(f"CTC rnn: expected one of {RECURRENT}, found {self.rnn!r}")
        if self.beam < 0:
            raise CPCSpeechError(f"--beam: expected 0 (greedy) or a width >= 1, found {self.beam}")
        if self.batch_size < 1:
            raise CPCSpeechError(f"CTC batch size: expected >= 1, found {self.batch_size}")
        if self.lr is None:  # frozen: the default is resolved once, here
            object.__setattr__(self, "lr", 2e-3 if self.ctc_hidden else 1e-2)
        if not 0 < self.lr < math.inf:
            raise CPCSpeechError(f"CTC lr: expected a finite value > 0, found {self.lr}")

    def head_name(self) -> str:
        return f"bi{self.rnn}({self.ctc_hidden})+linear" if self.ctc_hidden else "linear"

    def decoder_name(self) -> str:
        return f"beam({self.beam})" if self.beam else "greedy"


class CtcHead(nn.Module):
    """Standardise with train statistics, an optional bidirectional recurrent layer, then a
    linear layer to ``num_classes + 1`` outputs (the blank is the last).

    forward: x (B, T, D) padded features, lengths (B,) -> (B, T, num_classes + 1) log-probs.
    """

    def __init__(
        self, mean: np.ndarray, std: np.ndarray, num_classes: int, hidden: int = 0,
        rnn: str = "lstm", blank_bias: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        dim = mean.shape[0]
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_std", torch.as_tensor(1.0 / std, dtype=torch.float32))
        self.rnn: nn.Module | None = None
        if hidden:
            kind = nn.LSTM if rnn == "lstm" else nn.GRU
            self.rnn = kind(dim, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden if hidden else dim, num_classes + 1)
        with torch.no_grad():
            self.out.bias[num_classes] = blank_bias

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        x = (x - self.mean) * self.inv_std
        if self.rnn is not None:
            packed = nn.utils.rnn.pack_padded_sequence(
                x, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            x, _ = nn.utils.rnn.pad_packed_sequence(
                self.rnn(packed)[0], batch_first=True, total_length=x.shape[1]
            )
        return self.out(x).log_softmax(-1)


def _pad(frames: FrameSet, rows: np.ndarray) -> tuple[Tensor, Tensor]:
    """Utterances ``rows`` of ``frames`` as a zero-padded (B, T_max, D) batch and (B,) lengths."""
    lengths = np.diff(frames.offsets)[rows]
    batch = np.zeros((len(rows), int(lengths.max()), frames.features.shape[1]), np.float32)
    for i, row in enumerate(rows):
        batch[i, : lengths[i]] = frames.features[frames.offsets[row] : frames.offsets[row + 1]]
    return torch.from_numpy(batch), torch.as_tensor(lengths, dtype=torch.int64)


def _length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Utterance indices grouped by length (sorted), ``batch_size`` per group."""
    order = np.argsort(lengths, kind="stable")
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def train_ctc(
    frames: FrameSet, targets: list[np.ndarray], num_classes: int, options: PerOptions
) -> CtcHead:
    """Train a CTC head on ``frames`` (U utterances) and their (S_u,) phone-id ``targets``.

    Adam with a cosine learning rate over ``epochs x batches`` steps; batches hold utterances of
    similar length and are visited in a seeded order per epoch. ``CTCLoss(blank=num_classes,
    zero_infinity=True)``: an utterance too short for its target (T < S + repeats) adds no
    gradient instead of an infinite loss. Runs on one torch thread (restored afterwards).
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_ctc(frames, targets, num_classes, options)
    finally:
        torch.set_num_threads(previous_threads)


def _train_ctc(
    frames: FrameSet, targets: list[np.ndarray], num_classes: int, options: PerOptions
) -> CtcHead:
    mean, std = feature_stats(frames.features)
    seed = options.probe.seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = CtcHead(mean, std, num_classes, options.ctc_hidden, options.rnn, options.blank_bias)
    loss_fn = nn.CTCLoss(blank=num_classes, reduction="mean", zero_infinity=True)
    optimizer = torch.optim.Adam(head.parameters(), lr=options.lr)
    batches = _length_batches(np.diff(frames.offsets), options.batch_size)
    total = options.probe.epochs * len(batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    )
    generator = np.random.default_rng(seed)
    head.train()
    with progress_bar("loss {task.fields[loss]:.3f}", enabled=options.probe.progress) as bar:
        task = bar.add_task("CTC head", total=total, loss=math.nan)
        for _ in range(options.probe.epochs):
            for b in generator.permutation(len(batches)):
                rows = batches[b]
                x, lengths = _pad(frames, rows)
                ys = [torch.as_tensor(targets[r]) for r in rows]
                log_probs = head(x, lengths).transpose(0, 1)  # (T, B, C + 1), as CTCLoss wants
                loss = loss_fn(
                    log_probs, torch.cat(ys), lengths,
                    torch.as_tensor([len(y) for y in ys], dtype=torch.int64),
                )  # fmt: skip
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                bar.update(task, advance=1, loss=float(loss.detach()))
    return head.eval()


@torch.inference_mode()
def decode(
    head: CtcHead, frames: FrameSet, beam: int = 0, batch_size: int = 32
) -> tuple[list[list[int]], list[list[int]]]:
    """Greedy hypotheses of every utterance of ``frames`` and, with ``beam`` >= 1, prefix beam
    search ones (else the greedy list again). Ids exclude the blank."""
    blank = head.out.out_features - 1
    greedy: list[list[int]] = [[] for _ in frames.utterances]
    beamed: list[list[int]] = greedy if not beam else [[] for _ in frames.utterances]
    for rows in _length_batches(np.diff(frames.offsets), batch_size):
        x, lengths = _pad(frames, rows)
        log_probs = head(x, lengths).numpy()  # (B, T, C + 1)
        for i, row in enumerate(rows):
            scores = log_probs[i, : lengths[i]]
            greedy[row] = greedy_decode(scores, blank)
            if beam:
                beamed[row] = prefix_beam_search(scores, blank, beam)
    return greedy, beamed


@dataclass
class PerScore:
    """Edit counts over a test list: the corpus-level PER and CPC_audio's per-utterance mean."""

    per: float
    per_utterance_mean: float
    substitutions: int
    insertions: int
    deletions: int
    ref_phones: int


def score(references: list[np.ndarray], hypotheses: list[list[int]]) -> PerScore:
    """PER = (S + I + D) / N summed over utterances; the per-utterance mean averages each
    utterance's (S + I + D) / N_u (CPC_audio's ``get_seq_PER``). References are non-empty."""
    total, rates = EditCounts(), []
    for ref, hyp in zip(references, hypotheses, strict=True):
        counts = edit_counts(ref.tolist(), hyp)
        total += counts
        rates.append(counts.distance / counts.ref_length)
    if not rates or total.ref_length == 0:
        raise CPCSpeechError("PER: expected test utterances with phones, found none")
    return PerScore(
        per=total.distance / total.ref_length, per_utterance_mean=float(np.mean(rates)),
        substitutions=total.substitutions, insertions=total.insertions,
        deletions=total.deletions, ref_phones=total.ref_length,
    )  # fmt: skip


@dataclass
class PerResult:
    """One row of the PER table (rates as fractions: 0.25 is 25 %)."""

    method: str
    model: str
    per: float
    per_utterance_mean: float
    substitutions: int
    insertions: int
    deletions: int
    ref_phones: int
    n_train_utterances: int
    n_test_utterances: int
    n_classes: int
    seconds: float
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line: the PER, its parts and the counts behind it."""
        return (
            f"PER {100 * self.per:.1f}% ({self.method}, {self.details.get('decoder')}; "
            f"sub {self.substitutions} / ins {self.insertions} / del {self.deletions} of "
            f"{self.ref_phones} phones in {self.n_test_utterances} test utterances; "
            f"per-utterance mean {100 * self.per_utterance_mean:.1f}%; {self.seconds:.0f} s)"
        )


def with_targets(
    utterances: tuple[Utterance, ...], targets: PhoneTargets, split: str
) -> tuple[list[Utterance], list[str]]:
    """The utterances of a split that have a non-empty target, and the ids left out (recorded
    in ``targets.left_out``): no target at all, or no phone once silence is dropped."""
    kept, left = [], []
    for utt in utterances:
        sequence = targets.sequences.get(utt.utt_id)
        if sequence is None or len(sequence) == 0:
            targets.left_out.setdefault(
                utt.utt_id, "no target" if sequence is None else "no phone but silence"
            )
            left.append(utt.utt_id)
        else:
            kept.append(utt)
    if not kept:
        raise CPCSpeechError(
            f"PER {split} list: expected utterances with phone targets ({targets.source}), found "
            f"none of {len(utterances)}"
        )
    return kept, left


def per_source(
    source: FeatureSource, data: EvalData, targets: PhoneTargets, method: str,
    options: PerOptions = PerOptions(),  # noqa: B008 - frozen, so one shared default is safe
) -> PerResult:  # fmt: skip
    """Extract both splits' features, train the CTC head on train, decode and score test."""
    started = time.perf_counter()
    progress = options.probe.progress
    splits = {}
    for split, utterances in (("train", data.train), ("test", data.test)):
        kept, _ = with_targets(utterances, targets, split)
        frames = extract_frames(
            source, kept, None, progress=progress, description=f"{source.name} {split}"
        )
        splits[split] = (frames, [targets.sequences[u.utt_id] for u in kept])
    (train, train_y), (test, test_y) = splits["train"], splits["test"]
    head = train_ctc(train, train_y, targets.num_classes, options)
    greedy, beamed = decode(head, test, options.beam)
    result = score(test_y, beamed)
    details = {
        "head": options.head_name(), "decoder": options.decoder_name(),
        "epochs": options.probe.epochs, "features": f"{source.dim}-d", "layer": source.layer,
        "targets": targets.source, "n_train_frames": train.num_frames,
        "n_test_frames": test.num_frames, "blank": targets.num_classes,
        "per_definition": "total edits / total reference phones over the test list",
    }  # fmt: skip
    if options.beam:
        details["greedy_per"] = score(test_y, greedy).per
    return PerResult(
        method=method, model=source.name, **asdict(result), n_train_utterances=len(train_y),
        n_test_utterances=len(test_y), n_classes=targets.num_classes,
        seconds=time.perf_counter() - started, details=details,
    )  # fmt: skip


def run_per(
    data: EvalData,
    targets: PhoneTargets,
    model_specs: list[str],
    options: PerOptions = PerOptions(),  # noqa: B008 - frozen, so one shared default is safe
    out_dir: str | os.PathLike | None = None,
) -> tuple[list[PerResult], str]:
    """PER of each feature source in ``model_specs`` ("mfcc", "random", a model, a .npy folder),
    one source's features in memory at a time.

    With ``out_dir``: ``per.json`` (every row, the targets left out and the missing words;
    strict JSON, no NaN) and ``per.md`` (the table), written atomically.

    Returns:
        the results and the markdown table.
    """
    if out_dir is not None:
        check_writable_folder(out_dir)
    results = []
    for spec in model_specs:
        probe = options.probe
        source = load_feature_source(spec, layer=probe.layer, seed=probe.seed, device=probe.device)
        results.append(per_source(source, data, targets, method_name(spec), options))
    table = format_per_table(results)
    if out_dir is not None:
        write_per(results, table, data, targets, Path(out_dir))
    return results, table


def probe_per(
    data: EvalData, model_spec: str, table: bool, options: PerOptions,
    out_dir: str | os.PathLike | None = None, text: str | os.PathLike | None = None,
    lexicon: str | os.PathLike | None = None, phone_seqs: str | os.PathLike | None = None,
) -> tuple[list[PerResult], str]:  # fmt: skip
    """``cpcspeech probe per``: resolve the targets (:func:`resolve_targets`), run ``model_spec``
    (or with ``table`` the random, mfcc and ``model_spec`` rows), and return the results and a
    summary: the table, one line per row, and what was left out."""
    targets = resolve_targets(data.alignment, text, lexicon, phone_seqs)
    specs = table_specs(model_spec) if table else [model_spec]
    results, markdown = run_per(data, targets, specs, options, out_dir)
    left_out = targets.describe_left_out([u.utt_id for u in data.utterances])
    lines = [r.describe() for r in results] + [left_out or "every listed utterance has targets"]
    if out_dir is not None:
        lines.append(f"wrote {Path(out_dir) / 'per.md'} and per.json")
    return results, markdown + "\n".join(lines)


def write_per(
    results: list[PerResult], table: str, data: EvalData, targets: PhoneTargets, out_dir: Path
) -> None:
    summary = {
        "data": str(data.root),
        "targets": targets.source,
        "n_train_utterances": len(data.train),
        "n_test_utterances": len(data.test),
        "left_out": targets.left_out,
        "missing_words": targets.missing_words,
        "results": [r.to_dict() for r in results],
    }
    text = json.dumps(summary, indent=2, allow_nan=False)  # strict JSON: a NaN is a bug
    write_text_atomic(out_dir / "per.json", text + "\n")
    write_text_atomic(out_dir / "per.md", table)


def format_per_table(results: list[PerResult]) -> str:
    """Markdown: Method | PER | Sub | Ins | Del | per-utterance mean (rates in %), and the
    greedy PER when the rows were decoded with a beam."""
    greedy = all("greedy_per" in r.details for r in results)
    decoder = results[0].details.get("decoder", "") if results else ""
    head = "| Method | PER (%) | Sub (%) | Ins (%) | Del (%) | Per-utterance mean (%) |"
    lines = [
        head.replace("PER (%)", f"PER, {decoder} (%)") + (" Greedy PER (%) |" if greedy else "")
    ]
    lines.append("|---" * (7 if greedy else 6) + "|")
    for r in results:
        n = max(r.ref_phones, 1)
        parts = [r.per, r.substitutions / n, r.insertions / n, r.deletions / n]
        parts += [r.per_utterance_mean] + ([r.details["greedy_per"]] if greedy else [])
        lines.append(f"| {r.method} | " + " | ".join(f"{100 * v:.1f}" for v in parts) + " |")
    return "\n".join(lines) + "\n"
