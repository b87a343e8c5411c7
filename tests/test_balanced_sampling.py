"""Coverage-aware sampling: per-cluster counts follow the rule exactly (largest remainder; uniform with
water-filling), same seed same ids, and the selection API's `sample.balance` and `dedupe` filter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.regions import balanced_counts, balanced_indices
from backend.settings import Settings
from tests.semantic_helpers import InlineQueue, Seeded, seed_embedded


@pytest.mark.parametrize(
    ("sizes", "n", "want"),
    [
        ([50, 30, 20], 10, [5, 3, 2]),  # exact shares
        ([5, 3, 2], 7, [4, 2, 1]),  # 3.5, 2.1, 1.4 -> floors 3, 2, 1; one left -> the largest remainder (.5)
        ([1, 1, 1], 2, [1, 1, 0]),  # equal remainders: the lower groups first
        ([10, 0, 10], 5, [3, 0, 2]),  # 2.5 and 2.5: tie -> the lower group
        ([3, 4], 100, [3, 4]),  # n above the total: everything
        ([7, 7, 7], 0, [0, 0, 0]),
    ],
)
def test_proportional_is_largest_remainder(sizes: list[int], n: int, want: list[int]) -> None:
    assert balanced_counts(sizes, n, "proportional").tolist() == want


@pytest.mark.parametrize(
    ("sizes", "n", "want"),
    [
        ([50, 30, 20], 9, [3, 3, 3]),
        ([50, 30, 20], 10, [4, 3, 3]),  # the remainder goes to the first groups
        ([50, 2, 20], 12, [5, 2, 5]),  # group 1 gives its 2; its missing 2 are split over the others
        ([1, 1, 100], 10, [1, 1, 8]),
        ([0, 4, 4], 5, [0, 3, 2]),  # empty groups get nothing and no share
        ([3, 4], 100, [3, 4]),
    ],
)
def test_uniform_water_fills(sizes: list[int], n: int, want: list[int]) -> None:
    assert balanced_counts(sizes, n, "uniform").tolist() == want


def test_counts_always_sum_to_n_and_respect_sizes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = rng.integers(0, 30, size=rng.integers(1, 12))
        n = int(rng.integers(0, sizes.sum() + 5))
        for mode in ("proportional", "uniform"):
            c = balanced_counts(sizes, n, mode)
            assert c.sum() == min(n, sizes.sum()) and (c <= sizes).all() and (c >= 0).all()
            full = c == sizes
            if mode == "uniform" and (~full).any():  # a level L: open groups at L or L+1, full ones <= L+1
                level = c[~full].min()
                assert (c[~full] <= level + 1).all() and (c[full] <= level + 1).all()
    with pytest.raises(ValueError):
        balanced_counts([1, 2], 1, "random")


def test_balanced_indices_draw_the_counts_reproducibly() -> None:
    idx = np.arange(100, 200)
    groups = np.repeat([0, 1, 2, -1], [60, 25, 10, 5])
    a = balanced_indices(idx, groups, 20, seed=7, mode="proportional")
    b = balanced_indices(idx[::-1], groups[::-1], 20, seed=7, mode="proportional")
    assert a.tolist() == b.tolist() == sorted(a.tolist())  # input order does not matter
    assert Counter(groups[a - 100].tolist()) == {0: 13, 1: 5, 2: 2}  # 12.6, 5.3, 2.1 -> 13, 5, 2; none of -1
    u = balanced_indices(idx, groups, 30, seed=7, mode="uniform")
    assert Counter(groups[u - 100].tolist()) == {0: 10, 1: 10, 2: 10}
    assert balanced_indices(idx, groups, 20, seed=8, mode="proportional").tolist() != a.tolist()


# --- through the selection API ------------------------------------------------------------------------------


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path) -> Seeded:
    return seed_embedded(session_factory, settings, tmp_path, n=61)


@pytest.fixture
def client(settings: Settings, engine: Engine, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(settings, engine)
    app.state.task_queue = InlineQueue(settings, session_factory)
    with TestClient(app) as c:
        yield c


def derived(client: TestClient, ds: int, kind: str, **params: object) -> int:
    r = client.post(f"/api/datasets/{ds}/runs", json={"kind": kind, "params": params})
    assert r.status_code == 202, r.text
    client.app.state.task_queue.drain()  # type: ignore[attr-defined]
    run = client.get(f"/api/runs/{r.json()['id']}").json()
    assert run["status"] == "done", run
    return int(run["id"])


def select(client: TestClient, ds: int, **body: object) -> dict:
    r = client.post(f"/api/datasets/{ds}/selections", json={"region": {"type": "all"}, **body})
    assert r.status_code == 201, r.text
    return r.json()


def ids_of(client: TestClient, sel: dict) -> list[int]:
    page = client.get(f"/api/selections/{sel['id']}/samples", params={"limit": 1000}).json()
    return sorted(int(item["id"]) for item in page["items"])


def test_balanced_selection_follows_the_rule(client: TestClient, seeded: Seeded) -> None:
    ds = seeded.dataset_id
    clusters = derived(client, ds, "clusters", embeddings_run=seeded.clip_run, source="both", k=3)
    space = client.get(f"/api/datasets/{ds}/space", params={"x": f"{clusters}:cluster", "y": "clip", "format": "json"})
    label = dict(zip(space.json()["ids"], space.json()["x"], strict=True))
    sizes = Counter(int(v) for v in label.values())  # 20, 20, 19 (one sample has no embedding)
    for mode in ("proportional", "uniform"):
        sample = {"n": 10, "seed": 3, "balance": {"run": clusters, "mode": mode}}
        sel = select(client, ds, sample=sample)
        got = ids_of(client, sel)
        want = balanced_counts([sizes[c] for c in range(3)], 10, mode).tolist()
        assert sel["count"] == 10 and [Counter(int(label[i]) for i in got)[c] for c in range(3)] == want
        assert ids_of(client, select(client, ds, sample=sample)) == got  # same seed, same ids
    other = select(client, ds, sample={"n": 10, "seed": 4, "balance": {"run": clusters}})
    assert ids_of(client, other) != got
    bad = client.post(f"/api/datasets/{ds}/selections",
                      json={"region": {"type": "all"}, "sample": {"n": 5, "balance": {"run": seeded.loss_run}}})  # fmt: skip
    assert bad.status_code == 422 and "clusters run" in bad.json()["detail"]
    bad = client.post(f"/api/datasets/{ds}/selections",
                      json={"region": {"type": "all"}, "sample": {"n": 5, "balance": {"run": clusters, "mode": "x"}}})  # fmt: skip
    assert bad.status_code == 422


def test_dedupe_keeps_one_per_group(client: TestClient, seeded: Seeded) -> None:
    ds = seeded.dataset_id
    dup = derived(client, ds, "duplicates", embeddings_run=seeded.clip_run, source="image", threshold=0.5)
    sp = client.get(f"/api/datasets/{ds}/space",
                    params={"x": f"{dup}:dup_group", "y": f"{dup}:dup_rank", "format": "json"}).json()  # fmt: skip
    groups = Counter(sp["x"])
    assert len(groups) == 3  # at cosine 0.5 the three blobs are three groups
    kept = ids_of(client, select(client, ds, dedupe=dup))
    assert len(kept) == 3 and {int(g) for g in groups} == set(kept)  # each group keeps its lowest id
    everything = select(client, ds)
    assert everything["count"] == 60
    missing = client.post(f"/api/datasets/{ds}/selections", json={"region": {"type": "all"}, "dedupe": 9999})
    assert missing.status_code == 422
