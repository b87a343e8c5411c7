"""The space store's LRU: bounded by count and by bytes, the newest entry always kept."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from backend.space.cache import LRU, nbytes
from backend.space.columns import Column, SpaceStore


def mb(n: int) -> np.ndarray:
    return np.zeros(n * 2**20, dtype=np.uint8)


def test_entries_past_the_byte_budget_go_oldest_first() -> None:
    cache = LRU(64, max_bytes=10 * 2**20)
    for key in "abcd":
        cache.get_or_make(key, lambda: mb(3))
    assert len(cache) == 3 and cache.bytes == 9 * 2**20  # "a" went when "d" made 12 MB
    made: list[str] = []
    cache.get_or_make("b", lambda: made.append("b") or mb(3))  # type: ignore[func-returns-value]
    assert made == []  # still there, and now the most recent
    cache.get_or_make("e", lambda: mb(3))
    cache.get_or_make("a", lambda: made.append("a") or mb(1))  # type: ignore[func-returns-value]
    assert made == ["a"]  # "a" had to be made again
    cache.get_or_make("b", lambda: made.append("b2") or mb(1))  # type: ignore[func-returns-value]
    assert made == ["a"] and cache.bytes <= 10 * 2**20


def test_the_newest_entry_stays_even_when_it_alone_is_over_budget() -> None:
    cache = LRU(64, max_bytes=2**20)
    cache.get_or_make("small", lambda: mb(0))
    big = cache.get_or_make("big", lambda: mb(4))
    assert len(cache) == 1 and cache.get_or_make("big", lambda: pytest.fail("dropped")) is big


def test_the_count_still_bounds_and_drop_gives_bytes_back() -> None:
    cache = LRU(2, max_bytes=None)
    for key in range(5):
        cache.get_or_make(key, lambda: mb(1))
    assert len(cache) == 2 and cache.bytes == 0  # no budget: sizes are not even measured
    sized = LRU(8, max_bytes=2**30)
    for key in range(4):
        sized.get_or_make(("ds", key), lambda: mb(1))
    assert sized.drop(lambda k: isinstance(k, tuple) and k[1] % 2 == 0) == 2 and sized.bytes == 2 * 2**20 and len(sized) == 2


def test_concurrent_makers_keep_the_count_of_bytes_exact() -> None:
    cache = LRU(1000, max_bytes=2**40)

    def fill(offset: int) -> None:
        for key in range(200):
            cache.get_or_make(key % 50 + offset, lambda: np.zeros(1000, dtype=np.uint8))

    threads = [threading.Thread(target=fill, args=(o,)) for o in (0, 0, 25, 25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 75 and cache.bytes == 75 * 1000 and cache.made == 75  # each key made once


def test_threads_asking_for_a_key_being_made_wait_for_it() -> None:
    cache = LRU(8)
    calls: list[int] = []
    started = threading.Event()

    def slow() -> np.ndarray:
        calls.append(1)
        started.set()
        time.sleep(0.3)
        return np.arange(3)

    got: list[np.ndarray] = []
    first = threading.Thread(target=lambda: got.append(cache.get_or_make("plane", slow)))
    first.start()
    started.wait()
    others = [threading.Thread(target=lambda: got.append(cache.get_or_make("plane", slow))) for _ in range(3)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join()
    assert len(calls) == 1 and len(got) == 4 and all(g is got[0] for g in got)


def test_a_maker_that_fails_leaves_the_key_to_the_next_asker() -> None:
    cache = LRU(8)
    started, release = threading.Event(), threading.Event()

    def failing() -> np.ndarray:
        started.set()
        release.wait()
        raise RuntimeError("database went away")

    errors: list[Exception] = []

    def ask_failing() -> None:
        try:
            cache.get_or_make("k", failing)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=ask_failing)
    t.start()
    started.wait()
    waiter_got: list[np.ndarray] = []
    waiter = threading.Thread(target=lambda: waiter_got.append(cache.get_or_make("k", lambda: np.ones(2))))
    waiter.start()
    release.set()
    t.join()
    waiter.join()
    assert len(errors) == 1 and waiter_got[0].tolist() == [1.0, 1.0] and len(cache) == 1


@dataclass(frozen=True)
class Pair:
    a: np.ndarray
    b: list[str]


def test_nbytes_counts_arrays_exactly_and_containers_by_their_parts() -> None:
    ids, values = np.arange(1000, dtype=np.int32), np.zeros(1000)
    assert nbytes(Column(ids, values)) == 4000 + 8000
    assert nbytes(b"x" * 5000) == 5000
    assert 12_000 < nbytes((ids, values, ["t"] * 3)) < 13_000
    words = ["an error reason of about forty characters"] * 10_000
    assert 10_000 * 80 < nbytes(Pair(np.zeros(10, np.uint8), words)) < 10_000 * 120  # pointer + string each


def test_the_api_store_takes_its_budget_from_settings(tmp_path: Path) -> None:
    from backend.api.app import create_app
    from backend.settings import Settings

    app = create_app(Settings(data_dir=tmp_path, space_cache_mb=40))
    store: SpaceStore = app.state.space
    assert store.cache.max_bytes == 40 * 2**20
