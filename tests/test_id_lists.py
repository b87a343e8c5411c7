"""Saved id lists: plain int32 below PACK_FROM ids, packed above, read back exactly either way."""

from __future__ import annotations

import numpy as np
import pytest

from backend.id_lists import PACK_FROM, ids_from_bytes, ids_to_bytes


@pytest.mark.parametrize(
    "ids",
    [
        np.empty(0, np.int32),
        np.array([7], np.int32),
        np.arange(1, PACK_FROM, dtype=np.int32),  # one short of packing: plain
        np.arange(1, PACK_FROM + 1, dtype=np.int32),
        np.sort(np.random.default_rng(0).choice(10_000_000, 300_000, replace=False)).astype(np.int32),
        np.random.default_rng(1).integers(-(2**31), 2**31 - 1, 50_000).astype(np.int32),  # unsorted, extremes
        np.array([2**31 - 1, -(2**31)] * 3000, np.int32),  # gaps that wrap around int32
    ],
)
def test_a_list_reads_back_exactly(ids: np.ndarray) -> None:
    blob = ids_to_bytes(ids)
    got = ids_from_bytes(blob)
    assert got.dtype == np.int32 and np.array_equal(got, ids)
    assert (len(blob) % 4 == 2) == (ids.size >= PACK_FROM)  # a plain list's length is 0 mod 4, a packed one's 2


def test_a_big_sorted_list_packs_small_and_plain_lists_of_old_rows_still_read() -> None:
    ids = np.sort(np.random.default_rng(2).choice(10_000_000, 4_500_000, replace=False)).astype(np.int32)
    assert len(ids_to_bytes(ids)) < ids.nbytes / 4  # 18 MB of lasso ids in a few MB
    old_row = ids.astype("<i4").tobytes()  # what every selection saved before packing holds
    assert np.array_equal(ids_from_bytes(old_row), ids)
    # A plain list that happens to start with the packed header's bytes is still plain: its length is 0 mod 4.
    tricky = np.frombuffer(b"QSZ1" + b"\x00" * 12, dtype="<i4")
    assert np.array_equal(ids_from_bytes(tricky.tobytes()), tricky)
