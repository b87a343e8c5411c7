#!/usr/bin/env python
"""How long the README's first command takes on a fresh checkout: install, then until the explore page answers,
until the models are trained in the background, until the scored plane is there; then a second start.

Clones the committed HEAD of this repository into a temporary folder (``--worktree``: copies this working tree
instead, uncommitted changes included), installs it as ``scripts/demo`` does (``scripts/bootstrap demo``, pip's
cache off: every package comes from the registry) and times that on its own. Then it runs ``scripts/demo
--no-open`` with an empty data directory and clocks, from that start: the explore page answering, the models
trained (the ``demo_models`` job done), both runs scored (the plane's points all there), and the API's round
trips while the models trained; then, unless ``--no-experiment``, until the demo's experiment (issue 16) has
finished and printed its table. It stops the demo with Ctrl-C, starts it again (everything cached), clocks the
page and the "already scored" line, stops it, and prints the figures.

    python bench/demo_fresh.py [--keep DIR] [--size N] [--timeout S] [--worktree] [--no-experiment]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
URL_LINE = re.compile(r"open (http://\S+/explore\?ds=(\d+))")
PHASES = {  # name -> the line that marks it (the demo's own words)
    "ingested": "demo: ingested",
    "models trained": "demo models: trained in",
    "scored (terminal)": "swapped images vs clean",
    "already scored": "both runs are scored already",
    "experiment started": "started in the background:",
    "experiment finished": "(followed ",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def checkout(work: Path, worktree: bool) -> Path:
    clone = work / "qspace"
    if not worktree:
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        return clone
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for rel in (p.decode() for p in listed if p):
        src = REPO / rel
        if src.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / rel)
    return clone


class Demo:
    """One `scripts/demo` process: its output lines (echoed), when each phase's line came, its URL."""

    def __init__(self, clone: Path, env: dict[str, str], port: int, size: int | None) -> None:
        cmd = ["scripts/demo", "--no-open", "--no-progress", "--port", str(port)]
        cmd += ["--size", str(size)] if size else []
        self.t0 = time.perf_counter()
        self.marks: dict[str, float] = {}
        self.url: re.Match[str] | None = None
        self.got_url = threading.Event()
        self.proc = subprocess.Popen(
            cmd, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            sys.stderr.write(line)
            now = time.perf_counter() - self.t0
            for name, prefix in PHASES.items():
                if prefix in line and name not in self.marks:
                    self.marks[name] = now
            m = URL_LINE.search(line)
            if m and self.url is None:
                self.url = m
                self.got_url.set()
        self.got_url.set()

    def since(self) -> float:
        return time.perf_counter() - self.t0

    def page(self, timeout: float) -> tuple[str, int, float]:
        """(explore URL, dataset id, seconds until the page answered)."""
        if not self.got_url.wait(timeout) or self.url is None:
            raise SystemExit(f"the demo did not serve within {timeout:.0f} s (exit {self.proc.poll()})")
        url, ds = self.url.group(1), int(self.url.group(2))
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200
        return url, ds, self.since()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def follow(demo: Demo, base: str, ds: int, timeout: float) -> dict[str, Any]:
    """Poll the API until both runs are done: when the job ended, when the runs did, round trips meanwhile."""
    latency: list[float] = []
    job_done = scored = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and demo.proc.poll() is None:
        t = time.perf_counter()
        jobs = get_json(f"{base}/api/jobs?dataset_id={ds}")
        latency.append(time.perf_counter() - t)
        if job_done is None and jobs and all(j["status"] not in ("queued", "running") for j in jobs):
            job_done = demo.since()
        runs = get_json(f"{base}/api/datasets/{ds}/runs")
        if len(runs) == 2 and all(r["status"] == "done" for r in runs):
            scored = demo.since()
            break
        time.sleep(0.5)
    if scored is None:
        raise SystemExit(f"the runs were not scored within {timeout:.0f} s")
    return {"job_done": job_done, "scored": scored, "latency": latency, "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="check out here and keep it (default: a temporary folder, removed)")
    ap.add_argument("--size", type=int, default=None, help="demo samples (default: the demo's own)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--worktree", action="store_true", help="copy this working tree instead of cloning HEAD")
    ap.add_argument("--no-experiment", action="store_true", help="stop after scoring (no experiment wait)")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="qspace-fresh-"))
    clone, data = checkout(work, args.worktree), work / "data"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QSPACE_", "VIRTUAL_ENV"))}
    env.update(QSPACE_DATA_DIR=str(data), PIP_NO_CACHE_DIR="1")
    try:
        t0 = time.perf_counter()
        subprocess.run(["scripts/bootstrap", "demo"], cwd=clone, env=env, check=True)
        install_s = time.perf_counter() - t0

        port = free_port()
        first = Demo(clone, env, port, args.size)
        try:
            url, ds, page_s = first.page(args.timeout)
            base = url.split("/explore")[0]
            got = follow(first, base, ds, args.timeout)
            n = get_json(f"{base}/api/datasets/{ds}")["n_samples"]
            space = get_json(f"{base}/api/datasets/{ds}/space?x=loss&y=clip&format=json")
            assert len(space["ids"]) == n, (len(space["ids"]), n)
            deadline = time.monotonic() + args.timeout
            while not args.no_experiment and "experiment finished" not in first.marks:
                if time.monotonic() > deadline or first.proc.poll() is not None:
                    raise SystemExit("the demo's experiment did not finish")
                time.sleep(0.5)
        finally:
            first.stop()
        marks_first = dict(first.marks)

        second = Demo(clone, env, port, args.size)
        try:
            _, _, again_s = second.page(300)
            deadline = time.monotonic() + 300
            while "already scored" not in second.marks and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            second.stop()
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    lat = sorted(got["latency"])
    print(
        json.dumps(
            {
                "commit": head.strip() + (" + working tree" if args.worktree else ""),
                "samples": n,
                "install_s": round(install_s, 1),
                "seconds_to_explore_page": round(page_s, 1),
                "seconds_to_models_trained": round(got["job_done"], 1) if got["job_done"] else None,
                "seconds_to_scored_plane": round(got["scored"], 1),
                "phases_s": {k: round(v, 1) for k, v in marks_first.items()},
                "experiment_after_scoring_s": round(
                    marks_first["experiment finished"] - marks_first["scored (terminal)"], 1
                )
                if "experiment finished" in marks_first
                else None,
                "api_while_working_ms": {
                    "median": round(1000 * statistics.median(lat), 1),
                    "p95": round(1000 * lat[int(0.95 * (len(lat) - 1))], 1),
                    "max": round(1000 * lat[-1], 1),
                    "n": len(lat),
                },
                "second_start": {
                    "seconds_to_explore_page": round(again_s, 1),
                    "seconds_to_already_scored": round(second.marks["already scored"], 1)
                    if "already scored" in second.marks
                    else None,
                },
                "runs": {r["kind"]: (r["status"], r["done"], r["total"]) for r in got["runs"]},
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
