"""Where the code runs: device choice, torchrun's environment, CPU flags, heap trimming, progress
bars and one-line error text. One home for what extraction, training and evaluation all need."""

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from cpcspeech.errors import ConfigError


def one_line(err: BaseException | str, limit: int = 200) -> str:
    """An exception's text on one line, at most ``limit`` characters (for error messages)."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----- torchrun -----
@dataclass(frozen=True)
class DistributedEnv:
    """torchrun's RANK / WORLD_SIZE / LOCAL_RANK; (0, 1, 0) outside torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def launched(self) -> bool:
        return self.world_size > 1


def distributed_env(env: Mapping[str, str] | None = None) -> DistributedEnv:
    """torchrun's environment, checked: RANK and WORLD_SIZE both set (or neither), integers,
    0 <= RANK < WORLD_SIZE. LOCAL_RANK defaults to 0."""
    env = os.environ if env is None else env
    present = [k for k in ("RANK", "WORLD_SIZE") if k in env]
    if not present:
        return DistributedEnv(local_rank=_env_int(env, "LOCAL_RANK", "0"))
    if len(present) == 1:
        raise ConfigError(
            f"torchrun environment: expected RANK and WORLD_SIZE together, found only {present[0]}"
        )
    rank, world = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(
            f"torchrun environment: expected 0 <= RANK < WORLD_SIZE, found RANK={rank}, "
            f"WORLD_SIZE={world}"
        )
    return DistributedEnv(rank, world, _env_int(env, "LOCAL_RANK", "0"))


def _env_int(env: Mapping[str, str], key: str, default: str | None = None) -> int:
    raw = env.get(key, default)
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected an integer, found {raw!r}") from None


# ----- devices -----
def resolve_device(name: str, option: str = "device") -> torch.device:
    """``"auto"`` -> cuda:LOCAL_RANK when CUDA is available (torchrun gives each process its GPU),
    else cpu; ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` are checked. ``option`` names the setting in
    errors (``--device``, ``train.device``)."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", distributed_env().local_rank)
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{option}: expected auto, cpu, cuda or cuda:N, found {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{option}: expected auto, cpu, cuda or cuda:N, found {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option} {name!r}: expected an available CUDA GPU, found none")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", distributed_env().local_rank)
    return device


# ----- CPU -----
def cpu_lacks_bf16(cpuinfo: str | None = None) -> bool:
    """True when /proc/cpuinfo (or ``cpuinfo``) lists CPU flags without a bf16 instruction set
    (avx512_bf16 or amx_bf16). False where that cannot be read (not Linux): no false alarms."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return bool(flags) and not flags & {"avx512_bf16", "amx_bf16"}


def _load_malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_malloc_trim() if sys.platform.startswith("linux") else None


def trim_heap() -> None:
    """Hand the heap pages freed by the last file back to the OS (glibc ``malloc_trim(0)``).

    Files of different lengths leave differently sized free blocks in glibc's heaps (the main
    one and the reader thread's), which glibc keeps, so without this the peak RSS of a folder of
    short files grew with the number of files (README, Speed). A no-op without glibc.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


# ----- progress -----
def progress_bar(
    *columns: object,
    enabled: bool = True,
    transient: bool = True,
    console: object | None = None,
):
    """A rich progress bar on stderr: the task's description, a bar, ``columns`` (rich columns or
    format strings for ``TextColumn``), elapsed and remaining time. With no ``columns`` it shows
    ``done/total``. ``enabled=False`` gives rich's own no-op bar (``disable``)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    middle = [TextColumn(c) if isinstance(c, str) else c for c in columns]
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        *(middle or [MofNCompleteColumn()]),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console if console is not None else Console(stderr=True),
        disable=not enabled,
        transient=transient,
    )
