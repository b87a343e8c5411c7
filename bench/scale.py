"""Scale run: a LLaVA-shaped dataset (665K by default, 10M with --n) on PostgreSQL, end to end, memory watched.

    .venv/bin/python bench/scale.py [--n 665000] [--file PATH] [--workers 2] [--chunk 2048] [--ui-reps 2] [--quick]

Steps, each timed: ingest (COPY, streamed) -> a `length` run scored through the queue (Redis broker, real
`qspace worker` processes, API + UI in their own `qspace serve` process; the worker that finishes it writes its
column files and analyzes the scores table) -> a second run with synthetic CLIP-like values written with COPY
(followed by what a worker does then) -> /space as Arrow (whole, and the UI's density-aware sample) -> the plane
after a server restart (persisted columns) -> lassos (64 vertices, p50 of 5) -> the paper's top 10% and a 3x3
cell -> the 3-stage curriculum and its zip export -> a 1M random selection exported as LLaVA JSON -> the explore
page in headless Chromium (interactive, lasso -> count, the largest response it gets). The summed RSS of every
process involved (this one, the API, the workers and their children) and the API process's own are sampled
every 0.2 s; the bounds are 6 GB summed, 3 GB for the API.
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

import quick_store  # noqa: E402
from space import lasso  # noqa: E402

from backend.db import make_engine, make_session_factory, session_scope  # noqa: E402
from backend.ingest import IngestOptions, ingest  # noqa: E402
from backend.migrate import upgrade  # noqa: E402
from backend.queue.finished import after_run_done  # noqa: E402
from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402
from tests.live_server import served  # noqa: E402


class MemoryWatch(threading.Thread):
    """Peak of the summed RSS of this process and every descendant, and of the API process (``api_pid``)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.api_peak = 0
        self.api_pid: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    rss = p.memory_info().rss
                    total += rss
                    if p.pid == self.api_pid:
                        self.api_peak = max(self.api_peak, rss)
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


def write_synthetic_clip_run(engine, ds: int, n: int) -> int:  # type: ignore[no-untyped-def]
    """A finished `clip` run with normal(0.25, 0.05) similarities for every sample, COPYed in."""
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
        # The ids a block at a time from a server-side cursor into one int64 array (80 MB at 10M; a list of
        # Python ints would be ~10x that), read before the COPY: a connection in COPY runs no other query.
        ids_cur = raw.cursor(name="scale_ids")
        ids_cur.itersize = 100_000
        ids_cur.execute("SELECT id FROM samples WHERE dataset_id = %s ORDER BY id", (ds,))
        blocks = []
        while block := ids_cur.fetchmany(100_000):
            blocks.append(np.fromiter((r[0] for r in block), dtype=np.int64, count=len(block)))
        ids_cur.close()
        ids = np.concatenate(blocks) if blocks else np.empty(0, np.int64)
        vals = np.random.default_rng(0).normal(0.25, 0.05, len(ids))
        with cur.copy("COPY scores (run_id, sample_id, metrics) FROM STDIN") as copy:
            for i in range(0, len(ids), 100_000):
                for sid, v in zip(ids[i : i + 100_000].tolist(), vals[i : i + 100_000].tolist(), strict=True):
                    copy.write_row((clip_run, sid, f'{{"similarity": {v!r}}}'))
        raw.commit()
    finally:
        raw.close()
    return int(clip_run)


def wait_columns(log: Path, run_id: int, timeout: float = 900) -> None:
    """Until the worker that finished the run says it wrote the run's column files."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in log.read_text(errors="replace").splitlines() if f"run {run_id}: " in line]
        if any("column file(s)" in line for line in lines):
            return
        if any("could not write its column files" in line for line in lines):
            raise RuntimeError(f"run {run_id}: the worker could not write its column files (see {log})")
        time.sleep(1)
    raise TimeoutError(f"run {run_id}: no column files after {timeout} s")


def wait_run(api: httpx.Client, run: dict) -> dict:  # type: ignore[type-arg]
    while run["status"] not in ("done", "failed", "cancelled"):
        time.sleep(1)
        run = api.get(f"/runs/{run['id']}").json()
    return run


def median_ms(f, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for k in range(repeat):
        t = time.perf_counter()
        f(k)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def ui_only(url: str, data_dir: str, ds: str, reps: int) -> None:
    """The explore page in headless Chromium on a store a ``--keep`` run left (the UI measured again, alone)."""
    from ui import run_browser

    env = {**os.environ, "QSPACE_DATA_DIR": data_dir, "QSPACE_DATABASE_URL": url}
    with served(env, Path(data_dir) / "api-ui.log", options=("--no-worker",), timeout=120) as server:
        got = run_browser(server.url, int(ds), reps, 3)
    print(f"interactive {[round(t, 2) for t in got['interactive']]} s, lasso {[round(t, 2) for t in got['lasso']]} s,"
          f" largest response {max(got['responses'], default=0) / 1e6:.2f} MB")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=665_000, help="samples to generate when --file does not exist")
    p.add_argument("--file", type=Path, default=None, help="default /tmp/llava665k.json, /tmp/llava{n}.jsonl")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=2048)
    p.add_argument("--export-n", type=int, default=1_000_000, help="size of the random selection exported")
    p.add_argument("--ui-reps", type=int, default=2, help="explore page loads in headless Chromium (0: none)")
    p.add_argument("--keep", action="store_true", help="keep the database and data directory (for --ui-from)")
    p.add_argument("--ui-from", metavar="URL,DIR,DS", help="only the explore page, on a store --keep left")
    p.add_argument(
        "--quick",
        action="store_true",
        help="samples and both runs COPYed in, synthetic (bench/quick_store.py): the API and UI steps only",
    )
    args = p.parse_args()
    if args.ui_from:
        return ui_only(*args.ui_from.split(","), reps=args.ui_reps or 2)
    path = args.file or Path("/tmp/llava665k.json" if args.n == 665_000 else f"/tmp/llava{args.n}.jsonl")
    if not path.exists() and not args.quick:
        from qspace.synthetic import make_llava665k_like

        make_llava665k_like(path, n=args.n)
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
    ui: dict = {}  # type: ignore[type-arg]
    try:
        engine = make_engine(url)
        upgrade(engine)
        if args.quick:
            with timed(steps, "synthetic samples (COPY, no ingest)", f"({args.n:,} samples)"):
                ds, n = quick_store.write_dataset(engine, "scale", args.n), args.n
            with timed(steps, "synthetic length-like and CLIP-like runs (COPY, no queue)"):
                run = {"id": quick_store.write_run(engine, ds, "length", quick_store.length_metrics)}
                clip_run = quick_store.write_run(engine, ds, "clip", quick_store.clip_metrics)
            with timed(steps, "ANALYZE and their column files, as the worker that finishes a run does"):
                for r in (run["id"], clip_run):
                    after_run_done(make_session_factory(engine), tmp, r)
        else:
            with timed(steps, "ingest (PostgreSQL COPY, streamed)"), session_scope(make_session_factory(engine)) as s:
                report = ingest(s, IngestOptions(name="scale", paths=[path], image_root=path.parent))
            ds, n = report.dataset_id, report.n_samples
            steps[-1] = (steps[-1][0], steps[-1][1], f"({n:,} samples, {path.stat().st_size / 1e9:.1f} GB)")
        api_server = stack.enter_context(served(env, tmp / "api.log", options=("--no-worker",), timeout=60))
        watch.api_pid = api_server.process.pid
        api = httpx.Client(base_url=api_server.api, timeout=1800)
        if not args.quick:
            with (tmp / "worker.log").open("wb") as log:
                argv = [sys.executable, "-m", "qspace", "worker", "--queues", "gpu", "--concurrency", str(args.workers)]
                procs.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
            note = f"({args.workers} worker processes, chunks of {args.chunk})"
            with timed(steps, "length run through the queue", note):
                run = wait_run(api, api.post(f"/datasets/{ds}/runs", json={"kind": "length", "params": {}}).json())
            assert run["status"] == "done" and run["done"] == n, run
            with timed(steps, "then the worker's column files (backend/queue/columns.py)"):
                wait_columns(tmp / "worker.log", run["id"])
            with timed(steps, "synthetic CLIP-like run (COPY)"):
                clip_run = write_synthetic_clip_run(engine, ds, n)
            with timed(steps, "ANALYZE and its column file, as the worker that finishes a run does"):
                after_run_done(make_session_factory(engine), tmp, clip_run)
        x, y = f"{run['id']}:tokens", f"{clip_run}:similarity"
        with timed(steps, "/space arrow, cold (from SQL, then kept as columns)"):
            body = api.get(f"/datasets/{ds}/space", params={"x": x, "y": y}).raise_for_status().content
        with timed(steps, "/space arrow, warm", f"({len(body) / n:.1f} bytes/point, {len(body) / 1e6:.0f} MB)"):
            api.get(f"/datasets/{ds}/space", params={"x": x, "y": y}).raise_for_status()
        del body
        with timed(steps, "/space?max_points=200000 (the UI's sample)"):
            size = len(api.get(f"/datasets/{ds}/space", params={"x": x, "y": y, "max_points": 200_000}).content)
        steps[-1] = (steps[-1][0], steps[-1][1], f"({size / 1e6:.1f} MB)")
        # A restart: the new process reads the persisted column files, not the JSON rows.
        stack.close()
        stack = contextlib.ExitStack()
        api_server = stack.enter_context(served(env, tmp / "api2.log", options=("--no-worker",), timeout=120))
        watch.api_pid = api_server.process.pid
        api = httpx.Client(base_url=api_server.api, timeout=1800)
        with timed(steps, "/space arrow after a server restart (persisted columns)"):
            api.get(f"/datasets/{ds}/space", params={"x": x, "y": y}).raise_for_status()
        summary = api.get(f"/datasets/{ds}/summary", params={"x": x, "y": y}).json()["quantiles"]
        mx, my = summary["x"]["0.5"], summary["y"]["0.5"]

        def select(region: dict, **extra: object) -> dict:  # type: ignore[type-arg]
            body = {"x": x, "y": y, "region": region, **extra}
            return api.post(f"/datasets/{ds}/selections", json=body).raise_for_status().json()  # type: ignore[no-any-return]

        counts: list[int] = []
        polys = [lasso(64, mx, my, mx * (0.5 + 0.1 * k), 0.05, k) for k in range(5)]
        p50 = median_ms(lambda k: counts.append(select({"type": "polygon", "points": polys[k]})["count"]), 5)
        note = f"({min(counts):,}-{max(counts):,} samples)"
        steps.append(("lasso selection (64 vertices), saved, p50 of 5", p50 / 1000, note))
        p50 = median_ms(lambda k: select({"type": "top", "percent": 10, "axes": "both"}), 3)
        steps.append(("top 10% by both axes (DIQ), saved, p50 of 3", p50 / 1000, ""))
        p50 = median_ms(lambda k: select({"type": "grid", "n": 3, "cell": [2, 2]}), 3)
        steps.append(("3x3 grid, top-right cell, saved, p50 of 3", p50 / 1000, ""))
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
        big = select({"type": "all"}, sample={"n": min(args.export_n, n), "seed": 0})
        with timed(steps, f"export of a {big['count']:,}-sample selection (LLaVA JSON, streamed)"):
            size = 0
            with api.stream("GET", f"/selections/{big['id']}/export", params={"format": "llava"}) as resp:
                for part in resp.raise_for_status().iter_bytes():
                    size += len(part)
        steps[-1] = (steps[-1][0], steps[-1][1], f"({size / 1e9:.2f} GB)")
        if args.ui_reps:
            from ui import run_browser

            ui = run_browser(api_server.url, ds, args.ui_reps, 3)
            loads, lassos = ui["interactive"], ui["lasso"]
            steps.append(("explore page interactive, median", float(np.median(loads)), f"({len(loads)} loads)"))
            steps.append(("lasso -> count + gallery, median", float(np.median(lassos)), f"({len(lassos)} lassos)"))
            biggest = max(ui["responses"], default=0) / 1e6
            note = f"MB (largest request body {max(ui['bodies'], default=0) / 1e3:.0f} KB)"
            steps.append(("largest response the UI receives", biggest, note))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
        stack.close()
        watch.stop.set()
        watch.join()
        if args.keep:
            print(f"kept: --ui-from {url},{tmp},{ds}")
        else:
            drop_pg_database(url)
    print(f"\n| step ({n:,} samples, PostgreSQL, Redis) | seconds | note |\n| --- | --- | --- |")
    for name, secs, note in steps:
        print(f"| {name} | {secs:.2f} | {note} |")
    print(f"| peak RSS of the API process | {watch.api_peak / 2**30:.2f} GB | bound: 3 GB |")
    print(f"| peak summed RSS of all processes | {watch.peak / 2**30:.2f} GB | bound: 6 GB |")


if __name__ == "__main__":
    main()
