from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.models import Dataset, Sample
from backend.settings import Settings


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine)) as c:
        yield c


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (300, 200), (200, 10, 10)).save(root / "sub" / "ok.png")
    (root / "broken.jpg").write_bytes(b"not an image")
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    os.symlink(secret, root / "link.png")
    return root


def add_sample(factory: sessionmaker[Session], root: Path, image: object) -> int:
    # Written directly, bypassing ingest's checks, so the route's own defences are what is tested.
    with factory() as s:
        ds = Dataset(name=f"d{os.urandom(3).hex()}", image_root=str(root), sources=[], task_type_prompts={})
        s.add(ds)
        s.flush()
        sample = Sample(
            dataset_id=ds.id,
            position=0,
            external_id="x",
            image=image,
            conversations=[{"from": "human", "value": "q"}],
            task_type="t",
            meta={},
        )
        s.add(sample)
        s.commit()
        return sample.id


def test_image_served_and_thumbnailed(
    client: TestClient, session_factory: sessionmaker[Session], image_root: Path
) -> None:
    sid = add_sample(session_factory, image_root, ["sub/ok.png", "broken.jpg"])
    r = client.get(f"/api/samples/{sid}/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (image_root / "sub" / "ok.png").read_bytes()
    thumb = client.get(f"/api/samples/{sid}/image", params={"max_side": 64})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    from io import BytesIO

    assert max(Image.open(BytesIO(thumb.content)).size) == 64
    broken = client.get(f"/api/samples/{sid}/image", params={"index": 1, "max_side": 64})
    assert broken.status_code == 422 and "not a readable image" in broken.json()["detail"]
    assert client.get(f"/api/samples/{sid}/image", params={"index": 2}).status_code == 404


@pytest.mark.parametrize(
    "bad",
    [
        "../secret.png",
        "sub/../../secret.png",
        "/etc/passwd",
        "link.png",
        "%2e%2e/secret.png",
        "..%2fsecret.png",
    ],
)
def test_image_route_refuses_escapes(
    client: TestClient, session_factory: sessionmaker[Session], image_root: Path, bad: str
) -> None:
    sid = add_sample(session_factory, image_root, bad)
    r = client.get(f"/api/samples/{sid}/image")
    # URL-encoded names are literal file names here (never decoded), so they are merely missing.
    assert r.status_code in (403, 404)
    if "%" not in bad:
        assert r.status_code == 403, r.text


def test_text_only_and_missing(
    client: TestClient, session_factory: sessionmaker[Session], image_root: Path
) -> None:
    sid = add_sample(session_factory, image_root, None)
    assert "text-only" in client.get(f"/api/samples/{sid}/image").json()["detail"]
    sid = add_sample(session_factory, image_root, "sub/none.png")
    r = client.get(f"/api/samples/{sid}/image")
    assert r.status_code == 404 and "missing" in r.json()["detail"]
