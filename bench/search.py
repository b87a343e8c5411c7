"""Text search end to end (issue 17: <= 1 s): POST /api/datasets/{ds}/search through a real Celery worker.

    .venv/bin/python bench/search.py [--broker sqlite|redis] [--samples 200] [--layers 12] [--queries 20]

A dataset of --samples LLaVA-shaped samples is scored by the tiny open_clip CLIP (--layers per tower) with
``keep_embeddings``; then --queries different texts are searched over REST (the API asks a worker to embed the
text with the run's CLIP text tower on the ``default`` queue, waits for the answer, and ranks the kept embeddings
with faiss). The first query is reported apart (the worker loads the model); the rest as p50 / p95 / max. The
index search itself at 1M embeddings is ``bench/semantic.py --steps neighbours`` (the same index).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from backend.api.app import create_app  # noqa: E402
from backend.db import make_engine, make_session_factory  # noqa: E402
from backend.migrate import upgrade  # noqa: E402
from backend.settings import Settings  # noqa: E402
from tests.queue_helpers import (  # noqa: E402
    ingest_dataset,
    start_worker,
    stop_worker,
    wait_ready,
    wait_run,
    write_dataset,
)

WORDS = ["red", "blue", "square", "circle", "dog", "street", "kitchen", "two", "people", "a sign", "green"]


def queries(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [f"a photo of {' '.join(rng.choice(WORDS, size=3))} #{k}" for k in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", choices=("sqlite", "redis"), default="sqlite")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--queries", type=int, default=20)
    args = ap.parse_args()
    from workers.tiny_models import _write_clip

    with tempfile.TemporaryDirectory(prefix="qspace-search-") as tmp_name:
        tmp = Path(tmp_name)
        extra: dict = {}  # type: ignore[type-arg]
        if args.broker == "redis":  # a key prefix of its own: other runs may share this Redis
            extra = {
                "broker_url": "redis://127.0.0.1:6379/0",
                "broker_transport_options": {"global_keyprefix": f"qspace-search-{uuid.uuid4().hex[:6]}:"},
            }
        settings = Settings(data_dir=tmp / "data", image_roots=[tmp], data_roots=[tmp], chunk_size=64, **extra)
        settings.ensure_dirs()
        engine = make_engine(settings.sqlalchemy_url)
        upgrade(engine)
        _write_clip(tmp / "clip", args.layers)
        factory = make_session_factory(engine)
        ds = ingest_dataset(factory, write_dataset(tmp / "ds", args.samples), "ds")
        log = tmp / "worker.log"
        proc = start_worker(settings, log, "search", app="workers.celery_app", env={"OMP_NUM_THREADS": "1"})
        try:
            wait_ready(proc, log)
            with TestClient(create_app(settings, engine)) as client:
                params = {"model": str(tmp / "clip"), "num_workers": 0, "keep_embeddings": True}
                clip = client.post(f"/api/datasets/{ds}/runs", json={"kind": "clip", "params": params}).json()
                wait_run(factory, clip["id"], timeout=600)
                times = []
                for text in queries(args.queries + 1):
                    t0 = time.perf_counter()
                    r = client.post(f"/api/datasets/{ds}/search", json={"run": clip["id"], "text": text, "k": 24})
                    times.append(time.perf_counter() - t0)
                    assert r.status_code == 200 and len(r.json()["items"]) == 24, r.text
        finally:
            stop_worker(proc)
            engine.dispose()
    warm = np.asarray(times[1:]) * 1000
    print(f"text search, {args.broker} broker, {args.samples} samples, tiny CLIP {args.layers} layers, "
          f"{platform.machine()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"first query (worker loads the model): {times[0] * 1000:.0f} ms")
    p50, p95 = np.median(warm), np.quantile(warm, 0.95)
    print(f"next {len(warm)}: p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {warm.max():.0f} ms")


if __name__ == "__main__":
    main()
