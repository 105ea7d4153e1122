"""Published CPC checkpoints by name (Libri-light's CPC_audio releases): download once, verify,
convert once, and cache both under the standard cache root.

The base URL comes from ``CPCSPEECH_CHECKPOINT_URL`` (default: the Libri-light release folder).
"""

import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from rich.progress import DownloadColumn, TransferSpeedColumn

from cpcspeech.errors import ModelLoadError
from cpcspeech.files import check_writable_folder, file_sha256, read_text, write_text_atomic
from cpcspeech.runtime import progress_bar
from cpcspeech.weights.convert import convert

BASE_URL_ENV = "CPCSPEECH_CHECKPOINT_URL"
DEFAULT_BASE_URL = "https://dl.fbaipublicfiles.com/librilight/CPC_checkpoints/"
CACHE_ENV = "CPCSPEECH_CACHE"
OFFLINE_ENVS = ("CPCSPEECH_OFFLINE", "HF_HUB_OFFLINE")
TIMEOUT_SECONDS = 60.0
_BLOCK = 1 << 20


@dataclass(frozen=True)
class PublishedCheckpoint:
    """One release file. Its name ends in ``-<first 8 hex digits of its sha256>.pt``
    (torch.hub's convention), which is always checked; ``sha256`` pins the whole digest where it
    has been established from the file itself (None: not yet, see README)."""

    file: str
    description: str
    sha256: str | None = None

    @property
    def sha256_prefix(self) -> str:
        match = re.search(r"-([0-9a-f]{8,})\.pt$", self.file)
        if match is None:  # a registry entry without the convention would never be verified
            raise ModelLoadError(f"{self.file}: expected NAME-<sha256 prefix>.pt, found none")
        return match.group(1)


# The Libri-light CPC checkpoints (facebookresearch/libri-light, eval/README; CPC_audio's
# hubconf.py loads the 60k one). No full sha256 is pinned: the files could not be downloaded
# where this was written, so only the prefix in each name is checked.
PUBLISHED: dict[str, PublishedCheckpoint] = {
    "librilight-60k": PublishedCheckpoint(
        "60k_epoch4-d0f474de.pt",
        "CPC_audio trained on Libri-light 60k h, epoch 4 (CPC_audio's torch.hub model)",
    ),
    "librilight-6k": PublishedCheckpoint(
        "6k_epoch30-9df0493c.pt", "CPC_audio trained on Libri-light 6k h, epoch 30"
    ),
    "librilight-600h": PublishedCheckpoint(
        "600h-bdd7ced6.pt", "CPC_audio trained on Libri-light 600 h"
    ),
}


@dataclass(frozen=True)
class PublishedModel:
    """A published name resolved to its converted model directory in the cache."""

    name: str
    directory: Path
    checkpoint: Path
    url: str
    sha256: str


def base_url() -> str:
    """The folder the release files are fetched from, ending in '/'."""
    url = os.environ.get(BASE_URL_ENV, "").strip() or DEFAULT_BASE_URL
    return url if url.endswith("/") else url + "/"


def cache_root() -> Path:
    """``$CPCSPEECH_CACHE``, else ``$HF_HOME/cpcspeech``, else ``$XDG_CACHE_HOME/cpcspeech``
    (``~/.cache/cpcspeech``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "cpcspeech"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "cpcspeech"


def is_offline() -> bool:
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in OFFLINE_ENVS
    )


def checkpoint_path(entry: PublishedCheckpoint) -> Path:
    """Where the release file is (or will be) cached."""
    return cache_root() / "checkpoints" / entry.file


def converted_path(name: str, entry: PublishedCheckpoint) -> Path:
    """Where its converted model directory is (or will be) cached."""
    return cache_root() / "converted" / f"{name}-{entry.sha256_prefix}"


def resolve_published(name: str, progress: bool | None = None) -> PublishedModel:
    """A published name -> its converted model directory, downloading and converting if needed.

    Once converted, no network is used. Offline (``CPCSPEECH_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``)
    a missing file is a ModelLoadError saying what to download and where to put it.
    """
    entry = PUBLISHED[name]
    url = base_url() + entry.file
    directory = converted_path(name, entry)
    target = checkpoint_path(entry)
    if (directory / "config.json").is_file() and (directory / "model.safetensors").is_file():
        return PublishedModel(name, directory, target, url, _read_sha(directory))
    check_writable_folder(target.parent, f"cache ${CACHE_ENV}")
    # One process at a time per file: two appending to the same .part would corrupt it.
    with FileLock(str(target) + ".lock"):
        if (directory / "model.safetensors").is_file():  # another process finished meanwhile
            return PublishedModel(name, directory, target, url, _read_sha(directory))
        return _fetch_and_convert(name, entry, url, target, directory, progress)


def _fetch_and_convert(
    name: str,
    entry: PublishedCheckpoint,
    url: str,
    target: Path,
    directory: Path,
    progress: bool | None,
) -> PublishedModel:
    if not target.is_file():
        if is_offline():
            raise ModelLoadError(
                f"published model {name!r} is not cached and offline mode is on; download {url} "
                f"to {target} (e.g. curl -L -o {target} {url}), then run again"
            )
        download(url, target, entry, progress=sys.stderr.isatty() if progress is None else progress)
    sha = verify(target, entry)
    directory.parent.mkdir(parents=True, exist_ok=True)
    convert(target, directory, overwrite=True)
    write_text_atomic(directory / "source.sha256", sha + "\n")
    return PublishedModel(name, directory, target, url, sha)


def _read_sha(directory: Path) -> str:
    path = directory / "source.sha256"
    return read_text(path, ModelLoadError).strip() if path.is_file() else "unknown"


def verify(path: Path, entry: PublishedCheckpoint) -> str:
    """Check the file's sha256 against the name's prefix (and the pinned digest, if any).

    A mismatching file is deleted, so the next run downloads it again.
    """
    sha = file_sha256(path)
    expected = entry.sha256 or entry.sha256_prefix
    if not sha.startswith(expected):
        path.unlink()
        raise ModelLoadError(
            f"{entry.file}: sha256 expected to start with {expected}, found {sha}; the file "
            "was deleted (a corrupt or substituted download). Run again to download it anew"
        )
    return sha


def download(url: str, target: Path, entry: PublishedCheckpoint, progress: bool = False) -> None:
    """Fetch ``url`` into ``target`` through ``target.part``, resuming a partial file (HTTP Range).

    The final name appears only once the whole file is there (then verified by the caller).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    fix = (
        f"run again to resume (what arrived is kept in {part}), or download {url} yourself and "
        f"put it at {target}"
    )
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)  # noqa: S310
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # our partial file is not a prefix of theirs: start over
            part.unlink()
            return download(url, target, entry, progress)
        raise ModelLoadError(f"download of {url} failed: HTTP {err.code}; {fix}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ModelLoadError(f"download of {url} failed ({reason}); {fix}") from err
    with response:
        if response.status == 206:
            mode, done = "ab", have
        else:  # the server ignored the range: take the whole file again
            mode, done = "wb", 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        bar = progress_bar(
            DownloadColumn(), TransferSpeedColumn(), enabled=progress, transient=False
        )
        try:
            with bar, open(part, mode) as f:
                task = bar.add_task(entry.file, total=total, completed=done)
                while block := response.read(_BLOCK):
                    f.write(block)
                    done += len(block)
                    bar.update(task, completed=done)
        except (OSError, http.client.HTTPException) as err:  # cut: keep what arrived
            raise ModelLoadError(
                f"download of {url} was cut after {done} bytes ({err}); {fix}"
            ) from err
    if total is not None and done != total:
        raise ModelLoadError(
            f"download of {url} was cut: expected {total} bytes, found {done}; {fix}"
        )
    os.replace(part, target)


def cache_state(name: str) -> str:
    """ "converted", "downloaded" (not yet converted) or "not cached", looking at the cache only."""
    entry = PUBLISHED[name]
    if (converted_path(name, entry) / "model.safetensors").is_file():
        return "converted"
    return "downloaded" if checkpoint_path(entry).is_file() else "not cached"
