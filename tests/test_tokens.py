"""Tokens and scopes over the whole API: every route of the OpenAPI schema is called with each scope, so a new route
is covered without touching this file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.api.deps import needed_scope
from backend.models import Dataset, Run, Selection
from backend.settings import Settings
from backend.tokens import create_token, revoke_token, stamp_creators
from tests.ingest_helpers import ingest_via_api
from tests.seeding import Seeded, seed_scored

SAMPLE_DIR = Path(__file__).parent / "data" / "sample"
MISSING = 999_999  # an id no row has: a mutation that passes auth answers 404/422, and changes nothing


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> Seeded:
    return seed_scored(session_factory, tmp_path, n=60)


@pytest.fixture
def secrets(session_factory: sessionmaker[Session]) -> dict[str, str]:
    """One token per scope (name = scope)."""
    with session_factory() as s:
        return {scope: create_token(s, scope, scope)[1] for scope in ("read", "write", "admin")}


@pytest.fixture
def app(settings: Settings, engine: Engine, secrets: dict[str, str]) -> FastAPI:
    return create_app(settings, engine)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every route in the schema, bar the open health check."""
    return [
        (method.upper(), path, op)
        for path, ops in app.openapi()["paths"].items()
        for method, op in ops.items()
        if path != "/api/health"
    ]


def url_for(path: str, ids: dict[str, int | str]) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: str(ids.get(m.group(1), MISSING)), path)


def test_a_read_token_reads_everything_and_mutates_nothing(
    app: FastAPI, client: TestClient, seeded: Seeded, secrets: dict[str, str]
) -> None:
    sel = client.post(
        f"/api/datasets/{seeded.dataset_id}/selections", json={"region": {"type": "all"}}, headers=bearer(secrets["write"])
    )
    assert sel.status_code == 201
    ids: dict[str, int | str] = {
        "ds": seeded.dataset_id, "sample_id": seeded.sample_ids[0], "run_id": seeded.clip_run,
        "sel": sel.json()["id"], "name": "read",
    }
    reads = writes = 0
    for method, path, op in operations(app):
        url = url_for(path, ids)
        r = client.request(method, url, json={}, headers=bearer(secrets["read"]))
        if needed_scope(method, op) == "read":
            reads += 1
            # Past auth: a 200, or the route's own answer to an id or parameter this test does not supply.
            assert r.status_code < 500 and r.status_code not in (401, 403), (method, url, r.status_code, r.text)
        else:
            writes += 1
            assert r.status_code == 403, (method, url, r.status_code)
            assert "has scope read" in r.json()["detail"]
    assert reads >= 15 and writes >= 12
    # The reads that have every id they need answer 200.
    for url in (f"/api/datasets/{seeded.dataset_id}", f"/api/datasets/{seeded.dataset_id}/space?format=json",
                f"/api/selections/{ids['sel']}", f"/api/runs/{seeded.clip_run}", "/api/datasets", "/api/jobs"):
        assert client.get(url, headers=bearer(secrets["read"])).status_code == 200, url
    # A preview is a POST that changes nothing: marked read in the schema, so a read token may lasso and look.
    preview = client.post(f"/api/datasets/{seeded.dataset_id}/selections/preview", json={"region": {"type": "all"}},
                          headers=bearer(secrets["read"]))
    assert preview.status_code == 200 and preview.json()["count"] > 0
    # ...and nothing was changed by the refused mutations.
    assert client.get(f"/api/datasets/{seeded.dataset_id}", headers=bearer(secrets["read"])).json()["n_samples"] == 60


def test_write_token_cannot_delete_or_manage_tokens_and_admin_can(
    app: FastAPI, client: TestClient, seeded: Seeded, secrets: dict[str, str]
) -> None:
    admin_only = 0
    for method, path, op in operations(app):
        scope = needed_scope(method, op)
        if scope == "read":
            continue
        url = url_for(path, {"name": "nobody"})
        r = client.request(method, url, json={}, headers=bearer(secrets["write"]))
        if scope == "admin":
            admin_only += 1
            assert r.status_code == 403, (method, url, r.status_code)
            # The admin token passes auth: a read (200), a missing id (404) or an empty body (422); nothing is deleted.
            r = client.request(method, url, json={}, headers=bearer(secrets["admin"]))
            assert r.status_code in ((200,) if method == "GET" else (404, 422)), (method, url, r.status_code, r.text)
        else:
            assert r.status_code not in (401, 403) and r.status_code < 500, (method, url, r.status_code, r.text)
    assert admin_only >= 4  # DELETE dataset, DELETE token, GET and POST tokens
    ds = seeded.dataset_id
    assert client.delete(f"/api/datasets/{ds}", headers=bearer(secrets["write"])).status_code == 403
    assert client.delete(f"/api/datasets/{ds}", headers=bearer(secrets["admin"])).status_code == 204


def test_no_token_and_wrong_tokens(client: TestClient, seeded: Seeded) -> None:
    r = client.get("/api/datasets")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "qspace token" in r.json()["detail"]
    assert client.get("/api/datasets", headers=bearer("qs_guess")).status_code == 403
    assert client.get("/api/datasets", headers={"Authorization": "Basic eDp5"}).status_code == 401
    health = client.get("/api/health")  # probes stay open and say a token is needed
    assert health.status_code == 200 and health.json()["auth_required"] is True


def test_revoked_tokens_are_refused_at_once(
    client: TestClient, session_factory: sessionmaker[Session], secrets: dict[str, str]
) -> None:
    assert client.get("/api/datasets", headers=bearer(secrets["write"])).status_code == 200
    with session_factory() as s:  # as `qspace token revoke` does, from another process: nothing to invalidate
        revoke_token(s, "write")
    r = client.get("/api/datasets", headers=bearer(secrets["write"]))
    assert r.status_code == 403 and "revoked" in r.json()["detail"]
    # Over the API (admin): the next request of that token is refused too.
    assert client.delete("/api/tokens/read", headers=bearer(secrets["admin"])).json()["revoked_at"] is not None
    assert client.get("/api/datasets", headers=bearer(secrets["read"])).status_code == 403
    listed = {t["name"]: t for t in client.get("/api/tokens", headers=bearer(secrets["admin"])).json()}
    assert set(listed) == {"read", "write", "admin"} and listed["admin"]["revoked_at"] is None
    assert "token" not in listed["admin"] and "token_hash" not in listed["admin"]


def test_tokens_over_the_api(client: TestClient, secrets: dict[str, str]) -> None:
    admin = bearer(secrets["admin"])
    made = client.post("/api/tokens", json={"name": "ci-bot", "scope": "write"}, headers=admin)
    assert made.status_code == 201 and made.json()["created_by"] == "admin"
    token = made.json()["token"]
    assert token.startswith("qs_") and client.get("/api/datasets", headers=bearer(token)).status_code == 200
    assert client.post("/api/tokens", json={"name": "ci-bot", "scope": "read"}, headers=admin).status_code == 409
    assert client.post("/api/tokens", json={"name": "x", "scope": "root"}, headers=admin).status_code == 422
    assert client.delete("/api/tokens/nobody", headers=admin).status_code == 404


def test_env_token_is_admin(settings: Settings, engine: Engine, seeded: Seeded) -> None:
    app = create_app(settings.model_copy(update={"api_token": "envtok"}), engine)
    with TestClient(app) as c:
        assert c.get("/api/datasets").status_code == 401
        env = bearer("envtok")
        sel = c.post(f"/api/datasets/{seeded.dataset_id}/selections", json={"region": {"type": "all"}}, headers=env)
        assert sel.status_code == 201 and sel.json()["created_by"] == "env"
        made = c.post("/api/tokens", json={"name": "first", "scope": "read"}, headers=env)
        assert made.status_code == 201 and made.json()["created_by"] == "env"
        assert c.delete(f"/api/datasets/{seeded.dataset_id}", headers=env).status_code == 204


def test_open_when_no_token_is_configured(
    settings: Settings, engine: Engine, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    with TestClient(create_app(settings, engine)) as c:
        assert c.get("/api/health").json()["auth_required"] is False
        assert c.get("/api/datasets").status_code == 200
        sel = c.post(f"/api/datasets/{seeded.dataset_id}/selections", json={"region": {"type": "all"}})
        assert sel.status_code == 201 and sel.json()["created_by"] is None
        # Nobody may mint the first token over an open API (it would lock everyone else out).
        r = c.post("/api/tokens", json={"name": "mine", "scope": "admin"})
        assert r.status_code == 403 and "qspace token create" in r.json()["detail"]
        # A revoked token configures nothing: the server stays open.
        with session_factory() as s:
            create_token(s, "gone", "read")
            assert c.get("/api/datasets").status_code == 401
            revoke_token(s, "gone")
        assert c.get("/api/datasets").status_code == 200
        assert c.delete(f"/api/datasets/{seeded.dataset_id}").status_code == 204


def test_who_created_what_is_recorded_and_shown(
    client: TestClient, secrets: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    write = bearer(secrets["write"])
    body = {"name": "mine", "paths": [str(SAMPLE_DIR / "llava_sample.json")], "image_root": str(SAMPLE_DIR)}
    ds = ingest_via_api(client, body, headers=write)  # the ingest's background thread records who asked
    assert ds["created_by"] == "write"
    ds_id = ds["id"]
    sel = client.post(f"/api/datasets/{ds_id}/selections", json={"region": {"type": "all"}}, headers=write).json()
    assert sel["created_by"] == "write"
    assert client.get(f"/api/selections/{sel['id']}", headers=write).json()["created_by"] == "write"
    cur = client.post(f"/api/datasets/{ds_id}/curricula", json={"stages": [sel["id"]]}, headers=write)
    assert cur.status_code == 201 and cur.json()["created_by"] == "write"
    listed = client.get("/api/datasets", headers=bearer(secrets["read"])).json()
    assert [d["created_by"] for d in listed] == ["write"]
    with session_factory() as s:
        assert s.scalar(select(Selection.created_by).where(Selection.id == sel["id"])) == "write"


def test_stamping_covers_runs_and_leaves_explicit_values(session_factory: sessionmaker[Session], seeded: Seeded) -> None:
    stamp_creators(session_factory)
    stamp_creators(session_factory)  # idempotent: one listener
    with session_factory() as s:
        s.info["created_by"] = "bob"
        s.add(Run(dataset_id=seeded.dataset_id, kind="length", params={}, scorer_key="k-new"))
        s.add(Dataset(name="pre-named", created_by="alice"))
        s.commit()
        assert s.scalar(select(Run.created_by).where(Run.scorer_key == "k-new")) == "bob"
        assert s.scalar(select(Dataset.created_by).where(Dataset.name == "pre-named")) == "alice"
        # Rows made outside a request (seeding, the CLI) record nobody.
        assert s.scalar(select(Run.created_by).where(Run.id == seeded.clip_run)) is None


def test_the_ui_cookie_only_reads(client: TestClient, seeded: Seeded, secrets: dict[str, str]) -> None:
    # Thumbnails are <img> tags: the UI's session cookie carries the token for GETs, never above the read scope.
    client.cookies.set("qspace_token", secrets["admin"])
    try:
        assert client.get(f"/api/datasets/{seeded.dataset_id}").status_code == 200
        assert client.delete(f"/api/datasets/{seeded.dataset_id}").status_code == 401  # not read from a cookie
        assert client.get("/api/tokens").status_code == 403  # an admin token, capped to read through the cookie
    finally:
        client.cookies.clear()
