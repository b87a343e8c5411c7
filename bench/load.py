"""Load test: concurrent clients against /space, selections and sample pages on 1,000,000 points.

    .venv/bin/python bench/load.py [--n 1000000] [--clients 20] [--seconds 60] [--db sqlite|postgresql] [--token]

``--token`` stores a `write`-scope API token in the database before the server starts (so every request, reads
included, must carry one and is looked up there) and the clients send it: the cost of access control.

Builds the store as bench/space.py does, starts `qspace serve` (uvicorn) in a child process on
127.0.0.1, and runs `--clients` asyncio clients for `--seconds`, each looping over a mix: the plane as
Arrow, a lasso preview (random 64-vertex polygon), a saved quantile-band selection and a page of its
samples, a dataset sample page. Reports count, errors, p50 and p95 per request kind. Bounded in count
and time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from space import build, lasso  # noqa: E402

from backend.db import make_engine  # noqa: E402
from backend.migrate import upgrade  # noqa: E402
from tests.live_server import served  # noqa: E402


async def client_loop(
    api: httpx.AsyncClient, ds: int, deadline: float, stats: dict[str, list[float]], errors: dict[str, int], seed: int
) -> None:
    rng = random.Random(seed)
    while time.perf_counter() < deadline:
        kind = rng.choice(("space", "lasso", "selection", "page"))
        t = time.perf_counter()
        try:
            if kind == "space":
                r = await api.get(f"/datasets/{ds}/space", params={"x": "loss", "y": "clip"})
            elif kind == "lasso":
                poly = lasso(
                    64, rng.uniform(5, 15), rng.uniform(0.2, 0.3), rng.uniform(2, 6), 0.04, rng.randrange(10**6)
                )
                r = await api.post(
                    f"/datasets/{ds}/selections/preview",
                    json={"region": {"type": "polygon", "points": poly}, "exclude_errors": False, "limit": 12},
                )
            elif kind == "selection":
                q = rng.choice((0.8, 0.9, 0.95))
                r = await api.post(
                    f"/datasets/{ds}/selections",
                    json={"region": {"type": "quantiles", "x": [q, 1], "y": [q, 1]}, "exclude_errors": False},
                )
                if r.status_code == 201:
                    r = await api.get(f"/selections/{r.json()['id']}/samples", params={"limit": 24})
            else:
                r = await api.get(f"/datasets/{ds}/samples", params={"offset": rng.randrange(0, 900_000), "limit": 50})
            if r.status_code >= 400:
                errors[kind] += 1
        except httpx.HTTPError:
            errors[kind] += 1
        stats[kind].append((time.perf_counter() - t) * 1000)


async def run_load(
    url: str, ds: int, clients: int, seconds: float, token: str | None = None
) -> tuple[dict[str, list[float]], dict[str, int]]:
    stats: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    limits = httpx.Limits(max_connections=clients)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, headers=headers) as api:
        await api.get(f"/datasets/{ds}/space")  # warm the cache once, as any first viewer would
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(client_loop(api, ds, deadline, stats, errors, i) for i in range(clients)))
    return stats, errors


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--token", action="store_true", help="a write-scope token in the store; clients send it")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qspace-load-"))
    if args.db == "sqlite":
        url = f"sqlite:///{tmp / 'load.db'}"
    else:
        from tests.conftest import create_pg_database

        url = create_pg_database("qspace_load")
    engine = make_engine(url)
    upgrade(engine)
    ds = build(engine, args.n)
    token = None
    if args.token:
        from backend.db import make_session_factory
        from backend.tokens import create_token

        with make_session_factory(engine)() as session:
            _, token = create_token(session, "load", "write")
            session.commit()
    engine.dispose()
    env = {**os.environ, "QSPACE_DATA_DIR": str(tmp / "data"), "QSPACE_DATABASE_URL": url}
    with served(env, tmp / "server.log", timeout=60) as server:
        stats, errors = asyncio.run(run_load(server.api, ds, args.clients, args.seconds, token))
    total = sum(len(v) for v in stats.values())
    print(
        f"\n{args.clients} clients, {args.seconds:.0f} s, {args.n:,} points ({args.db}"
        f"{', token' if token else ''}): {total} requests, "
        f"{sum(errors.values())} errors\n"
    )
    print("| request | count | errors | p50 ms | p95 ms |\n| --- | --- | --- | --- | --- |")
    for kind in ("space", "lasso", "selection", "page"):
        v = sorted(stats[kind])
        if not v:
            continue
        p95 = v[min(len(v) - 1, int(0.95 * len(v)))]
        print(f"| {kind} | {len(v)} | {errors[kind]} | {statistics.median(v):.0f} | {p95:.0f} |")


if __name__ == "__main__":
    main()
