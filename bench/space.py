"""Quality-space API benchmark on 1,000,000 synthetic scored points (issue 5's speed figures).

    .venv/bin/python bench/space.py [--n 1000000] [--db sqlite|postgresql]

Builds a dataset of N samples with two finished runs straight in the store (executemany/COPY), then
measures through the real FastAPI app in this process:
  - /space as Arrow: bytes per point, cold and warm latency (warm = median of 10);
  - polygon selection (64 and 1,000 vertices) server time: the resolve step, p50 of 20;
  - export of a 100,000-sample selection as LLaVA JSON and Parquet: time and peak traced memory;
  - the cold plane after a server restart (a new app, engine and space store on the same database and data
    directory), with and without persisted score columns (QSPACE_PERSIST_COLUMNS; backend/column_files.py).
    `--restart-only` measures just that.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient
from sqlalchemy import text

from backend import exports
from backend.api.app import create_app
from backend.db import make_engine, make_session_factory
from backend.migrate import upgrade
from backend.selections import SelectionRequest, resolve_selection
from backend.settings import Settings

TASKS = ("conversation", "complex_reasoning", "detail_description", "referring_qa")


def build(engine, n: int) -> int:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    conv = orjson.dumps(
        [
            {"from": "human", "value": "<image>\nWhat is shown in the image? Describe the scene briefly."},
            {"from": "gpt", "value": "A red circle sits left of a blue square on a white background. " * 3},
        ]
    ).decode()
    with engine.begin() as conn:
        ds = conn.execute(
            text(
                "INSERT INTO datasets (name, image_root, sources, task_type_prompts, n_samples, created_at) "
                "VALUES ('bench', '/tmp', '[]', '{}', :n, CURRENT_TIMESTAMP) RETURNING id"
            ),
            {"n": n},
        ).scalar_one()
        batch = 100_000
        for start in range(0, n, batch):
            rows = [
                (ds, i, f"s{i}", f'"coco/{i:012d}.jpg"', conv, TASKS[i % 4], 1, 60, 180, '{"defect": "none"}')
                for i in range(start, min(n, start + batch))
            ]
            conn.exec_driver_sql(
                "INSERT INTO samples (dataset_id, position, external_id, image, conversations, task_type, n_turns,"
                " question_chars, answer_chars, metadata) VALUES (?,?,?,?,?,?,?,?,?,?)"
                if engine.dialect.name == "sqlite"
                else "INSERT INTO samples (dataset_id, position, external_id, image, conversations, task_type, n_turns,"
                " question_chars, answer_chars, metadata) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                rows,
            )
        runs = []
        for kind, key in (("clip", "bench-clip"), ("mllm_loss", "bench-loss")):
            runs.append(
                conn.execute(
                    text(
                        "INSERT INTO runs (dataset_id, kind, params, scorer_key, status, total, done, errors,"
                        " created_at, updated_at) VALUES (:ds, :k, '{}', :key, 'done', :n, :n, 0,"
                        " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id"
                    ),
                    {"ds": ds, "k": kind, "key": key, "n": n},
                ).scalar_one()
            )
        ids = [
            r[0] for r in conn.execute(text("SELECT id FROM samples WHERE dataset_id = :ds ORDER BY id"), {"ds": ds})
        ]
        clip = rng.normal(0.25, 0.05, n)
        loss = rng.gamma(2.0, 5.0, n)
        ph = "?" if engine.dialect.name == "sqlite" else "%s"
        for start in range(0, n, batch):
            sl = slice(start, start + batch)
            conn.exec_driver_sql(
                f"INSERT INTO scores (run_id, sample_id, metrics, error) VALUES ({ph},{ph},{ph},NULL)",
                [(runs[0], i, f'{{"similarity": {float(v)!r}}}') for i, v in zip(ids[sl], clip[sl], strict=True)],
            )
            conn.exec_driver_sql(
                f"INSERT INTO scores (run_id, sample_id, metrics, error) VALUES ({ph},{ph},{ph},NULL)",
                [
                    (runs[1], i, f'{{"loss_sum": {float(v)!r}, "loss_mean": {float(v) / 30!r}}}')
                    for i, v in zip(ids[sl], loss[sl], strict=True)
                ],
            )
    return int(ds)


def lasso(k: int, cx: float, cy: float, rx: float, ry: float, seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    ang = np.linspace(0, 2 * np.pi, k, endpoint=False)
    rad = 1 + 0.3 * np.sin(5 * ang) + rng.uniform(-0.05, 0.05, k)
    return [[cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)] for a, r in zip(ang, rad, strict=True)]


def ms(f, repeat: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), max(times)


def cold_after_restart(url: str, data_dir: Path, ds: int, repeat: int = 3) -> list[tuple[str, str, str]]:
    """First /space after a restart, from SQL (persisting off) and from the column files: median of `repeat`
    restarts each, every one a new process (imports included, as a restarted server has them to do); the files
    are written by a first server before."""

    def first_request(persist: bool) -> tuple[float, int]:
        out = subprocess.run(
            [sys.executable, __file__, "--probe", url, str(data_dir), str(ds), str(int(persist))],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        return float(out[-2]), int(out[-1])

    first_request(True)  # the first server after the scores landed: reads SQL and writes the files
    sql = [first_request(False)[0] for _ in range(repeat)]
    got = [first_request(True) for _ in range(repeat)]
    assert all(reads == 3 for _, reads in got), got  # dataset + two columns, all from files
    size = sum(p.stat().st_size for p in (data_dir / "columns").rglob("*.arrow"))
    return [
        ("/space cold after restart, SQL only, median of 3 (ms)", f"{statistics.median(sql):.0f}", "-"),
        (
            f"/space cold after restart, persisted columns, median of 3 (ms; files {size / 1e6:.0f} MB)",
            f"{statistics.median(t for t, _ in got):.0f}",
            "<= 300",
        ),
    ]


def probe(url: str, data_dir: str, ds: str, persist: str) -> None:
    """One restarted server's first /space: prints its time (ms) and how many columns came from files."""
    engine = make_engine(url)
    app = create_app(Settings(data_dir=Path(data_dir), database_url=url, persist_columns=persist == "1"), engine)
    with TestClient(app) as client:
        t = time.perf_counter()
        r = client.get(f"/api/datasets/{ds}/space", params={"x": "loss", "y": "clip"})
        dt = (time.perf_counter() - t) * 1000
        assert r.status_code == 200, r.text
    files = app.state.space.files
    print(f"{dt:.1f} {files.reads if files else 0}")


def main() -> None:
    if sys.argv[1:2] == ["--probe"]:
        probe(*sys.argv[2:6])
        return
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--restart-only", action="store_true", help="measure only the cold plane after a restart")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qspace-bench-"))
    if args.db == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from tests.conftest import create_pg_database

        url = create_pg_database("qspace_bench")
    engine = make_engine(url)
    upgrade(engine)
    t = time.perf_counter()
    ds = build(engine, args.n)
    print(f"built {args.n:,} samples + 2 runs in {time.perf_counter() - t:.1f} s ({args.db})")

    rows = cold_after_restart(url, tmp / "data", ds)
    if args.restart_only:
        report(rows, args.n, args.db)
        return
    # A data dir of its own: the cold figure below stays the first request after scores change (no files).
    settings = Settings(data_dir=tmp / "data-main", database_url=url, max_request_bytes=64 << 20)
    app = create_app(settings, engine)
    with TestClient(app) as client:
        t = time.perf_counter()
        r = client.get(f"/api/datasets/{ds}/space", params={"x": "loss", "y": "clip"})
        cold = (time.perf_counter() - t) * 1000
        assert r.status_code == 200, r.text
        bpp = len(r.content) / args.n
        warm, warm_max = ms(lambda: client.get(f"/api/datasets/{ds}/space", params={"x": "loss", "y": "clip"}), 10)
        rows += [
            ("/space arrow bytes per point", f"{bpp:.2f}", "<= 12.5"),
            ("/space arrow cold (ms)", f"{cold:.0f}", "-"),
            ("/space arrow warm p50 / max (ms)", f"{warm:.0f} / {warm_max:.0f}", "<= 300"),
        ]

        factory = make_session_factory(engine)
        store = app.state.space
        for k, limit in ((64, 50), (1000, 200)):
            req = SelectionRequest(
                region={"type": "polygon", "points": lasso(k, 10, 0.25, 6, 0.05, k)}, exclude_errors=False
            )

            def resolve(req: SelectionRequest = req) -> int:
                with factory() as s:
                    return len(resolve_selection(s, store, ds, req).ids)

            count = resolve()
            p50, worst = ms(resolve, 20)
            rows.append(
                (
                    f"polygon {k} vertices, server time p50 / max (ms), {count:,} inside",
                    f"{p50:.1f} / {worst:.1f}",
                    f"<= {limit}",
                )
            )
            http = ms(
                lambda req=req: client.post(
                    f"/api/datasets/{ds}/selections/preview", json={**req.model_dump(mode="json"), "limit": 12}
                ),
                10,
            )[0]
            rows.append((f"polygon {k} vertices, preview round trip p50 (ms)", f"{http:.0f}", "-"))

        sel = client.post(
            f"/api/datasets/{ds}/selections",
            json={"region": {"type": "all"}, "sample": {"n": 100_000, "seed": 0}, "exclude_errors": False},
        ).json()
        from backend.models import Selection
        from backend.selections import ids_from_bytes

        with factory() as s:
            ids = ids_from_bytes(s.get(Selection, sel["id"]).sample_ids)

        def export(fmt: str) -> int:
            path = tmp / f"x.{fmt}"
            with path.open("wb") as sink:
                exports.write_selection(factory, store, ds, ids, fmt, sink)
            return path.stat().st_size

        for fmt, limit in (("llava", "<= 5 s"), ("parquet", "<= 1 s"), ("jsonl", "-"), ("ids", "-")):
            export(fmt)  # warm: score columns loaded, imports done
            dt = ms(lambda fmt=fmt: export(fmt), 3)[0] / 1000
            # Peak memory in a separate pass: tracemalloc slows allocation-heavy code several-fold.
            gc.collect()
            tracemalloc.start()
            size = export(fmt)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            rows.append(
                (
                    f"export 100,000 as {fmt}: s p50 of 3 (file MB, peak traced MB)",
                    f"{dt:.2f} ({size / 1e6:.0f}, {peak / 1e6:.0f})",
                    limit,
                )
            )
        if True:
            data = json.loads((tmp / "x.llava").read_bytes())
            assert len(data) == 100_000 and set(data[0]) == {"id", "image", "conversations"}

    report(rows, args.n, args.db)


def report(rows: list[tuple[str, str, str]], n: int, db: str) -> None:
    print(f"\n| measure ({n:,} points, {db}) | value | target |\n| --- | --- | --- |")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")


if __name__ == "__main__":
    main()
