#!/usr/bin/env python
"""Screenshots of the demo, taken in headless Chromium: docs/explore.png and docs/experiments.png (the README's).

Runs ``qspace demo --no-open --port PORT`` (everything cached after its first run), waits for the URL it prints and
opens a page in Debian's Chromium through Playwright:

- ``--page explore`` (default): waits for the plane and the gallery, colours the points by a field (default: the
  demo's ``defect`` label);
- ``--page experiments``: waits until the demo's experiment has finished (its table printed) and the Experiments
  page draws its results (arms beside their random controls, deltas with CIs);

then saves the PNG and stops the demo.

    .venv/bin/python scripts/screenshot.py [--page explore|experiments] [--out PNG] [--color defect|task_type]
        [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
URL_LINE = re.compile(r"open (http://\S+/explore\?ds=\d+)")
EXPERIMENT_DONE = re.compile(r"demo: experiment \d+ \w+ \(followed ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_demo(
    args: argparse.Namespace, port: int, experiment_done: threading.Event
) -> tuple[subprocess.Popen[str], str]:
    """The demo as a child process, and the explore URL once it serves (its output goes to our stderr);
    ``experiment_done`` is set when its experiment has finished."""
    env = dict(os.environ)
    if args.data_dir:
        env["QSPACE_DATA_DIR"] = str(Path(args.data_dir).resolve())
    cmd = [sys.executable, "-m", "qspace", "demo", "--size", str(args.size), "--seed", str(args.seed)]
    cmd += ["--port", str(port), "--no-open", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, bufsize=1)
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            m = URL_LINE.search(line)
            if m and not found:
                found.append(m.group(1))
                ready.set()
            if EXPERIMENT_DONE.search(line):
                experiment_done.set()
        ready.set()  # the demo ended
        experiment_done.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + args.timeout
    while not ready.wait(1.0):
        if time.monotonic() > deadline:
            stop_demo(proc)
            raise SystemExit(f"the demo did not serve within {args.timeout} s")
    if not found:
        raise SystemExit(f"the demo exited ({proc.poll()}) before serving")
    return proc, found[0]


def stop_demo(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C, as a user would: the demo stops its worker and its server."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pick(page: Any, dropdown: str, label: str | re.Pattern[str], timeout: float) -> None:
    """Choose the option showing ``label`` in a Dash dropdown."""
    page.locator(f"#{dropdown}").click()
    page.get_by_text(label, exact=True).first.click(timeout=timeout)


def shoot(url: str, out: Path, x_metric: str, color: str, size: tuple[int, int], chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    timeout = 120_000
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": size[0], "height": size[1]}, device_scale_factor=1)
            page.goto(url)
            page.wait_for_selector("g.draglayer g.xy rect.nsewdrag", timeout=timeout)  # the plane is drawn
            page.wait_for_selector(".gcard", timeout=timeout)  # the gallery shows samples
            if x_metric != "loss_sum":  # the paper's x axis is the default; loss_mean spreads long answers less
                pick(page, "explore-x", re.compile(rf"^mllm_loss {re.escape(x_metric)} \(run \d+\)$"), timeout)
                page.wait_for_timeout(1500)
            if color != "task_type":
                pick(page, "explore-color", f"Metadata: {color}", timeout)
                page.wait_for_selector("#explore-meta-wrap label", timeout=timeout)  # the value filter appears
            page.wait_for_timeout(2500)  # the plane redraws
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def shoot_experiments(url: str, out: Path, size: tuple[int, int], chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    timeout = 120_000
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": size[0], "height": size[1]}, device_scale_factor=1)
            page.goto(url)
            page.wait_for_selector(".xp-verdicts", timeout=timeout)  # the results table
            page.wait_for_selector(".xp-arms-figure .main-svg", timeout=timeout)  # the arms' CI figure
            page.wait_for_timeout(2000)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--page", choices=("explore", "experiments"), default="explore")
    ap.add_argument("--out", type=Path, help="default: docs/PAGE.png")
    ap.add_argument("--x", default="loss_mean", help="mllm_loss metric on the x axis (the page's default: loss_sum)")
    ap.add_argument("--color", default="defect", help="'task_type', or a metadata field of the samples")
    ap.add_argument("--size", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", help="qspace data directory (default: QSPACE_DATA_DIR or ~/.qspace)")
    ap.add_argument("--port", type=int, default=0, help="default: a free port")
    ap.add_argument("--width", type=int, default=1440)
    ap.add_argument("--height", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=1200, help="seconds for the demo to be ready (first run trains)")
    ap.add_argument("--chromium", default=os.environ.get("QSPACE_CHROMIUM", "/usr/bin/chromium"))
    args = ap.parse_args()
    out = args.out or REPO / "docs" / f"{args.page}.png"
    experiment_done = threading.Event()
    proc, url = start_demo(args, args.port or free_port(), experiment_done)
    try:
        if args.page == "experiments":
            if not experiment_done.wait(args.timeout):
                raise SystemExit(f"the demo's experiment did not finish within {args.timeout} s")
            url = url.replace("/explore?", "/experiments?")
            shoot_experiments(url, out, (args.width, args.height), args.chromium)
        else:
            shoot(url, out, args.x, args.color, (args.width, args.height), args.chromium)
    finally:
        stop_demo(proc)
    print(f"{out} ({url})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
