"""`cpcspeech align`: forced alignment of a corpus (cpcspeech.io.align)."""

from typing import Annotated

import typer

from cpcspeech.cli import AllowCommands, QuietOption, _progress, app

DATA_HELP = (
    "Kaldi data dir (wav.scp + text) or a folder of audio with a .txt or .lab transcript "
    "beside each file."
)
OUT_HELP = (
    "Folder for phones.txt, converted_aligned_phones.txt, alignments.ctm, unaligned.tsv, "
    "oov_words.txt and the resume journal."
)


@app.command("align")
def align_command(
    data: Annotated[str, typer.Argument(help=DATA_HELP)],
    out: Annotated[str, typer.Option("--out", "-o", help=OUT_HELP)],
    lexicon: Annotated[
        str | None,
        typer.Option("--lexicon", help="CMUdict-format file: words to add (or replace)."),
    ] = None,
    quiet: QuietOption = False,
    allow_commands: AllowCommands = False,
) -> None:
    """Forced alignment (pocketsphinx, CMU en-us) to the 41 classes probe, abx and units read.

    Needs cpcspeech[align]. Re-running resumes: utterances already in the journal are skipped.
    """
    from cpcspeech.io.align import align_corpus

    summary = align_corpus(data, out, lexicon, _progress(quiet), allow_commands)
    typer.echo(summary.describe())
