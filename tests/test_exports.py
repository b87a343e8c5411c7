"""Exports read a small selection's scores from its own rows and a big one's from whole columns: the same bytes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sqlalchemy.orm import Session, sessionmaker

from backend import exports
from backend.space import SpaceStore
from tests.seeding import Seeded, seed_scored


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> Seeded:
    return seed_scored(session_factory, tmp_path, n=300, seed=4)


def export_both(factory: sessionmaker[Session], seeded: Seeded, ids: np.ndarray, fmt: str) -> tuple[bytes, bytes]:
    out = []
    for fraction in (0.0, 1.0):  # 0: never by rows (whole columns); 1: by rows whenever ids < the dataset
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(exports, "OWN_ROWS_FRACTION", fraction)
            store = SpaceStore(factory.kw["bind"])
            buf = io.BytesIO()
            exports.write_selection(factory, store, seeded.dataset_id, ids, fmt, buf)
            out.append(buf.getvalue())
            assert (len(store.cache) == 0) == (fraction == 1.0)  # the row path loads no column
    return out[0], out[1]


def test_a_small_exports_scores_from_its_rows_equal_the_columns(
    session_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    # Every 7th sample: errored ones (no clip value, a reason) among them.
    ids = np.asarray(sorted(seeded.sample_ids)[::7], dtype=np.int32)
    assert any(int(i) in seeded.errors for i in ids)
    columns, rows = export_both(session_factory, seeded, ids, "jsonl")
    assert columns == rows and columns.count(b"\n") == len(ids)
    columns, rows = export_both(session_factory, seeded, ids, "parquet")
    a, b = pq.read_table(io.BytesIO(columns)), pq.read_table(io.BytesIO(rows))
    assert a.equals(b) and a.num_rows == len(ids)
    clip = next(n for n in a.column_names if n.startswith("clip.sim"))
    values = dict(zip(a["sample_id"].to_pylist(), a[clip].to_pylist(), strict=True))
    assert all((values[i] is None) == (i in seeded.errors) for i in values)
    assert all(values[i] == seeded.clip[i] for i in values if i not in seeded.errors)


def test_the_export_of_no_ids_is_empty_either_way(session_factory: sessionmaker[Session], seeded: Seeded) -> None:
    columns, rows = export_both(session_factory, seeded, np.empty(0, dtype=np.int32), "jsonl")
    assert columns == rows == b""
