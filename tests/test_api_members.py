"""`GET /api/selections/{sel}/members` and `POST /api/datasets/{ds}/selections/members`: a selection's point ids,
all of them, equal to what it stores / what its preview counts, in Arrow and JSON; errors are 4xx."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from fastapi.testclient import TestClient

from tests.seeding import Seeded
from tests.selection_helpers import client, ids_of, random_recipe, save, seeded

__all__ = ["client", "seeded"]  # fixtures


def arrow_ids(content: bytes) -> list[int]:
    table = pa.ipc.open_stream(content).read_all()
    assert table.schema.field("id").type == pa.int32()
    assert int(table.schema.metadata[b"count"]) == table.num_rows
    return [int(i) for i in table.column("id").to_pylist()]


def test_saved_members_equal_the_stored_ids(client: TestClient, seeded: Seeded) -> None:
    rng = np.random.default_rng(3)
    for _ in range(4):
        sel = save(client, seeded.dataset_id, random_recipe(rng, seeded))
        stored = sorted(ids_of(client, sel["id"]))
        r = client.get(f"/api/selections/{sel['id']}/members")
        assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.arrow.stream"
        assert arrow_ids(r.content) == stored and len(stored) == sel["count"]
        j = client.get(f"/api/selections/{sel['id']}/members", params={"format": "json"}).json()
        assert j == {"count": len(stored), "ids": stored}


def test_recipe_members_equal_the_preview_and_the_saved_selection(client: TestClient, seeded: Seeded) -> None:
    ds = seeded.dataset_id
    losses = sorted(seeded.loss.values())
    clips = sorted(seeded.clip.values())
    polygon: dict[str, Any] = {"type": "polygon", "points": [[losses[20], clips[30]], [losses[300], clips[60]], [losses[200], clips[350]]]}
    body = {"x": f"{seeded.loss_run}:loss_sum", "y": f"{seeded.clip_run}:similarity", "region": polygon}
    r = client.post(f"/api/datasets/{ds}/selections/members", json=body)
    assert r.status_code == 200, r.text
    got = arrow_ids(r.content)
    preview = client.post(f"/api/datasets/{ds}/selections/preview", json={**body, "limit": 200}).json()
    assert 12 < len(got) == preview["count"] < 400, "the polygon should catch some, not all"
    assert got[: len(preview["items"])] == [s["id"] for s in preview["items"]]
    # By hand: strictly inside the triangle (no point lies on an edge of this one).
    inside = [sid for sid in seeded.sample_ids if sid in seeded.clip and sid not in seeded.errors
              and _in_triangle(seeded.loss[sid], seeded.clip[sid], polygon["points"])]  # fmt: skip
    assert got == sorted(inside)
    saved = save(client, ds, body)
    assert sorted(ids_of(client, saved["id"])) == got
    j = client.post(f"/api/datasets/{ds}/selections/members", params={"format": "json"}, json=body).json()
    assert j["ids"] == got and j["count"] == len(got)


def _in_triangle(x: float, y: float, pts: list[list[float]]) -> bool:
    def side(a: list[float], b: list[float]) -> float:
        return (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0])

    s = [side(pts[i], pts[(i + 1) % 3]) for i in range(3)]
    return all(v > 0 for v in s) or all(v < 0 for v in s)


def test_members_errors_are_4xx(client: TestClient, seeded: Seeded) -> None:
    assert client.get("/api/selections/999999/members").status_code == 404
    assert client.get("/api/selections/1/members", params={"format": "csv"}).status_code == 422
    ds = seeded.dataset_id
    assert client.post("/api/datasets/999999/selections/members", json={"region": {"type": "all"}}).status_code == 404
    bad_axis = client.post(f"/api/datasets/{ds}/selections/members", json={"x": "9999:nope", "region": {"type": "box", "x": [0, 1]}})
    assert bad_axis.status_code == 422 and "axis" in bad_axis.json()["detail"]
    assert client.post(f"/api/datasets/{ds}/selections/members", json={"region": {"type": "nope"}}).status_code == 422
