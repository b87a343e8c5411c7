"""Scale run: a LLaVA-665K-shaped dataset on PostgreSQL, end to end, with memory watched.

    .venv/bin/python bench/scale.py [--file /tmp/llava665k.json] [--workers 2] [--chunk 2048]

Steps, each timed: ingest (COPY) -> a `length` run scored through the queue (Redis broker, real
`qspace worker` processes, API in its own `qspace serve` process) -> a second run with synthetic
CLIP-like values written with COPY -> /space as Arrow -> a lasso selection -> the paper's 3-stage
curriculum and its zip export. The summed RSS of every process involved (this one, the API, the
workers and their children) is sampled every 0.2 s; the issue's bound is 6 GB.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from space import lasso  # noqa: E402

from backend.db import make_engine, make_session_factory, session_scope  # noqa: E402
from backend.ingest import IngestOptions, ingest  # noqa: E402
from backend.migrate import upgrade  # noqa: E402
from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402
from tests.live_server import served  # noqa: E402


class MemoryWatch(threading.Thread):
    """Peak of the summed RSS of this process and every descendant."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.2)


def timed(steps: list[tuple[str, float, str]], name: str, note: str = ""):  # type: ignore[no-untyped-def]
    class _T:
        def __enter__(self) -> _T:
            self.t = time.perf_counter()
            return self

        def __exit__(self, *exc: object) -> None:
            steps.append((name, time.perf_counter() - self.t, self.note))
            print(f"{name}: {steps[-1][1]:.1f} s {self.note}", flush=True)

    t = _T()
    t.note = note
    return t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--file", type=Path, default=Path("/tmp/llava665k.json"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=2048)
    args = p.parse_args()
    if not args.file.exists():
        from qspace.synthetic import make_llava665k_like

        make_llava665k_like(args.file)
    watch = MemoryWatch()
    watch.start()
    steps: list[tuple[str, float, str]] = []
    url = create_pg_database("qspace_scale")
    tmp = Path(tempfile.mkdtemp(prefix="qspace-scale-"))
    prefix = f"qspace-scale-{uuid.uuid4().hex[:6]}:"
    env = {
        **os.environ,
        "QSPACE_DATA_DIR": str(tmp),
        "QSPACE_DATABASE_URL": url,
        "QSPACE_BROKER_URL": "redis://127.0.0.1:6379/0",
        "QSPACE_CHUNK_SIZE": str(args.chunk),
        "QSPACE_BROKER_TRANSPORT_OPTIONS": f'{{"global_keyprefix": "{prefix}"}}',
    }
    procs: list[subprocess.Popen[bytes]] = []
    stack = contextlib.ExitStack()
    try:
        engine = make_engine(url)
        upgrade(engine)
        with timed(steps, "ingest 665k (PostgreSQL COPY)"), session_scope(make_session_factory(engine)) as s:
            report = ingest(s, IngestOptions(name="llava665k", paths=[args.file], image_root=args.file.parent))
        ds, n = report.dataset_id, report.n_samples
        api_server = stack.enter_context(served(env, tmp / "api.log", timeout=60))
        with (tmp / "worker.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "qspace",
                        "worker",
                        "--queues",
                        "gpu",
                        "--concurrency",
                        str(args.workers),
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        api = httpx.Client(base_url=api_server.api, timeout=600)
        with timed(steps, "length run through the queue", f"({args.workers} worker processes, chunks of {args.chunk})"):
            run = api.post(f"/datasets/{ds}/runs", json={"kind": "length", "params": {}}).raise_for_status().json()
            while run["status"] not in ("done", "failed", "cancelled"):
                time.sleep(1)
                run = api.get(f"/runs/{run['id']}").json()
        assert run["status"] == "done" and run["done"] == n, run
        with timed(steps, "synthetic CLIP-like run (COPY)"):
            raw = engine.raw_connection()
            try:
                cur = raw.cursor()
                cur.execute(
                    "INSERT INTO runs (dataset_id, kind, params, scorer_key, status, total, done, errors,"
                    " created_at, updated_at, finished_at) VALUES (%s, 'clip', '{}', 'synthetic', 'done',"
                    " %s, %s, 0, now(), now(), now()) RETURNING id",
                    (ds, n, n),
                )
                clip_run = cur.fetchone()[0]
                cur.execute("SELECT id FROM samples WHERE dataset_id = %s ORDER BY id", (ds,))
                ids = [r[0] for r in cur.fetchall()]
                vals = np.random.default_rng(0).normal(0.25, 0.05, len(ids))
                with cur.copy("COPY scores (run_id, sample_id, metrics) FROM STDIN") as copy:
                    for sid, v in zip(ids, vals, strict=True):
                        copy.write_row((clip_run, sid, f'{{"similarity": {float(v)!r}}}'))
                raw.commit()
            finally:
                raw.close()
        x, y = f"{run['id']}:tokens", f"{clip_run}:similarity"
        with timed(steps, "/space arrow, cold"):
            body = api.get(f"/datasets/{ds}/space", params={"x": x, "y": y}).raise_for_status().content
        with timed(steps, "/space arrow, warm", f"({len(body) / n:.1f} bytes/point)"):
            api.get(f"/datasets/{ds}/space", params={"x": x, "y": y}).raise_for_status()
        summary = api.get(f"/datasets/{ds}/summary", params={"x": x, "y": y}).json()["quantiles"]
        mx, my = summary["x"]["0.5"], summary["y"]["0.5"]
        poly = lasso(64, mx, my, mx * 0.8, 0.05, 1)
        with timed(steps, "lasso selection (64 vertices), saved"):
            sel = api.post(
                f"/datasets/{ds}/selections", json={"x": x, "y": y, "region": {"type": "polygon", "points": poly}}
            ).json()
        steps[-1] = (steps[-1][0], steps[-1][1], f"({sel['count']:,} samples)")
        builder = {
            "stages": 3,
            "x_min": mx,
            "y_min": my,
            "dx": (summary["x"]["0.9"] - mx) / 3,
            "dy": (summary["y"]["0.9"] - my) / 3,
            "per_stage": 2400,
            "seed": 0,
        }
        with timed(steps, "3-stage curriculum (2,400 per stage)"):
            cur = api.post(f"/datasets/{ds}/curricula", json={"x": x, "y": y, "builder": builder}).raise_for_status()
        with timed(steps, "curriculum zip export"):
            z = api.get(f"/curricula/{cur.json()['id']}/export").raise_for_status().content
        names = zipfile.ZipFile(io.BytesIO(z)).namelist()
        steps[-1] = (steps[-1][0], steps[-1][1], f"({len(z) / 1e6:.1f} MB, {len(names)} files)")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
        stack.close()
        watch.stop.set()
        watch.join()
        drop_pg_database(url)
    print(f"\n| step ({n:,} samples, PostgreSQL, Redis) | seconds | note |\n| --- | --- | --- |")
    for name, secs, note in steps:
        print(f"| {name} | {secs:.2f} | {note} |")
    print(f"| peak summed RSS of all processes | {watch.peak / 2**30:.2f} GB | bound: 6 GB |")


if __name__ == "__main__":
    main()
