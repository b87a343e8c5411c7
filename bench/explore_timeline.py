"""The explore page's first loads on a kept store, each Dash callback timed: where a slow first paint goes.

    .venv/bin/python bench/explore_timeline.py URL,DATA_DIR,DATASET [--reps 2]

Starts a new API process on the store (what a restart is: nothing cached in memory, the column files on disk),
opens the page `--reps` times in headless Chromium and prints, per callback, when the browser sent it and when the
answer came (seconds from navigation), then the time until the plane, the count and the gallery are all shown.
The store is what `bench/scale.py --keep` leaves (it prints the URL,DIR,DS to pass).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ui import CHROMIUM, CHROMIUM_ARGS, PLANE_READY  # noqa: E402

from tests.live_server import served  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("store", metavar="URL,DIR,DS")
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    url, data_dir, ds = args.store.split(",")
    env = {**os.environ, "QSPACE_DATA_DIR": data_dir, "QSPACE_DATABASE_URL": url}
    log = Path(data_dir) / "api-timeline.log"
    with served(env, log, options=("--no-worker",), timeout=120) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for rep in range(args.reps):
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            t0 = time.perf_counter()
            sent: dict[int, tuple[float, str]] = {}

            def on_request(req: Any, sent: dict[int, tuple[float, str]] = sent, t0: float = t0) -> None:
                if "_dash-update-component" in req.url:
                    outputs = json.loads(req.post_data or "{}").get("output", "")
                    sent[id(req)] = (time.perf_counter() - t0, outputs[:80])

            def on_response(resp: Any, sent: dict[int, tuple[float, str]] = sent, t0: float = t0) -> None:
                if id(resp.request) in sent:
                    start, outputs = sent[id(resp.request)]
                    print(f"  {start:6.2f} -> {time.perf_counter() - t0:6.2f} s  {outputs}")

            page.on("request", on_request)
            page.on("response", on_response)
            page.goto(f"{server.url}/explore?ds={ds}")
            page.wait_for_function(PLANE_READY, timeout=90_000, polling=20)
            print(f"load {rep + 1}: interactive in {time.perf_counter() - t0:.2f} s", flush=True)
            page.wait_for_timeout(1500)
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
