"""A view of the plane (x_range / y_range) and its density-aware sample (max_points): /space and /density, and
backend/space/sampling.py itself."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.settings import Settings
from backend.space import Space, arrow_bytes
from backend.space.sampling import SAMPLE_GRID, _cap, _cells, parse_range, sample, view
from tests.seeding import Seeded, seed_scored


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine)) as c:
        yield c


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> Seeded:
    return seed_scored(session_factory, tmp_path, n=400)


def points(seeded: Seeded) -> dict[int, tuple[float, float]]:
    """The plane's truth: (loss_sum, clip) of every sample that has both."""
    return {i: (seeded.loss[i], seeded.clip[i]) for i in sorted(set(seeded.loss) & set(seeded.clip))}


def get_arrow(client: TestClient, ds: int, **params: Any) -> tuple[pa.Table, dict[str, str]]:
    r = client.get(f"/api/datasets/{ds}/space", params={"x": "loss", "y": "clip", **params})
    assert r.status_code == 200, r.text
    return pa.ipc.open_stream(io.BytesIO(r.content)).read_all(), dict(r.headers)


def test_max_points_sends_at_most_that_many_and_says_how_many_are_in_view(client: TestClient, seeded: Seeded) -> None:
    truth = points(seeded)
    table, headers = get_arrow(client, seeded.dataset_id, max_points=50)
    assert table.num_rows == 50
    assert headers["x-total-in-view"] == str(len(truth)) and headers["x-sampled"] == "true"
    meta = {k.decode(): json.loads(v) for k, v in table.schema.metadata.items()}
    assert meta["total_in_view"] == len(truth) and meta["sampled"] is True and meta["x_range"] is None
    ids = table.column("id").to_pylist()
    assert ids == sorted(ids) and set(ids) <= set(truth)
    xs = table.column("x").to_numpy()
    assert np.allclose(xs, [truth[i][0] for i in ids], rtol=1e-6)  # each point keeps its own values

    # Deterministic for a seed; another seed, another sample.
    again, _ = get_arrow(client, seeded.dataset_id, max_points=50)
    assert again.column("id").to_pylist() == ids
    other, _ = get_arrow(client, seeded.dataset_id, max_points=50, seed=7)
    assert other.num_rows == 50 and other.column("id").to_pylist() != ids

    # A budget above the view sends everything, unsampled; the whole plane says its total too.
    every, headers = get_arrow(client, seeded.dataset_id, max_points=100_000)
    assert every.column("id").to_pylist() == list(truth) and headers["x-sampled"] == "false"
    _, headers = get_arrow(client, seeded.dataset_id)
    assert headers["x-total-in-view"] == str(len(truth))


def test_ranges_keep_the_view_and_count_it(client: TestClient, seeded: Seeded) -> None:
    truth = points(seeded)
    loss = np.array([v[0] for v in truth.values()])
    clip = np.array([v[1] for v in truth.values()])
    xr = (float(np.quantile(loss, 0.2)) + 1e-9, float(np.quantile(loss, 0.8)) + 1e-9)
    yr = (float(np.quantile(clip, 0.1)) + 1e-9, float(np.quantile(clip, 0.7)) + 1e-9)
    inside = [i for i, (lx, cy) in truth.items() if xr[0] <= lx <= xr[1] and yr[0] <= cy <= yr[1]]
    assert 50 < len(inside) < len(truth) / 2

    ranges = {"x_range": f"{xr[0]!r},{xr[1]!r}", "y_range": f"{yr[0]!r},{yr[1]!r}"}
    table, headers = get_arrow(client, seeded.dataset_id, **ranges)
    assert table.column("id").to_pylist() == inside and headers["x-total-in-view"] == str(len(inside))

    table, headers = get_arrow(client, seeded.dataset_id, max_points=30, **ranges)
    assert table.num_rows == 30 and set(table.column("id").to_pylist()) <= set(inside)
    assert headers["x-total-in-view"] == str(len(inside)) and headers["x-sampled"] == "true"

    # One axis only: the other is unbounded.
    only_x = [i for i, (lx, _) in truth.items() if xr[0] <= lx <= xr[1]]
    _, headers = get_arrow(client, seeded.dataset_id, x_range=ranges["x_range"])
    assert headers["x-total-in-view"] == str(len(only_x))

    # JSON says the same.
    r = client.get(f"/api/datasets/{seeded.dataset_id}/space", params={"format": "json", "max_points": 30, **ranges})
    body = r.json()
    assert len(body["ids"]) == 30 and body["total_in_view"] == len(inside) and body["sampled"] is True
    assert body["x_range"] == list(xr) and set(body["ids"]) <= set(inside)

    # The density of the view: its own grid over the ranges, counting exactly the points in view.
    d = client.get(
        f"/api/datasets/{seeded.dataset_id}/density", params={"x": "loss", "y": "clip", "bins": 8, **ranges}
    ).json()
    assert d["total"] == len(inside) == int(np.sum(d["counts"]))
    assert d["x_edges"][0] == pytest.approx(xr[0]) and d["x_edges"][-1] == pytest.approx(xr[1])
    assert d["y_edges"][0] == pytest.approx(yr[0]) and d["y_edges"][-1] == pytest.approx(yr[1])
    whole = client.get(f"/api/datasets/{seeded.dataset_id}/density", params={"bins": 8}).json()
    assert whole["total"] == len(truth) and whole["x_edges"][0] == pytest.approx(loss.min())


def test_sampling_composes_with_task_types_and_colours(client: TestClient, seeded: Seeded) -> None:
    full, _ = get_arrow(client, seeded.dataset_id)
    names = json.loads(full.schema.metadata[b"task_types"])
    code = names.index("conversation")
    of_type = int(np.sum(full.column("task_type").to_numpy() == code))
    table, headers = get_arrow(
        client, seeded.dataset_id, max_points=20, task_type="conversation", color=f"{seeded.loss_run}:loss_sum"
    )
    assert table.num_rows == 20 and headers["x-total-in-view"] == str(of_type)
    assert set(table.column("task_type").to_pylist()) == {code}
    # The colour column is aligned with the sampled points: colouring by the x axis gives x again.
    assert np.array_equal(table.column("color").to_numpy(), table.column("x").to_numpy())


@pytest.mark.parametrize("bad", ["1", "a,b", "2,1", "1,1", "nan,1", "0,inf", "1,2,3"])
def test_bad_ranges_are_422(client: TestClient, seeded: Seeded, bad: str) -> None:
    for route in ("space", "density"):
        r = client.get(f"/api/datasets/{seeded.dataset_id}/{route}", params={"x_range": bad})
        assert r.status_code == 422 and "x_range" in r.json()["detail"]
    r = client.get(f"/api/datasets/{seeded.dataset_id}/space", params={"max_points": 0})
    assert r.status_code == 422


# ----------------------------------------------------------------------------------------------
# The sample itself
# ----------------------------------------------------------------------------------------------


def blob_and_outliers(n: int, n_out: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate((rng.normal(0, 0.05, n), rng.uniform(-10, 10, n_out)))
    y = np.concatenate((rng.normal(0, 0.05, n), rng.uniform(-10, 10, n_out)))
    return np.arange(1, n + n_out + 1, dtype=np.int32), x, y


def test_sparse_points_are_all_kept_and_dense_ones_thinned() -> None:
    ids, x, y = blob_and_outliers(200_000, 300)
    got = sample(ids, x, y, 2_000)
    assert len(got) == 2_000 and np.all(np.diff(got) > 0)
    assert set(range(200_000, 200_300)) <= set(got.tolist())  # every outlier: their cells are sparse
    assert np.array_equal(got, sample(ids, x, y, 2_000))  # deterministic
    # Cells with more points than the cap keep about the cap each; the others keep every point.
    cell = _cells(x, None) * SAMPLE_GRID + _cells(y, None)
    counts = np.bincount(cell, minlength=SAMPLE_GRID * SAMPLE_GRID)
    kept = np.bincount(cell[got], minlength=SAMPLE_GRID * SAMPLE_GRID)
    cap = _cap(counts[counts > 0], 2_000)
    dense = counts > cap
    assert 2 <= dense.sum() < 40 and 20 < cap < 1_000
    assert np.all(np.abs(kept[dense] - cap) <= 0.25 * cap)
    assert np.array_equal(kept[~dense], counts[~dense])


def test_a_point_kept_in_a_view_stays_kept_when_zooming_in() -> None:
    # The keys are per sample id: a zoomed view's cap only grows, so what the wide view kept inside it stays.
    ids, x, y = blob_and_outliers(100_000, 0, seed=3)
    space = Space(ids=ids, x=x, y=y, task_codes=np.zeros(len(ids), np.int8), task_types=["t"])
    wide = view(space, None, None, None, 5_000)
    zoom = view(space, None, (-0.05, 0.05), (-0.05, 0.05), 5_000)
    assert wide.mask is not None and zoom.mask is not None and wide.sampled and zoom.sampled
    in_zoom = (np.abs(x) <= 0.05) & (np.abs(y) <= 0.05)
    assert zoom.total == int(in_zoom.sum()) and not np.any(zoom.mask & ~in_zoom)
    kept_before = wide.mask & in_zoom
    assert np.mean(zoom.mask[kept_before]) > 0.9


def test_a_sample_of_ten_million_is_small() -> None:
    # The payload of a 200k sample: under 5 MB even uncompressed (13 bytes a point).
    n = 2_000_000  # ten million's arithmetic is the same; 2M keeps the test quick
    rng = np.random.default_rng(1)
    space = Space(
        ids=np.arange(1, n + 1, dtype=np.int32),
        x=rng.gamma(2, 5, n),
        y=rng.normal(0.3, 0.04, n),
        task_codes=rng.integers(0, 4, n).astype(np.int8),
        task_types=["a", "b", "c", "d"],
    )
    shown = view(space, None, None, None, 200_000)
    assert shown.total == n and shown.sent == 200_000
    assert len(arrow_bytes(space, shown.mask, compression=None)) < 5_000_000


def test_parse_range() -> None:
    assert parse_range("x_range", None) is None and parse_range("x_range", " ") is None
    assert parse_range("x_range", "-1.5,2e3") == (-1.5, 2000.0)
