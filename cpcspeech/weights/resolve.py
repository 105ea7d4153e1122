"""Resolve a model spec to a local model directory (config.json + model.safetensors).

A spec is a shipped short name, a local model directory, a training checkpoint or run folder, or a
Hugging Face Hub repo id ``org/name[@revision]``. Only safetensors weights are ever loaded.
"""

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from cpcspeech.errors import ModelLoadError
from cpcspeech.files import file_sha256, read_text
from cpcspeech.model import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CPCModel,
    is_model_dir,
    random_model,
    read_model_config,
)
from cpcspeech.runtime import one_line
from cpcspeech.weights.card import CARD_NAME
from cpcspeech.weights.convert import convert_checkpoint, is_cpc_audio_source, pick_run_checkpoint
from cpcspeech.weights.published import PUBLISHED, base_url, cache_state, resolve_published

logger = logging.getLogger(__name__)

HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
"""The only files fetched from a Hub repo: never ``*.bin`` / pickles."""

BEST_NAME = "best.txt"  # checkpoints/best.txt names the best checkpoint folder (see train.py)


@dataclass(frozen=True)
class ShippedModel:
    """Weights shipped inside the package, with an optional Hub mirror pinned to a revision."""

    folder: str  # under pretrained/ in a clone, under cpcspeech/weights/ once installed
    description: str
    hub_repo_id: str | None = None
    hub_revision: str | None = None  # pinned commit, so the same name always means the same bytes


SHIPPED: dict[str, ShippedModel] = {
    "cpc-speechocean762": ShippedModel(
        folder="cpc-speechocean762",
        description=(
            "CPC (paper architecture, channel norm) trained on speechocean762 "
            "train_split + extra_train"
        ),
        # No Hub repo has been created for these weights yet; the shipped copy is the only source.
        hub_repo_id=None,
        hub_revision=None,
    ),
    "cpc-speechocean762-phonetic": ShippedModel(
        folder="cpc-speechocean762-phonetic",
        description=(
            "the default weights + 5250 updates with same-sequence negatives and augmentation "
            "of the past: more phonetic, less speaker information (not the default)"
        ),
        hub_repo_id=None,
        hub_revision=None,
    ),
}
ALIASES = {"default": "cpc-speechocean762"}

# Hub repo ids: "org/name", each part of letters, digits, '-', '_' and '.' (huggingface_hub's
# validate_repo_id gives the detailed rules and is applied afterwards).
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# A revision is a branch, tag or commit (git ref names, minus the characters git forbids); checked
# before any network use, so a typo is not reported as a connection failure.
_REVISION = re.compile(r"^[A-Za-z0-9_][\w./-]{0,254}$")

ACCEPTED_FORMS = (
    "accepted model specs: a shipped name (" + ", ".join(sorted({*ALIASES, *SHIPPED})) + "); "
    "a published name (see `cpcspeech models`); a CPC_audio checkpoint (.pt file or run folder); "
    "a local model directory (config.json + model.safetensors); a training checkpoint folder "
    "(checkpoints/step-NNNNNNNN) or run folder (containing checkpoints/); "
    "or a Hugging Face Hub repo id org/name, optionally org/name@revision"
)


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights were found.

    kind: "shipped", "directory", "checkpoint", "hub", "published" or "cpc_audio". ``detail``
    says how the folder was chosen (e.g. "best checkpoint named by checkpoints/best.txt",
    "commit 0123abcd...").
    For "cpc_audio" (a CPC_audio checkpoint file or run folder, converted in memory by
    :func:`load_model`), ``directory`` is that file or folder and ``checkpoint`` the file read.
    """

    kind: str
    directory: Path
    spec: str
    detail: str = ""
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    checkpoint: Path | None = None

    def describe(self, short: bool = False) -> str:
        """One line for logs: what the weights are and their sha256 prefix.

        ``short`` leaves out local folders and details (for figure titles, which get published).
        """
        if self.kind == "cpc_audio":
            digest = file_sha256(self.checkpoint)[:12]
            if short:
                return f"CPC_audio checkpoint {self.checkpoint.name!r}, sha256 {digest}..."
            return (
                f"CPC_audio checkpoint {self.checkpoint} (converted in memory), sha256 {digest}..."
            )
        digest = weights_sha256(self.directory)[:12]
        if short:
            if self.kind == "hub":
                name = self.repo_id + (f"@{self.revision}" if self.revision else "")
            else:
                name = Path(self.spec).name
            return f"{self.kind} weights {name!r}, sha256 {digest}..."
        if self.kind == "shipped":
            where = f"shipped weights {self.spec!r} ({self.directory})"
        elif self.kind == "hub":
            rev = f"@{self.revision}" if self.revision else ""
            where = f"Hub {self.repo_id}{rev} (commit {self.commit or 'unknown'}, {self.directory})"
        elif self.kind == "checkpoint":
            where = f"checkpoint {self.directory}"
        elif self.kind == "published":
            where = f"published {self.spec} ({self.directory})"
        else:
            where = f"local directory {self.directory}"
        if self.detail and self.kind != "hub":
            where += f" [{self.detail}]"
        return f"{where}, sha256 {digest}..."


def resolve_model_dir(name: str, revision: str | None = None) -> Path:
    """Return the local directory holding config.json + model.safetensors for ``name``.

    Resolution order (the first that applies wins):
      1. a shipped short name ("default", "cpc-speechocean762"); write ``./default`` to mean a
         local folder of that name;
      2. an existing local path: a model directory, a checkpoint folder, a run folder (its
         ``checkpoints/best.txt`` if present, else the latest ``step-*``) or a ``checkpoints``
         folder itself;
      3. a string shaped ``org/name`` or ``org/name@revision``: a Hugging Face Hub repo id
         (a spec starting with '/', '.' or '~' is always a path, and an error if missing);
      4. anything else is a ModelLoadError listing these forms.
    ``revision`` applies only to Hub repo ids. A CPC_audio checkpoint has no model directory: load
    it with :func:`load_model` (or write one with ``cpcspeech convert``).
    """
    source = locate_model(name, revision)
    if source.kind == "cpc_audio":
        raise ModelLoadError(
            f"model {name!r} is a CPC_audio checkpoint, not a model directory; load it with "
            "cpcspeech.load_model, or write a model "
            "directory from it with `cpcspeech convert`"
        )
    return source.directory


def load_model(
    spec: str | os.PathLike,
    revision: str | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[CPCModel, ModelSource]:
    """The one loader behind every ``--model``: any spec -> (CPCModel in eval mode, its source).

    Everything :func:`resolve_model_dir` accepts, plus a CPC_audio checkpoint (a release
    ``*.pt`` file or a run folder with ``checkpoint_args.json``), converted in memory under the
    rules of ``cpcspeech convert`` (tensors-only loading, strict name map).
    ``CPCModel.from_pretrained`` loads a local model directory only; this loads everything.
    """
    source = locate_model(spec, revision)
    if source.kind == "cpc_audio":
        name = source.checkpoint.name if source.directory.is_dir() else None
        model, _ = convert_checkpoint(source.directory, checkpoint=name)
    else:
        model = CPCModel.from_directory(source.directory, map_location=map_location)
    return model.to(map_location).eval(), source


RANDOM_SPEC = "random"
"""The ``--model`` of extract and tsne that names an untrained, seeded model (a baseline)."""


def load_model_for_cli(spec: str, seed: int = 0, short: bool = False) -> tuple[CPCModel, str]:
    """``--model`` of extract and tsne: ``"random"`` -> :func:`cpcspeech.model.random_model`
    (``seed``; the global RNG is left alone), anything else -> :func:`load_model`.

    Returns the model in eval mode, on the CPU, and a one-line description of its weights
    (``short``: without local paths, see :meth:`ModelSource.describe`).
    """
    if spec == RANDOM_SPEC:
        return random_model(seed).eval(), f"random init (seed {seed})"
    model, source = load_model(spec)
    return model, source.describe(short=short)


def locate_model(
    spec: str | os.PathLike, revision: str | None = None, local_files_only: bool = False
) -> ModelSource:
    """Resolve ``spec`` (see :func:`resolve_model_dir`) and say where the weights came from.

    ``local_files_only`` makes a Hub spec use the local cache only (no network).
    """
    spec = os.fspath(spec)
    if not spec.strip():
        raise ModelLoadError(f"model spec is empty; {ACCEPTED_FORMS}")
    if spec in ALIASES or spec in SHIPPED:
        _no_revision(spec, revision, "a shipped model")
        return shipped_source(spec)
    if spec in PUBLISHED:
        _no_revision(spec, revision, "a published checkpoint")
        found = resolve_published(spec)
        detail = f"{found.url}, sha256 {found.sha256}, converted in {found.directory}"
        return ModelSource("published", found.directory, spec, detail=detail)
    path = Path(spec).expanduser()
    if path.exists():
        _no_revision(spec, revision, "a local path")
        if is_cpc_audio_source(path):
            checkpoint = path if path.is_file() else pick_run_checkpoint(path)
            detail = f"CPC_audio checkpoint {checkpoint.name}, converted in memory"
            return ModelSource("cpc_audio", path, spec, detail=detail, checkpoint=checkpoint)
        return _local_source(path, spec)
    if spec.startswith(("/", ".", "~")) or spec.endswith(("/", os.sep)):
        raise ModelLoadError(f"model {spec!r}: no such path ({path.resolve()} does not exist)")
    repo_id, repo_revision = parse_repo_spec(spec, revision)
    return hub_source(repo_id, repo_revision, local_files_only=local_files_only)


def describe_model_source(spec: str | os.PathLike, revision: str | None = None) -> str:
    """One line naming the weights ``spec`` resolves to, e.g. "Hub org/name@v1 (commit ...)".

    For a Hub spec the local cache is tried first, so describing a model that was just loaded
    makes no network request.
    """
    spec = os.fspath(spec)
    try:
        source = locate_model(spec, revision, local_files_only=True)
    except ModelLoadError:
        source = locate_model(spec, revision)
    return source.describe()


@dataclass(frozen=True)
class ModelEntry:
    """One row of ``cpcspeech models``: a name that ``--model`` accepts."""

    name: str
    kind: str  # "shipped" or "published"
    description: str
    origin: str  # where the weights come from
    state: str  # "installed", "converted", "downloaded" or "not cached"


def list_models() -> list[ModelEntry]:
    """Shipped and published names, with where they come from and whether they are local.

    Looks at the package and the cache only: no network.
    """
    rows = []
    for name, entry in SHIPPED.items():
        aliases = [a for a, target in ALIASES.items() if target == name]
        label = name + (f" (= {', '.join(aliases)})" if aliases else "")
        installed = any(is_model_dir(folder) for folder in shipped_candidates(entry.folder))
        rows.append(
            ModelEntry(label, "shipped", entry.description, "inside the package",
                       "installed" if installed else "not installed")
        )  # fmt: skip
    for name, entry in PUBLISHED.items():
        state = cache_state(name)
        origin = base_url() + entry.file
        rows.append(ModelEntry(name, "published", entry.description, origin, state))
    return rows


# ----- shipped weights -----
def shipped_candidates(folder: str) -> list[Path]:
    """Where a shipped folder may live: the installed package, then the source tree.

    A wheel installs ``pretrained/`` as ``cpcspeech/shipped/`` (see pyproject.toml); a clone or
    editable install keeps it at ``<repo>/pretrained/``.
    """
    package = Path(__file__).resolve().parents[1]
    return [package / "shipped" / folder, package.parent / "pretrained" / folder]


def shipped_source(name: str) -> ModelSource:
    """The ModelSource of a shipped short name; ModelLoadError if its files are not installed."""
    key = ALIASES.get(name, name)
    entry = SHIPPED[key]
    candidates = shipped_candidates(entry.folder)
    for folder in candidates:
        if (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file():
            label = f"{name} = {key}" if key != name else key
            return ModelSource("shipped", folder, label, detail=entry.description)
    if entry.hub_repo_id is not None:
        logger.info("shipped weights %r not installed; using Hub %s", key, entry.hub_repo_id)
        return hub_source(entry.hub_repo_id, entry.hub_revision)
    found = [
        f"{folder}: " + (", ".join(sorted(p.name for p in folder.iterdir())) or "empty")
        for folder in candidates
        if folder.is_dir()
    ]
    raise ModelLoadError(
        f"shipped weights {key!r} are not installed: expected {CONFIG_NAME} and {WEIGHTS_NAME} "
        f"in one of {[str(c) for c in candidates]}, found "
        + ("; ".join(found) if found else "no such folder")
        + ". Pass a model directory, a training checkpoint or a Hub repo id instead"
    )


# ----- local paths -----
def _no_revision(spec: str, revision: str | None, what: str) -> None:
    if revision:
        raise ModelLoadError(
            f"model {spec!r} is {what}; a revision ({revision!r}) applies only to Hub repo ids"
        )


def _checkpoint_step(path: Path) -> int | None:
    """step-00001000 -> 1000; None for anything else."""
    match = re.fullmatch(r"step-(\d+)", path.name)
    return int(match.group(1)) if match else None


def _local_source(path: Path, spec: str) -> ModelSource:
    if not path.is_dir():
        raise ModelLoadError(
            f"model {spec!r}: expected a directory (config.json + model.safetensors), found a "
            f"file; pass its folder {str(path.parent)!r} instead"
        )
    if is_model_dir(path):
        is_checkpoint = (path / "meta.json").is_file() or _checkpoint_step(path) is not None
        return ModelSource("checkpoint" if is_checkpoint else "directory", path, spec)
    if (path / "checkpoints").is_dir():
        return _pick_checkpoint(path / "checkpoints", spec)
    if (path / BEST_NAME).is_file() or any(_checkpoint_step(p) is not None for p in path.iterdir()):
        return _pick_checkpoint(path, spec)
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (path / n).is_file()]
    raise ModelLoadError(
        f"model {spec!r}: expected a model directory ({CONFIG_NAME} + {WEIGHTS_NAME}) or a "
        f"training run folder (with checkpoints/), found neither (missing {missing}); "
        f"{ACCEPTED_FORMS}"
    )


def _pick_checkpoint(folder: Path, spec: str) -> ModelSource:
    """folder: a run's checkpoints/ -> the best checkpoint if named, else the latest step-*."""
    best_file = folder / BEST_NAME
    if best_file.is_file():
        name = read_text(best_file, ModelLoadError).strip()
        chosen = folder / name
        if not name or "/" in name or "\\" in name or not is_model_dir(chosen):
            raise ModelLoadError(
                f"{best_file} names {name!r}, expected a checkpoint folder beside it holding "
                f"{CONFIG_NAME} + {WEIGHTS_NAME}; found none. Pass a checkpoint folder directly"
            )
        detail = f"best checkpoint named by {best_file}"
        logger.info("model %r: using %s (%s)", spec, chosen, detail)
        return ModelSource("checkpoint", chosen, spec, detail=detail)
    if (folder / "best").is_dir() and is_model_dir(folder / "best"):
        detail = "best checkpoint (checkpoints/best)"
        return ModelSource("checkpoint", folder / "best", spec, detail=detail)
    steps = [
        (step, p)
        for p in folder.iterdir()
        if (step := _checkpoint_step(p)) is not None and p.is_dir() and is_model_dir(p)
    ]
    if not steps:
        raise ModelLoadError(
            f"model {spec!r}: expected step-* checkpoint folders with {CONFIG_NAME} + "
            f"{WEIGHTS_NAME} in {folder}, found none (has training saved a checkpoint yet?)"
        )
    step, chosen = max(steps)
    detail = f"latest checkpoint, step {step} (no {BEST_NAME})"
    logger.info("model %r: using %s (%s)", spec, chosen, detail)
    return ModelSource("checkpoint", chosen, spec, detail=detail)


# ----- Hugging Face Hub -----
def parse_repo_spec(spec: str, revision: str | None = None) -> tuple[str, str | None]:
    """``org/name[@rev]`` -> (repo_id, revision); ModelLoadError for anything else.

    ``revision`` (e.g. from --revision) must agree with an ``@rev`` suffix when both are given.
    """
    repo_id, _, suffix = spec.partition("@")
    if "@" in spec and not suffix:
        raise ModelLoadError(f"model {spec!r}: expected a revision after '@', found none")
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id:
        raise ModelLoadError(
            f"model {spec!r}: not a shipped name, not an existing path and not a Hub repo id; "
            f"{ACCEPTED_FORMS}"
        )
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ModelLoadError(f"model {spec!r}: invalid Hub repo id ({one_line(err)})") from err
    if suffix and revision and suffix != revision:
        raise ModelLoadError(
            f"model {spec!r}: revision given twice and they differ: {suffix!r} in the spec, "
            f"{revision!r} as the revision argument"
        )
    chosen = suffix or revision or None
    if chosen is not None and (not _REVISION.fullmatch(chosen) or ".." in chosen):
        raise ModelLoadError(
            f"model {spec!r}: revision {chosen!r} is not a branch, tag or commit name; expected "
            "letters, digits and '.', '_', '-', '/' (at most 255, no '..')"
        )
    return repo_id, chosen


def hub_source(
    repo_id: str, revision: str | None = None, local_files_only: bool = False
) -> ModelSource:
    """Fetch config.json, model.safetensors and README.md of a Hub repo into the HF cache.

    Uses the standard cache (HF_HOME / HF_HUB_CACHE) and endpoint (HF_ENDPOINT); the cached copy
    is used when offline. huggingface_hub downloads to a temporary ``.incomplete`` file and renames
    it, so an interrupted download never leaves a file that loads.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    label = f"{repo_id}@{revision}" if revision else repo_id
    fix = (
        f"run `cpcspeech download {label}` while online, set HF_ENDPOINT to a reachable Hub "
        "mirror, or pass a local model directory"
    )
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=list(HUB_FILES),
                local_files_only=local_files_only,
            )
        )
    except RevisionNotFoundError as err:
        raise ModelLoadError(f"Hub repo {repo_id}: revision {revision!r} not found") from err
    except RepositoryNotFoundError as err:
        raise ModelLoadError(
            f"Hub repo {repo_id!r} not found at {constants.ENDPOINT} (or it is private or gated "
            "and no valid token was given: set HF_TOKEN or run `hf auth login`)"
        ) from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        cause = err.__cause__
        if local_files_only:
            reason = "no network use was allowed"
        elif constants.is_offline_mode():
            reason = "offline mode is on (HF_HUB_OFFLINE=1)"
        elif isinstance(cause, HfHubHTTPError) and cause.response is not None:
            reason = f"the Hub at {constants.ENDPOINT} answered HTTP {cause.response.status_code}"
        else:
            reason = f"the Hub at {constants.ENDPOINT} is unreachable"
        cached = "incomplete" if "incomplete" in str(err) else "not"
        raise ModelLoadError(
            f"Hub repo {label}: {reason} and the model is {cached} in the local cache "
            f"({constants.HF_HUB_CACHE}); {fix}"
        ) from err
    except (HfHubHTTPError, OSError) as err:
        # HTTP errors mid-download, consistency checks (short files), a broken connection.
        raise ModelLoadError(
            f"Hub repo {label}: download failed ({type(err).__name__}: {one_line(err)}); "
            f"retry, or {fix}"
        ) from err
    except Exception as err:  # httpx transport errors are not OSError subclasses
        if type(err).__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore"):
            raise
        raise ModelLoadError(
            f"Hub repo {label}: download failed ({type(err).__name__}: {one_line(err)}); "
            f"retry, or {fix}"
        ) from err
    commit = folder.name
    _check_hub_folder(folder, repo_id, label, commit)
    return ModelSource(
        "hub",
        folder,
        label,
        detail=f"commit {commit}",
        repo_id=repo_id,
        revision=revision,
        commit=commit,
    )


def _repo_files(repo_id: str, commit: str) -> list[str] | None:
    """The repo's file list at ``commit`` from the cached tree listing (no network)."""
    try:
        from huggingface_hub import get_cached_repo_tree

        return sorted(f.path for f in get_cached_repo_tree(repo_id, revision=commit))
    except Exception:  # an older huggingface_hub or no cached listing: the list is only a hint
        return None


def _check_hub_folder(folder: Path, repo_id: str, label: str, commit: str) -> None:
    """A downloaded snapshot must hold our config.json and safetensors weights."""
    if is_model_dir(folder):
        try:
            read_model_config(folder)
        except ModelLoadError as err:
            raise ModelLoadError(f"Hub repo {label} (commit {commit}): {err}") from err
        return
    files = _repo_files(repo_id, commit)
    listing = f"the repo has {files}" if files is not None else "the repo's files are unknown"
    if not (folder / CONFIG_NAME).is_file():
        raise ModelLoadError(
            f"Hub repo {label} (commit {commit}): expected a cpcspeech {CONFIG_NAME}, found none "
            f"({listing}); this is not a cpcspeech model"
        )
    pickles = [f for f in files or [] if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
    note = (
        f"; found only pickled weights {pickles}, which cpcspeech never loads (unpickling can "
        "run code)"
        if pickles
        else ""
    )
    raise ModelLoadError(
        f"Hub repo {label} (commit {commit}): expected {WEIGHTS_NAME}, found none ({listing})"
        + note
    )


def download_model(spec: str, revision: str | None = None) -> ModelSource:
    """Pre-fetch a Hub model or a published name into the cache (for later offline use) and
    check it loads."""
    if spec in PUBLISHED:
        _no_revision(spec, revision, "a published checkpoint")
        source = locate_model(spec)  # download, verify and convert into the cache
        CPCModel.from_directory(source.directory)
        return source
    repo_id, repo_revision = parse_repo_spec(spec, revision)
    if Path(spec).exists():
        raise ModelLoadError(f"{spec!r} is a local path; download expects a Hub repo id org/name")
    source = hub_source(repo_id, repo_revision)
    CPCModel.from_directory(source.directory)  # strict load: fail now, not when offline later
    return source


def weights_sha256(directory: str | os.PathLike) -> str:
    """Hex sha256 of ``directory/model.safetensors``."""
    return file_sha256(Path(directory) / WEIGHTS_NAME)
