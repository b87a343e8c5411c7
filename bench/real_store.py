"""A 10M store with real rows in ~25 min, and the serving steps timed on it after a server restart.

`bench/scale.py --n 10000000` ingests and scores through the queue (~50 min) and drops the store; `--quick`
writes synthetic rows (two-turn records, 6 made-up task types). This builds the store between them: the real
file ingested (real conversations, task types, metadata), then a `length` run whose six metrics come from each
sample's stored question/answer characters (tokens ~ chars / 4: the real distribution's shape and ties, without
the 35-minute queue run) and a synthetic CLIP run, both COPYed in (`bench/quick_store.py`), and their column
files written as the worker that finishes a run writes them (timed).

    .venv/bin/python bench/real_store.py build --file /tmp/qs10m/llava10m.jsonl     # prints URL and DIR
    .venv/bin/python bench/real_store.py steps URL DIR [--x 1:tokens] [--y 2:similarity]

`steps`: a new API process, then the whole plane (the first request of the process), the same again, five
64-vertex lassos, the paper's top 10% and the top-right 3x3 cell, each saved as a selection. The explore page on
the same store: `bench/scale.py --ui-from URL,DIR,1`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quick_store  # noqa: E402
from space import lasso  # noqa: E402

from backend.db import make_engine, make_session_factory, session_scope  # noqa: E402
from backend.ingest import IngestOptions, ingest  # noqa: E402
from backend.migrate import upgrade  # noqa: E402
from backend.queue.columns import keep_run_columns  # noqa: E402
from tests.conftest import create_pg_database  # noqa: E402
from tests.live_server import served  # noqa: E402


def build(path: Path) -> None:
    url = create_pg_database("qspace_real")
    engine = make_engine(url)
    upgrade(engine)
    t = time.perf_counter()
    with session_scope(make_session_factory(engine)) as s:
        report = ingest(s, IngestOptions(name="scale", paths=[path], image_root=path.parent))
    print(f"ingest: {time.perf_counter() - t:.1f} s ({report.n_samples:,} samples)", flush=True)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(
            "SELECT question_chars, answer_chars FROM samples WHERE dataset_id = %s ORDER BY id", (report.dataset_id,)
        )
        chars = np.array(cur.fetchall(), dtype=np.float64)
    finally:
        raw.close()
    at = [0]

    def length(rng: np.random.Generator, size: int) -> dict[str, Any]:  # blocks come in id order
        q, a = (np.ceil(chars[at[0] : at[0] + size, k] / 4) for k in (0, 1))
        at[0] += size
        return quick_store.length_from_tokens(q, a)

    t = time.perf_counter()
    runs = [quick_store.write_run(engine, report.dataset_id, "length", length)]
    runs.append(quick_store.write_run(engine, report.dataset_id, "clip", quick_store.clip_metrics))
    print(f"runs (COPY): {time.perf_counter() - t:.1f} s", flush=True)
    data_dir = Path(tempfile.mkdtemp(prefix="qspace-real-"))
    for run in runs:  # what the worker that finishes a run does (backend/queue/columns.py)
        t = time.perf_counter()
        written = keep_run_columns(make_session_factory(engine), data_dir, run)
        print(f"run {run}: {written} column files written, as the queue does: {time.perf_counter() - t:.1f} s")
    print(f"URL {url}\nDIR {data_dir}")


def steps(url: str, data_dir: str, x: str, y: str) -> None:
    env = {**os.environ, "QSPACE_DATA_DIR": data_dir, "QSPACE_DATABASE_URL": url}
    with served(env, Path(data_dir) / "steps.log", options=("--no-worker",), timeout=120) as server:
        api = httpx.Client(base_url=server.api, timeout=1800)

        def timed(request: Any) -> float:
            t = time.perf_counter()
            request()
            return round(time.perf_counter() - t, 3)

        def plane() -> None:
            api.get("/datasets/1/space", params={"x": x, "y": y}).raise_for_status()

        def select(region: dict[str, Any]) -> None:
            api.post("/datasets/1/selections", json={"x": x, "y": y, "region": region}).raise_for_status()

        print(f"plane, first request of a new API process: {timed(plane)} s; again {timed(plane)} s", flush=True)
        q = api.get("/datasets/1/summary", params={"x": x, "y": y}).json()["quantiles"]
        mx, my = q["x"]["0.5"], q["y"]["0.5"]
        polys = [lasso(64, mx, my, mx * (0.5 + 0.1 * k), 0.05, k) for k in range(5)]
        lassos = [timed(lambda p=p: select({"type": "polygon", "points": p})) for p in polys]
        print("lasso (64 vertices), saved:", lassos)
        top = {"type": "top", "percent": 10, "axes": "both"}
        print("top 10% (DIQ), saved:", [timed(lambda: select(top)) for _ in range(3)])
        cell = {"type": "grid", "n": 3, "cell": [2, 2]}
        print("3x3 top-right cell, saved:", [timed(lambda: select(cell)) for _ in range(3)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--file", type=Path, default=Path("/tmp/qs10m/llava10m.jsonl"))
    s = sub.add_parser("steps")
    s.add_argument("url")
    s.add_argument("dir")
    s.add_argument("--x", default="1:tokens")
    s.add_argument("--y", default="2:similarity")
    args = p.parse_args()
    if args.command == "build":
        build(args.file)
    else:
        steps(args.url, args.dir, args.x, args.y)


if __name__ == "__main__":
    main()
