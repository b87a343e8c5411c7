"""Axis transforms (`AXIS@log`, `@type_z`, `@type_rank`): the numbers, on the space endpoint and in selections
(resolved to the ids numpy computes), chained, cached apart from the raw axis, and refused by name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.models import Run, Sample, Score
from backend.settings import Settings
from backend.space.transforms import TransformError, apply, split_spec
from tests.seeding import Seeded, seed_scored


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine)) as c:
        yield c


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> Seeded:
    return seed_scored(session_factory, tmp_path, n=400)


def task_types(factory: sessionmaker[Session], ds: int) -> dict[int, str]:
    with factory() as s:
        return {i: t for i, t in s.execute(select(Sample.id, Sample.task_type).where(Sample.dataset_id == ds))}


def space(client: TestClient, ds: int, **params: Any) -> dict[str, Any]:
    r = client.get(f"/api/datasets/{ds}/space", params={"format": "json", **params})
    assert r.status_code == 200, r.text
    return r.json()


def by_type(j: dict[str, Any], key: str = "x") -> dict[str, np.ndarray]:
    codes = np.array(j["task_type"])
    v = np.array(j[key], dtype=np.float64)
    return {name: v[codes == c] for c, name in enumerate(j["task_types"]) if (codes == c).any()}


# --- the transforms alone ----------------------------------------------------------------------------


def test_split_spec() -> None:
    assert split_spec("2:loss_sum@type_rank") == ("2:loss_sum", ("type_rank",))
    assert split_spec("loss@log@type_z") == ("loss", ("log", "type_z"))
    assert split_spec("clip") == ("clip", ())
    with pytest.raises(TransformError, match=r"unknown transform '@zscore'; use one of @log, @type_z, @type_rank"):
        split_spec("loss@zscore")


def test_numbers() -> None:
    v = np.array([4.0, -1.0, 0.0, 1.0, 2.0, 2.0, 9.0, 3.0])
    codes = np.array([0, 0, 1, 1, 1, 1, 2, 0], dtype=np.int8)
    keep, out = apply(("log",), v, codes)
    assert keep.tolist() == [True, False, False, True, True, True, True, True]  # log of <= 0: left out
    assert np.allclose(out, np.log([4, 1, 2, 2, 9, 3]))
    _, z = apply(("type_z",), v, codes)
    for c in (0, 1):
        assert abs(z[codes == c].mean()) < 1e-12 and z[codes == c].std() == pytest.approx(1.0)
    assert z[codes == 2].tolist() == [0.0]  # a type of one value (std 0) gets 0
    _, r = apply(("type_rank",), v, codes)
    assert r[codes == 1].tolist() == [0.125, 0.375, 0.75, 0.75]  # 0, 1, 2, 2 -> ties share rank 2.5
    assert r[codes == 0].tolist() == pytest.approx([5 / 6, 1 / 6, 0.5]) and r[codes == 2].tolist() == [0.5]
    keep, lz = apply(("log", "type_z"), v, codes)  # chained left to right, codes follow the kept values
    # kept: 4 (type 0), 1, 2, 2 (type 1), 9 (type 2), 3 (type 0)
    assert keep.sum() == 6 and lz[[0, 5]].tolist() == pytest.approx([1.0, -1.0]) and lz[4] == 0.0
    assert lz[1:4].tolist() == pytest.approx([-2 / np.sqrt(2), 1 / np.sqrt(2), 1 / np.sqrt(2)])


# --- the space endpoint ------------------------------------------------------------------------------


def test_type_z_and_type_rank_on_the_space_endpoint(
    client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    ds, run = seeded.dataset_id, seeded.loss_run
    y = f"{run}:tokens"  # the same run: every sample with a loss is a point, none dropped by the other axis
    z = space(client, ds, x=f"{run}:loss_sum@type_z", y=y)
    rank = space(client, ds, x=f"{run}:loss_sum@type_rank", y=y)
    raw = space(client, ds, x=f"{run}:loss_sum", y=y)
    assert z["ids"] == rank["ids"] == raw["ids"] == sorted(seeded.loss)
    assert z["axes"]["x"]["transforms"] == ["type_z"] and z["axes"]["x"]["axis"] == f"{run}:loss_sum@type_z"
    types = by_type(z)
    assert set(types) == {"conversation", "complex_reasoning", "detail_description", "referring_qa"}
    for name, v in types.items():
        assert abs(v.mean()) < 1e-6 and v.std() == pytest.approx(1.0, abs=1e-5), name
    for name, v in by_type(rank).items():
        n = len(v)  # gamma-distributed losses: no ties, so the ranks are exactly (k + 0.5) / n
        assert np.allclose(np.sort(v), (np.arange(n) + 0.5) / n, atol=1e-6), name
    # against numpy, sample by sample
    tt = task_types(session_factory, ds)
    ids = np.array(raw["ids"])
    loss = np.array([seeded.loss[i] for i in ids])
    for name in types:
        m = np.array([tt[i] == name for i in ids])
        want = (loss[m] - loss[m].mean()) / loss[m].std()
        assert np.allclose(np.array(z["x"])[m], want, atol=1e-5)
    # summary and density take the transformed values too
    s = client.get(f"/api/datasets/{ds}/summary", params={"x": f"{run}:loss_sum@type_rank", "y": y}).json()
    assert s["by_task_type"]["referring_qa"]["x"]["mean"] == pytest.approx(0.5)
    d = client.get(f"/api/datasets/{ds}/density", params={"x": f"{run}:loss_sum@type_rank", "y": y}).json()
    assert d["x_edges"][0] > 0 and d["x_edges"][-1] < 1


def test_log_leaves_non_positive_values_out_and_is_cached_apart(
    client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    ds = seeded.dataset_id
    gain_run, gain = add_gain_run(session_factory, seeded)
    assert len(space(client, ds, x=f"{seeded.loss_run}:loss_sum", y="clip")["ids"]) > 0  # raw column cached first
    j = space(client, ds, x=f"{seeded.loss_run}:loss_sum@log", y=f"{gain_run}:image_gain@log")
    positive = {i for i, g in gain.items() if g > 0}
    assert set(j["ids"]) == positive & set(seeded.loss)
    assert np.allclose(j["x"], [np.log(seeded.loss[i]) for i in j["ids"]], rtol=1e-6)
    assert np.allclose(j["y"], [np.log(gain[i]) for i in j["ids"]], rtol=1e-5)
    raw = space(client, ds, x=f"{seeded.loss_run}:loss_sum", y=f"{gain_run}:image_gain")
    assert set(raw["ids"]) == set(gain)  # the raw axis keeps the negative gains (and the cache kept them apart)
    assert np.allclose(raw["x"], [seeded.loss[i] for i in raw["ids"]], rtol=1e-6)


def add_gain_run(factory: sessionmaker[Session], seeded: Seeded) -> tuple[int, dict[int, float]]:
    """An mllm_loss run with image_gain on: the text-only samples have no image_gain (their row comes first), and
    the gains have both signs."""
    rng = np.random.default_rng(5)
    with factory() as s:
        run = Run(dataset_id=seeded.dataset_id, kind="mllm_loss", params={"model": "tiny", "image_gain": True},
                  scorer_key="k-gain", status="done", total=len(seeded.sample_ids), done=len(seeded.sample_ids))
        s.add(run)
        s.flush()
        gain: dict[int, float] = {}
        rows = []
        for k, sid in enumerate(seeded.sample_ids):
            m = {"loss_sum": 2.0, "loss_mean": 1.0, "tokens": 2.0, "perplexity": 2.7}
            if k % 17:  # the seeded dataset's text-only samples are every 17th, the first among them
                gain[sid] = float(rng.normal(0.1, 0.3))
                m |= {"loss_no_image": 1.0 + gain[sid], "image_gain": gain[sid]}
            rows.append({"run_id": run.id, "sample_id": sid, "metrics": m, "error": None})
        s.execute(insert(Score), rows)
        s.commit()
        return run.id, gain


def test_an_axis_on_a_metric_the_first_row_lacks(
    client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    gain_run, gain = add_gain_run(session_factory, seeded)
    listed = {a["axis"] for a in client.get(f"/api/datasets/{seeded.dataset_id}/axes").json()}
    assert {f"{gain_run}:image_gain", f"{gain_run}:loss_no_image"} <= listed
    j = space(client, seeded.dataset_id, x=f"{gain_run}:image_gain@type_z", y=f"{gain_run}:loss_sum")
    assert set(j["ids"]) == set(gain)  # text-only samples: no value, no point
    for v in by_type(j).values():
        assert abs(v.mean()) < 1e-6


# --- selections ----------------------------------------------------------------------------------------


def selected(client: TestClient, ds: int, body: dict[str, Any]) -> set[int]:
    r = client.post(f"/api/datasets/{ds}/selections", json=body)
    assert r.status_code == 201, r.text
    page = client.get(f"/api/selections/{r.json()['id']}/samples", params={"limit": 1000}).json()
    assert page["total"] == r.json()["count"]
    return {s["id"] for s in page["items"]}


def numpy_type_rank(values: dict[int, float], types: dict[int, str]) -> dict[int, float]:
    out: dict[int, float] = {}
    for name in set(types.values()):
        ids = [i for i in values if types[i] == name]
        order = np.argsort([values[i] for i in ids])
        for rank, k in enumerate(order):
            out[ids[k]] = (rank + 0.5) / len(ids)
    return out


def test_selections_on_transformed_axes_resolve_what_numpy_computes(
    client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    ds = seeded.dataset_id
    types = task_types(session_factory, ds)
    rank = numpy_type_rank(seeded.loss, types)
    on_plane = set(seeded.clip) - seeded.errors  # the plane is loss x clip; errored samples are dropped
    x = f"{seeded.loss_run}:loss_sum@type_rank"
    top = selected(client, ds, {"x": x, "y": "clip", "region": {"type": "box", "x": [0.75, None]}})
    assert top == {i for i in on_plane if rank[i] >= 0.75} and len(top) > 40
    # the same box on the raw axis picks by length, mostly one task type; per type it spreads over all four
    assert {types[i] for i in top} == {"conversation", "complex_reasoning", "detail_description", "referring_qa"}
    log_clip = {i: np.log(v) for i, v in seeded.clip.items()}
    cut = float(np.median(list(log_clip.values())))
    both = selected(
        client,
        ds,
        {"x": x, "y": "clip@log", "region": {"type": "box", "x": [None, 0.5], "y": [cut, None]},
         "ranges": {f"{seeded.loss_run}:loss_sum@log": [1.0, None]}},
    )
    want = {i for i in on_plane if rank[i] <= 0.5 and log_clip[i] >= cut and np.log(seeded.loss[i]) >= 1.0}
    assert both == want and both
    # selection records name the transformed axes
    recipes = [s["recipe"] for s in client.get(f"/api/datasets/{ds}/selections").json()]
    assert any(r["y"] == "clip@log" and r["resolved_axes"]["x"]["axis"] == x for r in recipes)


# --- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["space", "density", "summary"])
def test_an_unknown_transform_is_a_422_that_lists_the_known_ones(client: TestClient, seeded: Seeded, path: str) -> None:
    r = client.get(f"/api/datasets/{seeded.dataset_id}/{path}", params={"x": "loss@zscore", "y": "clip"})
    assert r.status_code == 422
    assert r.json()["detail"] == "axis 'loss@zscore': unknown transform '@zscore'; use one of @log, @type_z, @type_rank"


def test_an_unknown_transform_in_a_selection_is_refused(client: TestClient, seeded: Seeded) -> None:
    ds = seeded.dataset_id
    r = client.post(f"/api/datasets/{ds}/selections", json={"x": "loss", "y": "clip@rank", "region": {"type": "box", "x": [0, None]}})
    assert r.status_code == 422 and "unknown transform '@rank'" in r.json()["detail"]
    r = client.post(
        f"/api/datasets/{ds}/selections",
        json={"region": {"type": "all"}, "ranges": {"loss@": [1, None]}},
    )
    assert r.status_code == 422 and "unknown transform '@'" in r.json()["detail"]
    assert client.get(f"/api/datasets/{ds}/selections").json() == []  # nothing saved
