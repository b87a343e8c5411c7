"""Combined selections (`region: {type: combine, op, selections}`) and the `ids` region, through the API."""

from __future__ import annotations

from functools import reduce
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from backend.experiment_arms import resolve_arm
from backend.experiment_schemas import ArmRef
from backend.models import Selection
from backend.selections import ids_to_bytes
from tests.seeding import Seeded, seed_scored
from tests.selection_helpers import client, ids_of, random_recipe, save, seeded

__all__ = ["client", "seeded"]  # fixtures


def expected(op: str, sets: list[set[int]]) -> set[int]:
    if op == "union":
        return set().union(*sets)
    if op == "intersection":
        return reduce(set.intersection, sets)
    return sets[0].difference(*sets[1:])


def test_combine_agrees_with_python_sets(client: TestClient, seeded: Seeded) -> None:
    ds = seeded.dataset_id
    rng = np.random.default_rng(18)
    sources = [save(client, ds, random_recipe(rng, seeded)) for _ in range(6)]
    stored = {s["id"]: ids_of(client, s["id"]) for s in sources}
    checked = 0
    for _ in range(12):
        op = str(rng.choice(["union", "intersection", "difference"]))
        picked = [int(i) for i in rng.choice(list(stored), size=int(rng.integers(2, 4)), replace=False)]
        want = expected(op, [stored[i] for i in picked])
        for exclude_errors in (False, True):
            body = {"region": {"type": "combine", "op": op, "selections": picked}, "exclude_errors": exclude_errors}
            goal = want - seeded.errors if exclude_errors else want
            prev = client.post(f"/api/datasets/{ds}/selections/preview", json={**body, "limit": 0})
            assert prev.status_code == 200 and prev.json()["count"] == len(goal), (op, picked, prev.text)
            r = client.post(f"/api/datasets/{ds}/selections", json=body)
            if not goal:
                assert r.status_code == 422 and "empty" in r.json()["detail"]
                continue
            assert r.status_code == 201, r.text
            assert ids_of(client, r.json()["id"]) == goal and r.json()["count"] == len(goal)
            checked += 1
    assert checked >= 10  # the draw must exercise non-empty results of every kind


def test_combine_sample_filters_lineage_and_export(
    client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    ds = seeded.dataset_id
    a = save(client, ds, {"region": {"type": "quantiles", "x": [0, 0.6]}, "name": "low loss"})
    b = save(client, ds, {"region": {"type": "quantiles", "y": [0.3, 1]}, "name": "high clip"})
    union = ids_of(client, a["id"]) | ids_of(client, b["id"])
    region = {"type": "combine", "op": "union", "selections": [a["id"], b["id"]]}

    # A random subsample of the combined set: n of them, reproducible, another seed gives another draw.
    drawn = [save(client, ds, {"region": region, "sample": {"n": 50, "seed": s}}) for s in (1, 1, 2)]
    got = [ids_of(client, d["id"]) for d in drawn]
    assert all(len(g) == 50 and g <= union for g in got)
    assert got[0] == got[1] and got[0] != got[2]

    # Filters apply to the combined set like to any region.
    kinds = client.post(
        f"/api/datasets/{ds}/selections/preview", json={"region": region, "task_types": ["referring_qa"], "limit": 0}
    ).json()
    assert set(kinds["by_task_type"]) == {"referring_qa"} and 0 < kinds["count"] < len(union)

    # Nested: (a | b) - a == b - a; the recipe's lineage names every ancestor once, with its digest.
    ab = save(client, ds, {"region": region, "name": "a or b"})
    diff = save(client, ds, {"region": {"type": "combine", "op": "difference", "selections": [ab["id"], a["id"]]}})
    assert ids_of(client, diff["id"]) == ids_of(client, b["id"]) - ids_of(client, a["id"])
    lineage = diff["recipe"]["lineage"]
    assert [e["id"] for e in lineage] == [ab["id"], a["id"], b["id"]]
    assert lineage[0]["selections"] == [a["id"], b["id"]] and lineage[1]["count"] == a["count"]
    assert all(len(e["ids_sha256"]) == 16 for e in lineage)
    assert lineage[1]["recipe"]["resolved_axes"]["x"]["run_id"] == seeded.loss_run

    # Exports read the stored ids.
    exported = client.get(f"/api/selections/{diff['id']}/export", params={"format": "llava"}).json()
    assert len(exported) == diff["count"]

    # An experiment arm made of a combined selection trains on its ids.
    with session_factory() as session:
        arm = resolve_arm(session, ds, ArmRef(selection=diff["id"]))
    assert set(arm.stages[0].tolist()) == ids_of(client, diff["id"])


def test_ids_region_is_a_saved_selections_samples(client: TestClient, seeded: Seeded) -> None:
    ds = seeded.dataset_id
    a = save(client, ds, {"region": {"type": "top", "percent": 30, "axes": "x"}, "exclude_errors": False})
    sub = save(client, ds, {"region": {"type": "ids", "selection": a["id"]}, "sample": {"n": 10, "seed": 3}})
    assert len(ids_of(client, sub["id"])) == 10 and ids_of(client, sub["id"]) <= ids_of(client, a["id"])
    same = client.post(
        f"/api/datasets/{ds}/selections/preview",
        json={"region": {"type": "ids", "selection": a["id"]}, "exclude_errors": False, "limit": 0},
    )
    assert same.json()["count"] == a["count"]


def test_combine_errors(
    client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    ds = seeded.dataset_id
    a = save(client, ds, {"region": {"type": "quantiles", "x": [0, 0.5]}})
    b = save(client, ds, {"region": {"type": "quantiles", "x": [0.5, 1]}})

    def post(region: dict) -> tuple[int, str]:
        r = client.post(f"/api/datasets/{ds}/selections", json={"region": region})
        return r.status_code, str(r.json()["detail"])

    def combine(op: str, sels: list[int]) -> tuple[int, str]:
        return post({"type": "combine", "op": op, "selections": sels})

    code, msg = combine("union", [a["id"], 999])
    assert code == 404 and "999" in msg
    code, msg = combine("union", [a["id"], a["id"]])
    assert code == 422 and "distinct" in msg
    code, msg = combine("intersection", [a["id"]])
    assert code == 422 and "at least 2" in msg
    assert combine("symmetric", [a["id"], b["id"]])[0] == 422
    assert combine("union", [])[0] == 422
    code, msg = combine("intersection", [a["id"], b["id"]])  # disjoint halves
    assert code == 422 and "empty" in msg
    code, msg = post({"type": "ids", "selection": 0})
    assert code == 422

    # Another dataset's selection.
    (tmp_path / "other").mkdir()
    other = seed_scored(session_factory, tmp_path / "other", n=40, seed=7)
    c = save(client, other.dataset_id, {"region": {"type": "all"}})
    code, msg = combine("union", [a["id"], c["id"]])
    assert code == 422 and f"dataset {other.dataset_id}" in msg

    # A reference cycle written straight into the store (the API cannot write one) is refused, not looped.
    with session_factory() as session:
        x = Selection(dataset_id=ds, name="x", recipe={}, count=1, sample_ids=ids_to_bytes(np.array([1], np.int32)))
        y = Selection(dataset_id=ds, name="y", recipe={}, count=1, sample_ids=ids_to_bytes(np.array([2], np.int32)))
        session.add_all([x, y])
        session.flush()
        x.recipe = {"region": {"type": "combine", "op": "union", "selections": [y.id]}}
        y.recipe = {"region": {"type": "ids", "selection": x.id}}
        session.commit()
        xid, yid = x.id, y.id
    code, msg = combine("union", [xid, a["id"]])
    assert code == 422 and "cycle" in msg and f"{xid} -> {yid} -> {xid}" in msg
    listed = client.get(f"/api/datasets/{ds}/selections").json()
    assert {s["id"] for s in listed} == {a["id"], b["id"], xid, yid}  # nothing saved by the refusals
