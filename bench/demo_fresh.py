#!/usr/bin/env python
"""How long the README's first command takes on a fresh checkout: install, data, training, scoring, serving.

Clones the committed HEAD of this repository into a temporary folder, runs ``scripts/demo --no-open`` there with
an empty data directory and pip's cache off (as on a fresh machine: every package comes from the registry),
and stops the clock when the explore page answers. Then it checks what is served (two finished runs over the
whole dataset), stops the demo with Ctrl-C, and prints the phases.

    python bench/demo_fresh.py [--keep DIR] [--size N] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
URL_LINE = re.compile(r"open (http://\S+/explore\?ds=(\d+))")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="clone here and keep it (default: a temporary folder, removed)")
    ap.add_argument("--size", type=int, default=None, help="demo samples (default: the demo's own)")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="qspace-fresh-"))
    clone, data = work / "qspace", work / "data"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True).stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QSPACE_", "VIRTUAL_ENV"))}
    env.update(QSPACE_DATA_DIR=str(data), PIP_NO_CACHE_DIR="1")
    port = free_port()
    cmd = ["scripts/demo", "--no-open", "--port", str(port)] + (["--size", str(args.size)] if args.size else [])
    marks: dict[str, float] = {}
    found: list[re.Match[str]] = []
    ready = threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    phases = {
        "installed": "demo: writing a synthetic",
        "data written": "demo: training the tiny",
        "models trained": "demo: ingested",
        "scored": "swapped images vs clean",
    }

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            for name, prefix in phases.items():
                if prefix in line and name not in marks:
                    marks[name] = time.perf_counter() - t0
            m = URL_LINE.search(line)
            if m and not found:
                found.append(m)
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(args.timeout) or not found:
            raise SystemExit(f"the demo did not serve within {args.timeout:.0f} s (exit {proc.poll()})")
        url, ds = found[0].group(1), int(found[0].group(2))
        with urllib.request.urlopen(url, timeout=30) as r:  # the explore page itself answers
            assert r.status == 200
        elapsed = time.perf_counter() - t0
        base = url.split("/explore")[0]
        runs = get_json(f"{base}/api/datasets/{ds}/runs")
        dataset = get_json(f"{base}/api/datasets/{ds}")
        assert isinstance(runs, list) and isinstance(dataset, dict)
        done = {r["kind"]: (r["status"], r["done"], r["total"]) for r in runs}
        n = dataset["n_samples"]
        assert done == {"clip": ("done", n, n), "mllm_loss": ("done", n, n)}, done
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {
                "commit": head.strip(),
                "samples": n,
                "seconds_to_explore_page": round(elapsed, 1),
                "phases_s": {k: round(v, 1) for k, v in marks.items()},
                "runs": done,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
