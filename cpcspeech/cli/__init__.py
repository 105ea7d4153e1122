"""The `cpcspeech` command line: parses options, calls one library function, prints a summary.

This package is the only one that imports typer. It holds no logic of its own. The project's errors
(CPCSpeechError) are caught once, by the command group every command runs in: one line on
stderr, exit status 2, no traceback. Any other exception is a bug: one line saying so, exit
status 70, the traceback only with CPCSPEECH_DEBUG=1.
"""

import os
import signal
import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from cpcspeech.errors import CPCSpeechError, internal_error

console = Console(stderr=True)


def report_error(err: CPCSpeechError, code: int = 2) -> NoReturn:
    """Print a user-facing error on one line (soft_wrap: whatever the terminal width; a library's
    multi-line message joined), without a traceback, and exit non-zero."""
    text = " ".join(str(err).split())
    console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class Commands(TyperGroup):
    """The root command group: every command (``units fit`` too) runs inside its ``invoke``, the
    one place errors are caught (``cpcspeech``, ``python -m cpcspeech`` or CliRunner alike)."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except CPCSpeechError as err:
            report_error(err)
        except (typer.Exit, typer.Abort):
            raise
        except typer.TyperException as err:  # a bad option value or name: one line too
            report_error(CPCSpeechError(f"{err.format_message()} (see --help)"))
        except Exception as err:  # anything else is a bug: one line, the traceback on request
            if os.environ.get("CPCSPEECH_DEBUG", "") not in ("", "0"):
                raise
            report_error(internal_error(err), code=70)  # 70: EX_SOFTWARE


app = typer.Typer(
    name="cpcspeech",
    help="Contrastive Predictive Coding for speech: extract, train, probe, plot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Commands,
)


def _terminate(signum: int, frame: object) -> NoReturn:
    # SIGTERM unwinds like Ctrl-C: the cleanup of temporary outputs runs, nothing half-written.
    raise SystemExit(128 + signum)


@app.callback()
def _root() -> None:
    """Contrastive Predictive Coding for speech: extract, train, probe, plot."""
    signal.signal(signal.SIGTERM, _terminate)


# Commands are added below, one block per command, each a thin wrapper over the library.


EXTRACT_INPUTS_HELP = (
    "Audio files, directories (searched recursively), Kaldi wav.scp files or Kaldi data "
    "directories (wav.scp, cut by segments if present), lhotse manifests. wav.scp lines ending "
    "in '|' run as shell commands, with --allow-commands only."
)
EXTRACT_OUT_HELP = (
    "OUT.npy: one (total_frames, D) float32 array + OUT.index.tsv (path, first_row, "
    "num_frames, seconds, status, id). A directory (existing or ending in '/'): one "
    "(T, D) .npy per input, mirroring relative paths (a/b.flac -> OUT/a/b.npy). "
    "ark,scp:FEATS.ark,FEATS.scp: Kaldi float matrices keyed by utterance id (needs "
    "cpcspeech[kaldi])."
)
EXTRACT_MODEL_HELP = "Model directory, 'default', a Hub id, a published name (cpcspeech \
models), a CPC_audio .pt or run folder, or 'random'."
EXTRACT_LAYER_HELP = "c: context c_t (top layer, D=256); z: encoder z_t (512); c1, c2, ...: \
the output of one recurrent layer of a multi-layer context."
EXTRACT_PRECISION_HELP = (
    "fp32 (exact) or bf16 (about 2x faster on CPUs with bf16 matmul; relative error "
    "~5e-4 on c, see README)."
)
EXTRACT_BATCH_HELP = (
    "Padded audio per batch (utterances of similar length together; same features as "
    "one at a time). auto: 120 on CUDA, 0 (no batching) on CPU."
)
EXTRACT_SHARD_HELP = (
    "I/N (0 <= I < N): only shard I of N, balanced by audio duration; OUT.npy becomes "
    "OUT.shard-I-of-N.npy. 'env': I/N from RANK/WORLD_SIZE (torchrun). See merge-index."
)
ALLOW_HELP = "Run wav.scp commands ('CMD |') and lhotse command/url sources (default: refuse)."
AllowCommands = Annotated[bool, typer.Option("--allow-commands", help=ALLOW_HELP)]


@app.command()
def extract(
    inputs: Annotated[list[str], typer.Argument(help=EXTRACT_INPUTS_HELP)],
    out: Annotated[str, typer.Option("--out", "-o", help=EXTRACT_OUT_HELP)],
    model: Annotated[str, typer.Option("--model", "-m", help=EXTRACT_MODEL_HELP)] = "default",
    layer: Annotated[str, typer.Option("--layer", help=EXTRACT_LAYER_HELP)] = "c",
    device: Annotated[
        str, typer.Option("--device", help="auto (cuda if available), cpu or cuda.")
    ] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed for --model random.")] = 0,
    skip_errors: Annotated[
        bool,
        typer.Option(
            "--skip-errors", help="Skip bad files (listed in the index), exit 1 at the end."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    chunk_seconds: Annotated[
        float,
        typer.Option(
            "--chunk-seconds", help="Audio per forward chunk; bounds memory, same features."
        ),
    ] = 20.0,
    precision: Annotated[str, typer.Option("--precision", help=EXTRACT_PRECISION_HELP)] = "fp32",
    batch_seconds: Annotated[
        str, typer.Option("--batch-seconds", help=EXTRACT_BATCH_HELP)
    ] = "auto",
    shard: Annotated[str | None, typer.Option("--shard", help=EXTRACT_SHARD_HELP)] = None,
    allow_commands: AllowCommands = False,
) -> None:
    """Extract CPC features (c or z) from audio at 16 kHz (other rates are resampled).

    Frame timing: frame t starts at sample 160*t (t*10 ms) and covers 10 ms;
    an utterance of N samples gives (N+1)//160 frames.
    """
    from cpcspeech.extract import extract_features, load_model_for_cli, parse_batch_seconds
    from cpcspeech.io.shards import parse_shard
    from cpcspeech.io.sources import check_files_exist, find_sources

    picked = parse_shard(shard) if shard is not None else None
    sources = find_sources(inputs, allow_commands=allow_commands)  # bad inputs fail before loading
    if not skip_errors:
        check_files_exist(sources)
    cpc_model, weights = load_model_for_cli(model, seed)
    typer.echo(f"weights: {weights}")
    summary = extract_features(
        cpc_model,
        sources,
        out,
        layer=layer,
        device=device,
        skip_errors=skip_errors,
        progress=not quiet and sys.stdout.isatty(),
        chunk_seconds=chunk_seconds,
        precision=precision,
        shard=picked,
        batch_seconds=parse_batch_seconds(batch_seconds, device),
        allow_commands=allow_commands,
    )
    typer.echo(summary.describe())
    for result in summary.skipped:  # listed, then exit status 1
        console.print(f"{result.input.label}: {result.status}", highlight=False, markup=False)
    if summary.skipped:
        console.print(f"[bold red]{len(summary.skipped)} of {len(summary.files)} files skipped[/]")
        raise typer.Exit(1)


@app.command("merge-index")
def merge_index(
    shards: list[str] = typer.Argument(  # noqa: B008 - typer's documented default style
        ..., help="The shards' outputs, OUT.shard-I-of-N.npy (each with its .index.tsv)."
    ),
    out: str = typer.Option(..., "--out", "-o", help="The merged index to write, *.index.tsv."),
) -> None:
    """Join sharded extract outputs into one index (unsharded order); arrays are not copied.

    Read it with cpcspeech.shards.MergedFeatures(OUT).features(i).
    """
    from cpcspeech.io.shards import merge_indexes

    count = merge_indexes(shards, out)
    typer.echo(f"wrote {out}: {count} files from {len(shards)} shard(s)")


@app.command("tsne")
def tsne(
    data: str = typer.Option(
        ..., "--data", help="LibriSpeech tree, Kaldi data dir (wav.scp + utt2spk) or plain folder."
    ),
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="Model directory, 'default', a Hub id, a published name (cpcspeech models), a "
        "CPC_audio .pt or run folder, 'random', 'mfcc' or a folder of .npy features.",
    ),
    out: str = typer.Option(..., "--out", "-o", help="Output figure, a .png path."),
    speakers: int = typer.Option(10, "--speakers", help="First N speakers in sorted order."),
    utts_per_speaker: int | None = typer.Option(
        None, "--utts-per-speaker", help="At most this many utterances per speaker (default all)."
    ),
    utt_list: str | None = typer.Option(
        None, "--list", help="Only the utterance ids in this file (first token per line)."
    ),
    seed: int = typer.Option(0, "--seed", help="t-SNE random_state (and the seed of 'random')."),
    perplexity: float | None = typer.Option(
        None, "--perplexity", help="t-SNE perplexity (default min(30, (n-1)/3))."
    ),
    allow_commands: AllowCommands = False,
) -> None:
    """Paper Figure 2: t-SNE of per-utterance mean c_t, coloured by speaker."""
    from cpcspeech.eval.plots import load_tsne_model, speaker_tsne
    from cpcspeech.io.corpus import find_utterances

    utterances = find_utterances(data, utt_list, allow_commands)
    cpc_model, weights = load_tsne_model(model, seed)
    embedding, labels = speaker_tsne(
        cpc_model, utterances, out, max_speakers=speakers, max_utts_per_speaker=utts_per_speaker,
        seed=seed, perplexity=perplexity, progress=sys.stderr.isatty(), weights=weights,
    )  # fmt: skip
    typer.echo(
        f"wrote {out}: {embedding.shape[0]} utterances of {len(set(labels))} speakers "
        f"(weights: {weights})"
    )


@app.command("plot-steps")
def plot_steps(
    source: str = typer.Argument(
        ..., help="log.jsonl, log.csv, a run folder, or a checkpoint folder / its meta.json."
    ),
    out: str = typer.Option(..., "--out", "-o", help="Output figure, a .png path."),
) -> None:
    """Paper Figure 3: InfoNCE prediction accuracy against the step k."""
    from cpcspeech.eval.plots import plot_prediction_steps

    accuracy = plot_prediction_steps(source, out)
    values = " ".join(f"{a:.3f}" for a in accuracy)
    typer.echo(f"wrote {out}: accuracy for k=1..{len(accuracy)}: {values}")


@app.command("train")
def train_command(
    conf: str = typer.Argument(..., help="YAML config, e.g. recipes/speechocean762/conf.yaml."),
    overrides: list[str] | None = typer.Option(  # noqa: B008 (typer's declaration idiom)
        None, "--set", help="Override one value: section.key=value (repeatable)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the latest checkpoint in train.out_dir."
    ),
    allow_commands: AllowCommands = False,
) -> None:
    """Train CPC (paper section 3.1). Under torchrun, one process per GPU (DDP)."""
    from cpcspeech.config import load_config
    from cpcspeech.train.loop import train

    trust = ["data.allow_commands=true"] if allow_commands else []  # else the config's value
    cfg = load_config(conf, [*(overrides or []), *trust])
    result = train(cfg, resume=resume, console=console)
    if result.is_main:
        valid = "n/a" if result.valid_loss is None else f"{result.valid_loss:.4f}"
        typer.echo(
            f"done: step {result.step}, train loss {result.train_loss:.4f}, valid loss {valid}; "
            f"{result.audio_seconds / 3600:.2f} h of audio in {result.wall_seconds / 60:.1f} min; "
            f"checkpoints in {result.out_dir / 'checkpoints'} "
            f"(best: {result.best_checkpoint or '-'})"
        )


@app.command("download")
def download_command(
    repo: str = typer.Argument(
        ..., help="Hub repo id org/name[@revision], or a published name (cpcspeech models)."
    ),
    revision: str | None = typer.Option(
        None, "--revision", help="Branch, tag or commit (same as the @revision suffix)."
    ),
) -> None:
    """Fetch a Hub model (config.json, model.safetensors, README.md) into the HF cache, or
    download and convert a published checkpoint into the cpcspeech cache.

    Prints the local folder. Later loads of REPO then work offline (HF_HUB_OFFLINE=1).
    """
    from cpcspeech.weights.resolve import download_model

    source = download_model(repo, revision)
    console.print(f"cached: {source.describe()}", highlight=False, markup=False)
    typer.echo(str(source.directory))


@app.command("export")
def export_command(
    checkpoint: str = typer.Argument(
        ..., help="Checkpoint folder, or a run folder (its best, else latest, checkpoint)."
    ),
    out_dir: str = typer.Argument(..., help="New model directory to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT_DIR if it exists."),
) -> None:
    """Write a model directory (config.json, model.safetensors, README.md) from a checkpoint."""
    from cpcspeech.weights.export import export_model

    result = export_model(checkpoint, out_dir, overwrite=overwrite)
    typer.echo(
        f"wrote {result.out_dir}: config.json, model.safetensors (sha256 {result.sha256[:12]}...), "
        f"README.md; from {result.source.describe()}"
    )


@app.command("convert")
def convert_command(
    source: str = typer.Argument(
        ...,
        help="A CPC_audio checkpoint: a release .pt ({config, weights}) or a training run folder "
        "(checkpoint_N.pt + checkpoint_args.json).",
    ),
    out_dir: str = typer.Argument(..., help="New model directory to write."),
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", help="Run folder only: this checkpoint_N.pt instead of the newest."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT_DIR if it exists."),
) -> None:
    """Convert a CPC_audio checkpoint into a model directory (config, safetensors, card).

    Reads tensors only (torch.load weights_only=True) and maps every tensor by name, strictly.
    """
    from cpcspeech.weights.convert import convert

    result = convert(source, out_dir, checkpoint=checkpoint, overwrite=overwrite)
    ckpt = result.checkpoint
    typer.echo(
        f"wrote {result.out_dir}: config.json, model.safetensors (sha256 "
        f"{result.weights_sha256[:12]}...), README.md; from {ckpt.path} ({ckpt.kind} format, "
        f"sha256 {ckpt.sha256[:12]}...), {len(ckpt.weights)} tensors mapped, "
        f"{len(ckpt.ignored)} entries ignored"
    )


@app.command("models")
def models_command() -> None:
    """List the model names --model accepts: shipped weights and published CPC checkpoints.

    Published checkpoints are downloaded (once, resumable, sha256-checked) and converted on
    first use into $CPCSPEECH_CACHE, $HF_HOME/cpcspeech or ~/.cache/cpcspeech.
    """
    from cpcspeech.weights.published import cache_root
    from cpcspeech.weights.resolve import list_models

    for entry in list_models():
        typer.echo(f"{entry.name:<34} {entry.kind:<10} {entry.state:<13} {entry.description}")
        typer.echo(f"{'':<34} from {entry.origin}")
    typer.echo(f"cache: {cache_root()}")


@app.command("push")
def push_command(
    out_dir: str = typer.Argument(..., help="A model directory written by `cpcspeech export`."),
    repo: str = typer.Argument(..., help="Hub repo id org/name (created if missing)."),
    revision: str | None = typer.Option(None, "--revision", help="Branch to push to."),
    private: bool = typer.Option(False, "--private", help="Create the repo as private."),
    message: str | None = typer.Option(None, "--message", help="Commit message."),
) -> None:
    """Upload an exported model directory to the Hugging Face Hub (maintainers; needs a token)."""
    from cpcspeech.weights.export import push_model

    url = push_model(out_dir, repo, revision=revision, private=private, commit_message=message)
    typer.echo(f"pushed {out_dir} to {repo}: {url}")


# ----- evaluation: probe, abx, units -----

# Options the evaluation commands share, declared once (typer's Annotated form).
DATA_HELP = "Kaldi data dir / corpus root, or a training config YAML (data.root)."
DataOption = Annotated[str, typer.Option("--data", help=DATA_HELP)]
FORMAT_HELP = "cpc, kaldi, ctm or textgrid (default: detected)."
LabelFormatOption = Annotated[str | None, typer.Option("--label-format", help=FORMAT_HELP)]
PHONES_HELP = "SYMBOL ID table (default: phones.txt beside --labels)."
PhonesOption = Annotated[str | None, typer.Option("--phones", help=PHONES_HELP)]
LAYER_HELP = "c (context, paper), z (encoder) or c1, c2, ... (one context layer)."
LayerOption = Annotated[str, typer.Option("--layer", help=LAYER_HELP)]
DeviceOption = Annotated[str, typer.Option("--device", help="Device for feature extraction.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
EVAL_MODEL_HELP = "Model, 'default', a Hub id, 'random', 'mfcc' or .npy dir."


def _progress(quiet: bool) -> bool:
    """A progress bar unless --quiet, and only on a terminal."""
    return not quiet and sys.stderr.isatty()


# Commands in their own modules, registered on `app` when imported; each imports `app` and the
# shared options above from this package.
from cpcspeech.cli import align, evaluate, units, zerospeech  # noqa: E402, F401
