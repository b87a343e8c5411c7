"""Ingest benchmark: a LLaVA-665K-shaped file (~1 GB) into SQLite and PostgreSQL.

    .venv/bin/python bench/ingest.py [--file /tmp/llava665k.json] [--n 665000] [--db sqlite,postgresql]

Generates the file with qspace.synthetic when it is missing, then ingests it once per backend, each in a
fresh child process so that its peak RSS (ru_maxrss) is the ingest's own. Targets (issue 2, 2 cores):
SQLite <= 60 s, PostgreSQL <= 90 s, peak memory <= 4 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(url: str, path: str) -> None:
    from backend.db import make_engine, make_session_factory, session_scope
    from backend.ingest import IngestOptions, ingest
    from backend.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    t = time.perf_counter()
    with session_scope(make_session_factory(engine)) as session:
        report = ingest(session, IngestOptions(name="llava665k", paths=[Path(path)], image_root=Path(path).parent))
    seconds = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "n": report.n_samples, "types": report.task_types}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--file", type=Path, default=Path("/tmp/llava665k.json"))
    p.add_argument("--n", type=int, default=665_000)
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--child", nargs=2, metavar=("URL", "FILE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    if not args.file.exists():
        from qspace.synthetic import make_llava665k_like

        t = time.perf_counter()
        make_llava665k_like(args.file, n=args.n)
        print(f"generated {args.file} in {time.perf_counter() - t:.0f} s")
    size = args.file.stat().st_size
    rows = []
    for db in args.db.split(","):
        if db == "sqlite":
            url = f"sqlite:///{tempfile.mkdtemp(prefix='qspace-ingest-')}/bench.db"
            drop = None
        else:
            from tests.conftest import create_pg_database, drop_pg_database

            url = create_pg_database("qspace_ingest_bench")
            drop = drop_pg_database
        try:
            out = subprocess.run(
                [sys.executable, __file__, "--child", url, str(args.file)],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
        finally:
            if drop is not None:
                drop(url)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((db, res))
        print(f"{db}: {res['n']:,} samples in {res['seconds']:.1f} s, peak RSS {res['peak_mb']:.0f} MB", flush=True)
    print("\n| backend | samples | file | seconds | samples/s | peak RSS | target |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for db, res in rows:
        target = "<= 60 s" if db == "sqlite" else "<= 90 s"
        print(
            f"| {db} | {res['n']:,} | {size / 1e9:.2f} GB | {res['seconds']:.1f} | "
            f"{res['n'] / res['seconds']:,.0f} | "
            f"{res['peak_mb'] / 1024:.2f} GB | {target}, <= 4 GB |"
        )


if __name__ == "__main__":
    main()
