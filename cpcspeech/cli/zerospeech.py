"""`cpcspeech zerospeech`: the phonetic part of a ZeroSpeech 2021 submission
(cpcspeech.zerospeech)."""

from typing import Annotated

import typer

from cpcspeech.cli import EXTRACT_MODEL_HELP, DeviceOption, LayerOption, QuietOption, _progress, app

DATASET_HELP = "A folder laid out like the ZeroSpeech 2021 dataset: phonetic/<set>/*.wav."
OUT_HELP = "Submission folder (resumed if it exists); SUBMISSION.params.yaml goes beside it."


@app.command("zerospeech")
def zerospeech_command(
    dataset: Annotated[str, typer.Argument(help=DATASET_HELP)],
    out: Annotated[str, typer.Option("--out", "-o", help=OUT_HELP)],
    model: Annotated[str, typer.Option("--model", "-m", help=EXTRACT_MODEL_HELP)] = "default",
    layer: LayerOption = "c",
    only_dev: Annotated[
        bool, typer.Option("--only-dev", help="Only dev-clean and dev-other.")
    ] = False,
    author: Annotated[str, typer.Option("--author", help="meta.yaml author.")] = "unknown",
    affiliation: Annotated[
        str, typer.Option("--affiliation", help="meta.yaml affiliation.")
    ] = "unknown",
    train_set: Annotated[
        str, typer.Option("--train-set", help="meta.yaml train_set: the model's training data.")
    ] = "unknown",
    device: DeviceOption = "cpu",
    quiet: QuietOption = False,
) -> None:
    """ZeroSpeech 2021 phonetic submission: text features per wav, meta.yaml; validated.

    Every rule of zerospeech2021's validator is checked at the end (cpcspeech.zerospeech).
    """
    from cpcspeech.zerospeech import PHONETIC_SETS, write_submission

    meta = {"author": author, "affiliation": affiliation, "train_set": train_set}
    summary = write_submission(
        dataset, out, model, layer, device, PHONETIC_SETS[: 2 if only_dev else 4], meta,
        progress=_progress(quiet),
    )  # fmt: skip
    typer.echo(summary.describe())
