"""`cpcspeech units fit` and `units apply`: k-means codebooks and unit sequences
(cpcspeech.eval.units)."""

import typer

from cpcspeech.cli import (
    EVAL_MODEL_HELP,
    AllowCommands,
    DataOption,
    DeviceOption,
    LayerOption,
    QuietOption,
    _progress,
    app,
)

units_app = typer.Typer(
    help="Discrete units: k-means codebooks on frame features, unit sequences per utterance.",
    no_args_is_help=True,
)
app.add_typer(units_app, name="units")


@units_app.command("fit")
def units_fit(
    data: DataOption,
    model: str = typer.Option("default", "--model", "-m", help=EVAL_MODEL_HELP),
    k: int = typer.Option(..., "--k", help="Number of units (clusters), e.g. 50, 100, 200."),
    out: str = typer.Option(..., "--out", "-o", help="Codebook path (X.safetensors + X.json)."),
    layer: LayerOption = "c",
    utt_list: str | None = typer.Option(
        None, "--list", help="Utterances to fit on (default: train_split.txt when present)."
    ),
    standardize: bool = typer.Option(
        False, "--standardize", help="Standardise each utterance's features first."
    ),
    method: str = typer.Option("torch", "--method", help="torch (Lloyd) or sklearn (minibatch)."),
    max_frames: int = typer.Option(500000, "--max-frames", help="Cluster at most this many."),
    labels: str | None = typer.Option(
        None, "--labels", help="Phone labels: also score purity, PNMI and ABX on test_split.txt."
    ),
    test_list: str | None = typer.Option(
        None, "--test-list", help="With --labels: score on these (default: test_split.txt)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of k-means, subsampling and 'random'."),
    device: DeviceOption = "cpu",
    quiet: QuietOption = False,
    allow_commands: AllowCommands = False,
) -> None:
    """Fit a k-means codebook on a corpus's frame features."""
    from cpcspeech.eval.data import resolve_eval_data
    from cpcspeech.eval.units import UnitsOptions, fit_units

    options = UnitsOptions(
        k, layer, standardize, method, max_frames, seed, device, progress=_progress(quiet)
    )
    splits = ("train", "test") if labels else ("train",)
    evaluation = resolve_eval_data(
        data, labels, train_list=utt_list, test_list=test_list, splits=splits, required=("test",),
        allow_commands=allow_commands,
    )  # fmt: skip
    typer.echo(fit_units(evaluation, model, out, options).describe())


@units_app.command("apply")
def units_apply(
    inputs: list[str] = typer.Argument(  # noqa: B008 - typer's documented default style
        ..., help="Audio files, directories (searched recursively), wav.scp files, manifests."
    ),
    codebook: str = typer.Option(..., "--codebook", "-c", help="A codebook from `units fit`."),
    out: str = typer.Option(
        ..., "--out", "-o", help="X.txt: one 'utt u1 u2 ...' line each; else a folder of .npy."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Default: the codebook's model (must have the same weights)."
    ),
    collapse: bool = typer.Option(
        False, "--collapse", help="Merge repeated units (12 12 45 -> 12 45)."
    ),
    device: DeviceOption = "cpu",
    quiet: QuietOption = False,
    allow_commands: AllowCommands = False,
) -> None:
    """Turn audio into unit sequences with a codebook (ZeroSpeech / GSLM text, or .npy)."""
    from cpcspeech.eval.units import apply_units

    result = apply_units(
        codebook, inputs, out, model_spec=model, collapse=collapse, device=device,
        progress=_progress(quiet), allow_commands=allow_commands,
    )  # fmt: skip
    typer.echo(result.describe())
