"""Publish weights: export a checkpoint as a model directory with a model card, push it to the Hub.

A model directory holds exactly config.json, model.safetensors and README.md (the card).
"""

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from cpcspeech.errors import CPCSpeechError, ModelLoadError
from cpcspeech.files import (
    check_output_apart,
    check_writable_folder,
    read_json,
    read_text,
    replace_folder,
    temp_dir,
)
from cpcspeech.model import CONFIG_NAME, WEIGHTS_NAME, CPCModel, read_model_config
from cpcspeech.runtime import one_line
from cpcspeech.weights.card import CARD_NAME, card_header, config_table, usage_section
from cpcspeech.weights.resolve import (
    HUB_FILES,
    ModelSource,
    locate_model,
    parse_repo_spec,
    weights_sha256,
)

PATH_KEYS = ("root", "train_list", "valid_list")  # data.* paths, shortened in the card


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    source: ModelSource
    sha256: str


def export_model(
    checkpoint: str, out_dir: str | os.PathLike, overwrite: bool = False
) -> ExportResult:
    """Write ``out_dir`` = config.json + model.safetensors + README.md from a checkpoint.

    ``checkpoint`` is any local spec :func:`cpcspeech.weights.resolve.locate_model` accepts: a
    checkpoint folder, a run folder (best or latest checkpoint) or a model directory. The weights
    are validated by a strict load and copied byte for byte; the card is built from the
    checkpoint's config.yaml and meta.json. The folder is assembled in a temporary sibling and
    renamed into place, so an interrupted export leaves no half-written model directory.
    """
    if not Path(checkpoint).exists():
        raise ModelLoadError(
            f"export: expected a local checkpoint, run folder or model directory, found no path "
            f"{checkpoint!r}"
        )
    source = locate_model(checkpoint)
    if source.kind == "cpc_audio":
        raise ModelLoadError(
            f"export: {checkpoint!r} is a CPC_audio checkpoint; use `cpcspeech convert` for it"
        )
    CPCModel.from_directory(source.directory)  # strict: refuse to export weights that do not load
    out_dir = Path(out_dir)
    if os.path.lexists(out_dir) and not overwrite:
        raise CPCSpeechError(f"export: {out_dir} already exists; choose a new folder or overwrite")
    if os.path.lexists(out_dir):  # never replace (delete) the checkpoint or a folder holding it
        check_output_apart(out_dir, [checkpoint, source.directory], "export")
    check_writable_folder(out_dir.parent, f"export: {out_dir}")
    tmp = temp_dir(out_dir.parent, prefix=f".tmp-{out_dir.name}-")
    try:
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            shutil.copyfile(source.directory / name, tmp / name)
        sha = weights_sha256(tmp)
        card = build_model_card(
            name=out_dir.name,
            model_config=asdict(read_model_config(tmp)),
            meta=_read_json(source.directory / "meta.json"),
            train_config=_read_yaml(source.directory / "config.yaml"),
            sha256=sha,
            source=source,
        )
        (tmp / CARD_NAME).write_text(card, encoding="utf-8")
        replace_folder(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return ExportResult(out_dir=out_dir, source=source, sha256=sha)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    value = read_json(path, ModelLoadError)
    return value if isinstance(value, dict) else None


def _read_yaml(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = yaml.safe_load(read_text(path, ModelLoadError))
    except yaml.YAMLError as err:
        raise ModelLoadError(f"{path}: not valid YAML ({one_line(err)})") from None
    return value if isinstance(value, dict) else None


def _fmt(value: Any, unit: str = "", digits: int = 4) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


CARD_SUMMARY = [
    "A Contrastive Predictive Coding speech encoder (van den Oord et al. 2018, section",
    "3.1): a strided CNN encoder g_enc (samples -> z_t, 10 ms frames at 16 kHz) and a",
    "recurrent context network g_ar (z_<=t -> c_t). The W_k prediction heads are not",
    "included: they are only needed for pre-training.",
]
"""The exported model card's opening paragraph, one item per line."""

PROBE_SECTION = [
    "## Probe results",
    "",
    "Not measured. Linear-probe accuracies (phone per frame, speaker) have not been run for",
    "these weights yet; see `cpcspeech probe` and fill this table with the measured numbers.",
    "",
    "| probe | accuracy |",
    "|---|---|",
    "| phone (per frame) | not measured |",
    "| speaker | not measured |",
    "",
]


def build_model_card(
    name: str,
    model_config: dict[str, Any],
    meta: dict[str, Any] | None,
    train_config: dict[str, Any] | None,
    sha256: str,
    source: ModelSource | None = None,
) -> str:
    """The README.md of an exported model: usage, architecture, training record, probe placeholder.

    ``meta`` is a checkpoint's meta.json and ``train_config`` its config.yaml (None when absent:
    the card then says "unknown"). Data paths are shortened to their last component, so the card
    does not publish the training machine's folder layout.
    """
    lines = [
        *card_header(name, CARD_SUMMARY),
        *usage_section(name, "wav: (N,) float32 at 16 kHz -> c: (T, 256), T = (N + 1) // 160"),
        "or `cpcspeech extract AUDIO... --model MODEL --out feats.npy`.",
        "",
        *config_table(model_config),
        f"Weights: `{WEIGHTS_NAME}`, sha256 `{sha256}`.",
        "",
        *training_section(meta or {}, source),
        "",
        "Training configuration (config.yaml; data paths shortened):",
        "",
        *_train_config_block(train_config),
        "",
        *PROBE_SECTION,
    ]
    return "\n".join(lines)


def _hours(seconds: Any) -> str:
    """ "7200 s (2.00 h)" for a number of seconds, else "unknown"."""
    if isinstance(seconds, int | float):
        return f"{seconds:.0f} s ({seconds / 3600:.2f} h)"
    return "unknown"


def training_section(meta: dict[str, Any], source: ModelSource | None) -> list[str]:
    """The card's "## Training" table from a checkpoint's meta.json (its rows, no blank after)."""
    lines = [
        "## Training",
        "",
        "| | |",
        "|---|---|",
        f"| steps | {_fmt(meta.get('step'))} |",
        f"| audio seen | {_hours(meta.get('audio_seconds'))} |",
        f"| wall time | {_hours(meta.get('wall_seconds'))} |",
        f"| hardware | {_fmt(meta.get('hardware'))} |",
        f"| train loss (InfoNCE) | {_fmt(meta.get('train_loss'))} |",
        f"| valid loss (InfoNCE) | {_fmt(meta.get('valid_loss'))} |",
    ]
    accuracy = meta.get("valid_accuracy")
    if isinstance(accuracy, list) and accuracy:
        values = ", ".join(f"{float(a):.3f}" for a in accuracy)
        lines.append(f"| valid accuracy, k = 1..{len(accuracy)} | {values} |")
    if source is not None:
        how = source.detail or source.kind
        lines.append(f"| exported from | `{source.directory.name}` ({how}) |")
    return lines


def _train_config_block(train_config: dict[str, Any] | None) -> list[str]:
    """config.yaml as a YAML block with data paths cut to their last component."""
    cfg = json.loads(json.dumps(train_config)) if train_config else None
    if not cfg:
        return ["unknown (the checkpoint had no config.yaml)"]
    if isinstance(cfg.get("data"), dict):
        for key in PATH_KEYS:
            value = cfg["data"].get(key)
            if isinstance(value, str) and value:
                cfg["data"][key] = Path(value).name
    return ["```yaml", yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```"]


def push_model(
    out_dir: str | os.PathLike,
    repo_id: str,
    revision: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
) -> str:
    """Upload an exported model directory to the Hub (maintainers); returns the commit URL.

    The folder is first loaded strictly and must hold a model card. Only config.json,
    model.safetensors and README.md are uploaded. ``revision`` is a branch, created if missing.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ModelLoadError(f"push: expected a model directory, found no folder {out_dir}")
    CPCModel.from_directory(out_dir)
    if not (out_dir / CARD_NAME).is_file():
        raise ModelLoadError(
            f"push: expected a model card {out_dir / CARD_NAME}, found none; "
            "make the folder with `cpcspeech export`"
        )
    repo_id, revision = parse_repo_spec(repo_id, revision)  # checks the id and the branch name
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=out_dir,
            revision=revision,
            allow_patterns=list(HUB_FILES),
            commit_message=commit_message or f"Upload {out_dir.name} with cpcspeech",
        )
    except (HfHubHTTPError, OSError) as err:
        raise CPCSpeechError(f"push to {repo_id} failed: {err}") from err
    return str(getattr(info, "commit_url", info))
