"""The evaluation commands: probe (frame probes, Table 1, CTC phone error rate) and abx.

Registered on the root ``app`` of :mod:`cpcspeech.cli` when that module imports this one.
"""

from typing import Annotated

import typer

from cpcspeech.cli import (
    EVAL_MODEL_HELP,
    AllowCommands,
    DataOption,
    DeviceOption,
    LabelFormatOption,
    LayerOption,
    PhonesOption,
    QuietOption,
    _progress,
    app,
)
from cpcspeech.errors import ConfigError

# The probe command's longer options.
BaselinesOption = Annotated[bool, typer.Option(
    "--baselines/--no-baselines",
    help="With --table: --no-baselines skips the random and mfcc rows (one extraction of "
    "--model for both tasks).",
)]  # fmt: skip
TrainListOption = Annotated[
    str | None, typer.Option("--train-list", help="Default: train_split.txt in the data dir.")
]
TestListOption = Annotated[
    str | None, typer.Option("--test-list", help="Default: test_split.txt in the data dir.")
]
SupervisedStepsOption = Annotated[int, typer.Option(
    "--supervised-steps",
    help="Train the supervised baseline for N steps: the table's row, or with a task that "
    "task alone (instead of probing --model).",
)]  # fmt: skip
SupervisedNormOption = Annotated[str, typer.Option(
    "--supervised-norm",
    help="Encoder norm of the supervised model: none (the paper's) or channel (the shipped "
    "weights' shape).",
)]  # fmt: skip
SupervisedPrecisionOption = Annotated[str, typer.Option(
    "--supervised-precision",
    help="fp32, or bf16: the supervised model's encoder under bf16 autocast (about 2x faster "
    "on CPUs with amx_bf16 / avx512_bf16; emulated and slow elsewhere).",
)]  # fmt: skip


@app.command("probe")
def probe(
    task: str | None = typer.Argument(
        None, help="phone, speaker (omit with --table: both) or per (CTC phone error rate)."
    ),
    data: DataOption = ...,
    labels: str | None = typer.Option(
        None, "--labels", help="Alignment: CPC format, Kaldi per-frame text, CTM or TextGrid(s)."
    ),
    model: str = typer.Option(
        "mfcc", "--model", "-m", help="Model dir / checkpoint, 'random', 'mfcc' or a .npy dir."
    ),
    table: bool = typer.Option(
        False, "--table", help="Run Table 1: random, mfcc (+ --model if a CPC model), both tasks."
    ),
    baselines: BaselinesOption = True,
    out: str | None = typer.Option(None, "--out", "-o", help="Folder for the JSON / table."),
    label_format: LabelFormatOption = None,
    phones: PhonesOption = None,
    train_list: TrainListOption = None,
    test_list: TestListOption = None,
    layer: LayerOption = "c",
    hidden: int = typer.Option(0, "--hidden", help="0: linear probe; >0: one-hidden-layer MLP."),
    epochs: int = typer.Option(10, "--epochs", help="Probe training epochs (Adam, cosine lr)."),
    speaker_mode: str = typer.Option(
        "frame", "--speaker-mode", help="frame (paper) or utterance (mean feature per utterance)."
    ),
    supervised_steps: SupervisedStepsOption = 0,
    supervised_eval_every: int = typer.Option(
        0, "--supervised-eval-every", help="Also score the supervised model every N steps."
    ),
    supervised_norm: SupervisedNormOption = "none",
    supervised_precision: SupervisedPrecisionOption = "fp32",
    text: str | None = typer.Option(None, "--text", help="per: Kaldi text, with --lexicon."),
    lexicon: str | None = typer.Option(None, "--lexicon", help="per: WORD PH1 PH2 ... file."),
    phone_seqs: str | None = typer.Option(None, "--phone-seqs", help="per: UTT PH1 PH2 ..."),
    ctc_hidden: int = typer.Option(0, "--ctc-hidden", help="per: BiLSTM units (0: linear)."),
    beam: int = typer.Option(0, "--beam", help="per: prefix beam width (0: greedy)."),
    seed: int = typer.Option(0, "--seed", help="Seed of 'random' init and of the probe."),
    device: DeviceOption = "cpu",
    quiet: QuietOption = False,
    allow_commands: AllowCommands = False,
) -> None:
    """Probes on frozen features: phone or speaker accuracy per frame (paper Table 1), or per:
    the phone error rate of a CTC phone recogniser (targets: --labels, --text or --phone-seqs)."""
    from cpcspeech.eval.data import resolve_eval_data
    from cpcspeech.eval.probes import ProbeOptions, run_probe
    from cpcspeech.eval.supervised import SupervisedBudget, run_supervised_task
    from cpcspeech.eval.table import run_table

    options = ProbeOptions(layer, hidden, epochs, speaker_mode, seed, device, _progress(quiet))
    budget = SupervisedBudget(
        steps=supervised_steps, eval_every=supervised_eval_every, norm=supervised_norm,
        precision=supervised_precision,
    ) if supervised_steps else None  # fmt: skip
    if task is None and not table:
        raise ConfigError("give a task (phone, speaker or per) or --table")
    evaluation = resolve_eval_data(data, labels, label_format, phones, train_list, test_list,
                                   allow_commands=allow_commands)  # fmt: skip
    if task == "per":
        from cpcspeech.eval.per import PerOptions, probe_per

        per_options = PerOptions(options, ctc_hidden, beam=beam)
        _, summary = probe_per(
            evaluation, model, table, per_options, out, text, lexicon, phone_seqs
        )
        typer.echo(summary)
        return
    if table:
        _, markdown = run_table(evaluation, out or "probe-table", options, model, budget, baselines)
        typer.echo(markdown, nl=False)
        typer.echo(f"wrote {out or 'probe-table'}/table.md and table.json")
        return
    if budget is not None:
        result = run_supervised_task(
            task, evaluation, budget, options, out,
            on_point=lambda step, acc: typer.echo(f"step {step}: {task} accuracy {100 * acc:.1f}%"),
        )  # fmt: skip
    else:
        result = run_probe(task, evaluation, model, options, out)
    typer.echo(result.describe())


@app.command("abx")
def abx(
    data: DataOption,
    labels: str | None = typer.Option(
        None, "--labels", help="Alignment (CPC, Kaldi per-frame, CTM, TextGrid) to make items."
    ),
    item: str | None = typer.Option(
        None, "--item", help="An existing .item file (Libri-light / ZeroSpeech) instead."
    ),
    model: str = typer.Option("default", "--model", "-m", help=EVAL_MODEL_HELP),
    table: bool = typer.Option(False, "--table", help="Score random, mfcc and --model."),
    out: str | None = typer.Option(None, "--out", "-o", help="Folder for abx.json/.md/.item."),
    layer: LayerOption = "c",
    distance: str = typer.Option("angular", "--distance", help="angular, euclidean or kl."),
    test_list: str | None = typer.Option(
        None, "--test-list", help="Default: test_split.txt in the data dir when present."
    ),
    label_format: LabelFormatOption = None,
    phones: PhonesOption = None,
    max_per_group: int = typer.Option(10, "--max-per-group", help="Tokens per cell (as CPC)."),
    seed: int = typer.Option(0, "--seed", help="Seed of 'random' and of subsampling."),
    device: DeviceOption = "cpu",
    quiet: QuietOption = False,
    allow_commands: AllowCommands = False,
) -> None:
    """Triphone ABX error within and across speakers (Libri-light / ZeroSpeech 2021)."""
    from cpcspeech.eval.abx import AbxOptions, run_abx
    from cpcspeech.eval.data import resolve_eval_data
    from cpcspeech.eval.features import table_specs

    options = AbxOptions(
        layer, distance, max_per_group, seed=seed, device=device, progress=_progress(quiet)
    )
    evaluation = resolve_eval_data(
        data, labels, label_format, phones, test_list=test_list, splits=("test",), required=(),
        allow_commands=allow_commands,
    )  # fmt: skip
    specs = table_specs(model) if table else [model]
    results, markdown = run_abx(evaluation, specs, options, item_file=item, out_dir=out)
    typer.echo(markdown, nl=False)
    for result in results:
        typer.echo(result.describe())
    if out:
        typer.echo(f"wrote {out}/abx.json and abx.md")
