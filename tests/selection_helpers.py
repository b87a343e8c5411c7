"""Fixtures and helpers shared by the saved-selection tests (compare, combine, import): an API client over a
seeded dataset, random recipes, and a selection's stored ids read back through the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.settings import Settings
from tests.seeding import Seeded, seed_scored


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine)) as c:
        yield c


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> Seeded:
    return seed_scored(session_factory, tmp_path, n=400)


def ids_of(client: TestClient, sel_id: int) -> set[int]:
    """The sample ids stored with a selection, through the paging route."""
    out: set[int] = set()
    offset = 0
    while True:
        page = client.get(f"/api/selections/{sel_id}/samples", params={"offset": offset, "limit": 1000})
        assert page.status_code == 200, page.text
        items = page.json()["items"]
        out.update(int(s["id"]) for s in items)
        offset += len(items)
        if not items or offset >= page.json()["total"]:
            return out


def save(client: TestClient, ds: int, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/api/datasets/{ds}/selections", json=body)
    assert r.status_code == 201, r.text
    sel: dict[str, Any] = r.json()
    return sel


def random_recipe(rng: np.random.Generator, seeded: Seeded) -> dict[str, Any]:
    """A random region (box, quantile band, top p%, or a random sample of all), random error filter."""
    kind = rng.choice(["box", "quantiles", "top", "sample"])
    body: dict[str, Any] = {"exclude_errors": bool(rng.random() < 0.5)}
    if kind == "box":
        losses = sorted(seeded.loss.values())
        lo, hi = sorted(rng.choice(len(losses), 2, replace=False))
        body["region"] = {"type": "box", "x": [losses[lo], losses[hi]]}
    elif kind == "quantiles":
        a = round(float(rng.uniform(0, 0.9)), 3)
        body["region"] = {"type": "quantiles", "y": [a, round(float(rng.uniform(a + 0.05, 1.0)), 3)]}
    elif kind == "top":
        body["region"] = {"type": "top", "percent": float(rng.integers(5, 60)), "axes": str(rng.choice(["x", "y"]))}
    else:
        body["region"] = {"type": "all"}
        body["sample"] = {"n": int(rng.integers(20, 300)), "seed": int(rng.integers(0, 1000))}
    return body
