"""Reading ahead: audio decoded on a reader thread while the model works on the previous file.

Decoding and resampling (soundfile, soxr) release the GIL, so a thread is enough to hide them.
"""

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from cpcspeech.errors import AudioError

READ_AHEAD = 2
"""Files decoded ahead of the model: enough to hide decoding, few enough to bound memory."""

Item = TypeVar("Item")


@dataclass(frozen=True)
class _ReaderCrash:
    """An unexpected exception on the reader thread, re-raised on the caller's thread."""

    error: BaseException


def read_ahead(
    items: Sequence[Item | None],
    load: Callable[[Item], np.ndarray],
    depth: int = READ_AHEAD,
) -> Iterator[np.ndarray | AudioError | None]:
    """Yield ``load(item)`` for each item in order, decoded on a reader thread.

    Decoding of the next files overlaps the caller's work on the current one; the bounded queue
    keeps at most ``depth`` decoded files waiting. A bad file's AudioError is yielded, not
    raised, so the caller decides whether to skip it; a ``None`` item yields ``None``; any other
    exception is re-raised on the caller's thread. Close the generator (``contextlib.closing``)
    to stop and join the thread early.

    Args:
        items: what ``load`` reads (e.g. :class:`cpcspeech.io.sources.AudioSource`), or None.
        load: item -> wav (N,) float32; runs on the reader thread.
        depth: decoded files waiting at most.

    Yields:
        wav: (N,) float32, or the item's AudioError, or None.
    """
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def read() -> None:
        for source in items:
            try:
                item = None if source is None else load(source)
            except AudioError as err:
                item = err
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                item = _ReaderCrash(err)
            while not stop.is_set():
                try:
                    waiting.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set() or isinstance(item, _ReaderCrash):
                return

    thread = threading.Thread(target=read, name="cpcspeech-reader", daemon=True)
    thread.start()
    try:
        for _ in items:
            item = waiting.get()
            if isinstance(item, _ReaderCrash):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
