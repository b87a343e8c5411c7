"""`GET /api/selections/compare?ids=a,b[,c]`: counts, task mix, metric quartiles and overlap vs plain Python."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from backend.models import Run, Sample
from tests.seeding import Seeded, seed_scored
from tests.selection_helpers import client, ids_of, random_recipe, save, seeded

__all__ = ["client", "seeded"]  # fixtures


def test_compare_agrees_with_python(client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session]) -> None:
    ds = seeded.dataset_id
    with session_factory() as session:
        task_of = {s.id: s.task_type for s in session.query(Sample).filter(Sample.dataset_id == ds)}
        # A run that is not finished contributes no metric.
        session.add(Run(dataset_id=ds, kind="clip", params={}, scorer_key="unfinished", status="running"))
        session.commit()
    rng = np.random.default_rng(7)
    sels = [save(client, ds, random_recipe(rng, seeded)) for _ in range(5)]
    stored = {s["id"]: ids_of(client, s["id"]) for s in sels}
    loss_axis, clip_axis = f"{seeded.loss_run}:loss_sum", f"{seeded.clip_run}:similarity"
    for k in (2, 3, 2, 3):
        picked = [int(i) for i in rng.choice(list(stored), size=k, replace=False)]
        r = client.get("/api/selections/compare", params={"ids": ",".join(map(str, picked))})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["dataset_id"] == ds and [s["id"] for s in out["selections"]] == picked
        for entry in out["selections"]:
            ids = stored[entry["id"]]
            assert entry["count"] == len(ids)
            counts: dict[str, int] = {}
            for i in ids:
                counts[task_of[i]] = counts.get(task_of[i], 0) + 1
            assert entry["by_task_type"] == counts
            # Every metric of both finished runs, nothing of the unfinished one.
            assert set(entry["metrics"]) == {
                f"{seeded.clip_run}:similarity",
                *(f"{seeded.loss_run}:{m}" for m in ("loss_sum", "loss_mean", "tokens", "perplexity")),
            }
            for axis, values in ((loss_axis, seeded.loss), (clip_axis, seeded.clip)):
                v = np.array([values[i] for i in sorted(ids) if i in values])
                got = entry["metrics"][axis]
                assert got["n"] == len(v)
                assert got["median"] == pytest.approx(float(np.median(v)))
                assert got["q25"] == pytest.approx(float(np.quantile(v, 0.25)))
                assert got["q75"] == pytest.approx(float(np.quantile(v, 0.75)))
        pairs = [(a, b) for a, b in combinations(picked, 2)]
        assert [(o["a"], o["b"]) for o in out["overlap"]] == pairs
        for o in out["overlap"]:
            sa, sb = stored[o["a"]], stored[o["b"]]
            assert o["both"] == len(sa & sb)
            assert o["jaccard"] == pytest.approx(len(sa & sb) / len(sa | sb))
        assert {a["axis"] for a in out["axes"]} == set(out["selections"][0]["metrics"])


def test_compare_of_a_selection_with_itself_part(client: TestClient, seeded: Seeded) -> None:
    ds = seeded.dataset_id
    a = save(client, ds, {"region": {"type": "all"}, "exclude_errors": False})
    b = save(client, ds, {"region": {"type": "ids", "selection": a["id"]}, "sample": {"n": 100, "seed": 0}})
    out = client.get("/api/selections/compare", params={"ids": f"{a['id']},{b['id']}"}).json()
    assert out["overlap"] == [{"a": a["id"], "b": b["id"], "both": 100, "jaccard": pytest.approx(100 / 400)}]
    # Errored samples have no clip value: n counts only finite values.
    assert out["selections"][0]["metrics"][f"{seeded.clip_run}:similarity"]["n"] == len(seeded.clip)


@pytest.mark.parametrize(
    ("ids", "needle"),
    [
        ("1", "2 or 3"),
        ("1,2,3,4", "2 or 3"),
        ("", "2 or 3"),
        ("1,x", "comma-separated"),
        ("1,-2", "comma-separated"),
        ("1,99999999999", "comma-separated"),
        ("1,1", "twice"),
    ],
)
def test_compare_bad_ids_are_400(client: TestClient, seeded: Seeded, ids: str, needle: str) -> None:
    r = client.get("/api/selections/compare", params={"ids": ids})
    assert r.status_code == 400 and needle in r.json()["detail"], r.text


def test_compare_errors(
    client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    a = save(client, seeded.dataset_id, {"region": {"type": "all"}})
    b = save(client, seeded.dataset_id, {"region": {"type": "quantiles", "x": [0, 0.5]}})
    r = client.get("/api/selections/compare", params={"ids": f"{a['id']},{b['id']},999"})
    assert r.status_code == 404 and "999" in r.json()["detail"]
    assert client.get("/api/selections/compare").status_code == 422  # ids is required
    (tmp_path / "other").mkdir()
    other = seed_scored(session_factory, tmp_path / "other", n=40, seed=3)
    c = save(client, other.dataset_id, {"region": {"type": "all"}})
    r = client.get("/api/selections/compare", params={"ids": f"{a['id']},{c['id']}"})
    assert r.status_code == 400 and "one dataset" in r.json()["detail"]
    # The literal path segment is not taken for a selection id by /selections/{sel}.
    assert client.get(f"/api/selections/{a['id']}").status_code == 200
