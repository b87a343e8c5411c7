"""The space store's cache: least recently used values, bounded by count and by the bytes they hold.

At 10M points one score column is 120 MB and one plane's encoded payload 100 MB, so a count alone does not bound
memory (64 columns would be 7.7 GB): entries past the byte budget are dropped oldest first and loaded again (from
the column files, ~0.2 s per column at 10M) when asked for.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


class LRU:
    """A thread-safe LRU of computed values: at most `size` of them, holding at most `max_bytes` (None: any)."""

    def __init__(self, size: int, max_bytes: int | None = None) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._making: dict[Hashable, threading.Event] = {}  # keys some thread is making now
        self.bytes = 0  # what the entries hold, as nbytes() counts it
        self.made = 0  # values made (a key asked for by several threads at once is made once)

    def get_or_make(self, key: Hashable, make: Callable[[], T]) -> T:
        while True:
            with self._lock:
                if key in self._data:
                    self._data.move_to_end(key)
                    return self._data[key][0]
                making = self._making.get(key)
                if making is None:
                    self._making[key] = threading.Event()
                    break
            # The explore page asks for the plane, its sample, grid, summary and gallery at once: after a restart
            # each would otherwise read and join the same 10M-point columns. Wait for the one making it, then look
            # again (a maker that failed leaves no value, and the next waiter makes it).
            making.wait()
        try:
            value = make()  # outside the lock: loading 1M rows must not block other keys
        except BaseException:
            with self._lock:
                self._making.pop(key).set()
            raise
        size = nbytes(value) if self.max_bytes is not None else 0
        with self._lock:
            self._making.pop(key).set()
            self.made += 1
            old = self._data.pop(key, None)
            self.bytes += size - (old[1] if old else 0)
            self._data[key] = (value, size)
            # The newest entry stays even when it alone is over budget: it is what the caller is about to use.
            while len(self._data) > 1 and (
                len(self._data) > self.size or (self.max_bytes is not None and self.bytes > self.max_bytes)
            ):
                _, (_, dropped) = self._data.popitem(last=False)
                self.bytes -= dropped
        return value

    def drop(self, match: Callable[[Hashable], bool]) -> int:
        with self._lock:
            doomed = [k for k in self._data if match(k)]
            for k in doomed:
                self.bytes -= self._data.pop(k)[1]
            return len(doomed)

    def __len__(self) -> int:
        return len(self._data)


def nbytes(value: Any) -> int:
    """About the memory `value` holds: arrays and byte strings exactly, containers and dataclasses by their parts.

    An array two entries share (a plane built on its columns) counts in each: the budget errs on the safe side."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, list | tuple):
        if value and not isinstance(value[0], np.ndarray | bytes | list | tuple | dict) and len(value) > 64:
            # A long list of scalars or strings (error reasons, metadata values): its pointers and a sample's sizes.
            head = value[:64]
            return sys.getsizeof(value) + len(value) * sum(sys.getsizeof(v) for v in head) // len(head)
        return sys.getsizeof(value) + sum(nbytes(v) for v in value)
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(nbytes(k) + nbytes(v) for k, v in value.items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    return sys.getsizeof(value)
