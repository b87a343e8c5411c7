"""Security: auth on every mutating route, traversal on ingest paths, SQL-looking input, size limits."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.models import Dataset, Sample
from backend.settings import Settings
from tests.ingest_helpers import ingest_via_api
from tests.seeding import Seeded, seed_scored


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> Seeded:
    return seed_scored(session_factory, tmp_path, n=120)


def test_every_mutating_route_needs_the_token(settings: Settings, engine: Engine, seeded: Seeded) -> None:
    settings.api_token = "t0ken"
    app = create_app(settings, engine)
    mutating = [(m.upper(), path) for path, ops in app.openapi()["paths"].items()
                for m in ops if m.upper() in {"POST", "PUT", "PATCH", "DELETE"}]
    assert len(mutating) >= 6
    with TestClient(app) as c:
        for method, path in mutating:
            url = re.sub(r"\{[^}]+\}", "1", path.replace("{ds}", str(seeded.dataset_id)))
            r = c.request(method, url, json={})
            assert r.status_code == 401, (method, url, r.status_code)
            r = c.request(method, url, json={}, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 403, (method, url, r.status_code)
        # The dataset is still there.
        assert c.get(f"/api/datasets/{seeded.dataset_id}", headers={"Authorization": "Bearer t0ken"}).status_code == 200


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine)) as c:
        yield c


@pytest.mark.parametrize("make_path", [
    lambda root, out: "/etc/passwd",
    lambda root, out: f"{root}/../../../etc/passwd",
    lambda root, out: f"{root}/%2e%2e/%2e%2e/etc/passwd",
    lambda root, out: str(out),  # a symlink inside the root that points outside
])
def test_ingest_paths_must_stay_under_allowed_roots(client: TestClient, tmp_path: Path, make_path) -> None:  # type: ignore[no-untyped-def]
    outside = Path("/tmp") / f"qspace-outside-{os.getpid()}.json"
    outside.write_text(json.dumps([{"id": "x", "conversations": [{"from": "human", "value": "secret"}]}]))
    link = tmp_path / "link.json"
    if not link.exists():
        link.symlink_to(outside)
    try:
        r = client.post("/api/datasets", json={"name": "evil", "paths": [make_path(str(tmp_path), link)]})
        assert r.status_code in (403, 422), r.text
        assert r.status_code == 403 or "no such file" in r.json()["detail"]
        assert client.get("/api/datasets").json() == []
    finally:
        outside.unlink()


def test_image_root_symlink_escape_refused_at_ingest(client: TestClient, tmp_path: Path) -> None:
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"id": "x", "image": "a.jpg", "conversations": [{"from": "human", "value": "q"}]}]))
    (tmp_path / "etc").symlink_to("/etc")
    r = client.post("/api/datasets", json={"name": "evil", "paths": [str(data)], "image_root": str(tmp_path / "etc")})
    assert r.status_code == 403


@pytest.mark.parametrize("evil", [
    "'; DROP TABLE samples; --",
    "x' OR '1'='1",
    "\" OR 1=1 --",
    "$.a') , 1e999) FROM samples --",
])
def test_sql_looking_values_are_only_data(client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session],
                                          evil: str) -> None:
    ds = seeded.dataset_id
    r = client.get(f"/api/datasets/{ds}/samples", params={"task_type": evil})
    assert r.status_code == 200 and r.json()["total"] == 0
    r = client.post(f"/api/datasets/{ds}/selections", json={"region": {"type": "all"}, "metadata": {evil: [evil]}})
    assert r.status_code == 422  # matches nothing: an empty selection, refused in words
    r = client.post(f"/api/datasets/{ds}/selections", json={"region": {"type": "all"}, "task_types": [evil]})
    assert r.status_code == 422 and "unknown task type" in r.json()["detail"]
    r = client.get(f"/api/datasets/{ds}/space", params={"x": f"loss:{evil}"})
    assert r.status_code == 422
    r = client.get(f"/api/datasets/{ds}/space", params={"format": "json", "color": f"meta:{evil}"})
    assert r.status_code == 200 and set(r.json()["categories"]) == {"(none)"}
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Sample)) == 120
        assert s.scalar(select(func.count()).select_from(Dataset)) == 1


def test_dataset_text_is_returned_verbatim_as_json(client: TestClient, tmp_path: Path) -> None:
    script = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    data = tmp_path / "xss.json"
    data.write_text(json.dumps([{"id": script, "conversations": [{"from": "human", "value": script},
                                                                 {"from": "gpt", "value": script}]}]))
    ds = ingest_via_api(client, {"name": "xss", "paths": [str(data)]})
    r = client.get(f"/api/datasets/{ds['id']}/samples")
    assert r.headers["content-type"] == "application/json"
    assert r.json()["items"][0]["conversations"][1]["value"] == script


def test_oversized_and_overlong_requests(client: TestClient, seeded: Seeded) -> None:
    big = {"region": {"type": "polygon", "points": [[0, 0]] * 2_000_000}}
    assert client.post(f"/api/datasets/{seeded.dataset_id}/selections", json=big).status_code == 413
    pts = [[float(i % 13), float(i % 7)] for i in range(1001)]
    r = client.post(f"/api/datasets/{seeded.dataset_id}/selections", json={"region": {"type": "polygon", "points": pts}})
    assert r.status_code == 422 and "1000" in r.json()["detail"]
    assert client.get(f"/api/datasets/{seeded.dataset_id}/density", params={"bins": 100000}).status_code == 422
    assert client.get("/api/selections/1/samples", params={"limit": 100000}).status_code in (404, 422)


@pytest.mark.parametrize("weird", ["~nosuchuser/x.json", "~/x.json", "a\x00b.json", ""])
def test_weird_paths_are_refused_in_words(client: TestClient, weird: str) -> None:
    r = client.post("/api/datasets", json={"name": "w", "paths": [weird]})
    assert r.status_code in (403, 422) and r.json()["detail"]
