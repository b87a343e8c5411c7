"""Columns read from the database a block at a time equal the rows, whatever the block size."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backend import db
from backend.models import Sample
from backend.queue.columns import run_columns
from backend.space import SpaceStore, resolve_axis
from tests.seeding import Seeded, seed_scored


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> Seeded:
    return seed_scored(session_factory, tmp_path, n=250, seed=3)


@pytest.mark.parametrize("block", [1, 7, 250, 100_000])
def test_columns_read_in_blocks_equal_the_rows(
    session_factory: sessionmaker[Session], seeded: Seeded, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "BLOCK_ROWS", block)
    with session_factory() as s:
        store = SpaceStore(s.get_bind())  # type: ignore[arg-type]
        ds = store.dataset_columns(s, seeded.dataset_id)
        rows = s.execute(select(Sample.id, Sample.task_type).where(Sample.dataset_id == seeded.dataset_id)).all()
        assert ds.ids.tolist() == sorted(seeded.sample_ids)
        assert [ds.task_types[c] for c in ds.task_codes] == [t for _, t in sorted(rows)]
        assert ds.task_types == sorted({t for _, t in rows})
        clip = store.column(s, resolve_axis(s, seeded.dataset_id, "clip"))
        assert clip.ids.tolist() == sorted(seeded.clip)  # errored samples have no value
        assert np.array_equal(clip.values, [seeded.clip[i] for i in sorted(seeded.clip)])
        loss = store.column(s, resolve_axis(s, seeded.dataset_id, "loss"))
        assert np.allclose(loss.values, [seeded.loss[i] for i in sorted(seeded.loss)], rtol=0, atol=1e-12)
        # The queue's one pass over a run's rows (every metric at once), in the same blocks.
        kept = run_columns(s, seeded.loss_run)["loss_sum"]
        assert kept[0].tolist() == loss.ids.tolist() and kept[1].tolist() == loss.values.tolist()


def test_a_dataset_with_no_samples_and_a_run_with_no_values_read_as_empty(
    session_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    with session_factory() as s:
        store = SpaceStore(s.get_bind())  # type: ignore[arg-type]
        blocks = list(db.raw_blocks(s, "SELECT id FROM samples WHERE dataset_id = {p}", (-1,)))
        assert blocks == []
        clip = resolve_axis(s, seeded.dataset_id, "clip")
        col = store._load_column(s, replace(clip, metric="no_such_metric"))
        assert col.ids.size == 0 and col.values.size == 0 and col.ids.dtype == np.int32
