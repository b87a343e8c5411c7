"""`qspace token create | list | revoke`, and what the API makes of the tokens they print."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.models import ApiToken
from backend.settings import Settings
from backend.tokens import hash_token
from tests.test_cli import qspace


def test_create_list_revoke(
    tmp_path: Path, db_url: str, settings: Settings, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    env = {"QSPACE_DATA_DIR": str(tmp_path / "data"), "QSPACE_DATABASE_URL": db_url}
    r = qspace(["token", "create", "--name", "ann", "--scope", "write"], env)
    assert r.returncode == 0, r.stderr
    secret = r.stdout.strip().splitlines()[-1]  # the last line is the token, and only it
    assert secret.startswith("qs_") and len(secret) > 40 and " " not in secret
    with session_factory() as s:  # only the hash is stored
        row = s.scalar(select(ApiToken).where(ApiToken.name == "ann"))
        assert row is not None and row.scope == "write" and row.token_hash == hash_token(secret)
        assert secret not in row.token_hash
    listed = qspace(["token", "list"], env)
    assert listed.returncode == 0 and "ann" in listed.stdout and "write" in listed.stdout
    assert secret not in listed.stdout

    with TestClient(create_app(settings, engine)) as c:
        auth = {"Authorization": f"Bearer {secret}"}
        assert c.get("/api/datasets").status_code == 401  # a token exists: reads need one too
        assert c.get("/api/datasets", headers=auth).status_code == 200
        assert c.delete("/api/datasets/1", headers=auth).status_code == 403  # write cannot delete
        r = qspace(["token", "revoke", "ann"], env)
        assert r.returncode == 0 and "revoked" in r.stdout
        refused = c.get("/api/datasets", headers=auth)  # the very next request, same server process
        assert refused.status_code == 403 and "revoked" in refused.json()["detail"]

    again = qspace(["token", "create", "--name", "ann", "--scope", "read"], env)
    assert again.returncode == 1 and "exists already" in again.stderr
    bad = qspace(["token", "create", "--name", "x", "--scope", "root"], env)
    assert bad.returncode == 1 and "scope 'root'" in bad.stderr
    missing = qspace(["token", "revoke", "nobody"], env)
    assert missing.returncode == 1 and "no token named 'nobody'" in missing.stderr
    row_line = next(line for line in qspace(["token", "list"], env).stdout.splitlines() if line.startswith("ann "))
    assert not row_line.rstrip().endswith(" -")  # the revoke time, where an active token shows "-"
