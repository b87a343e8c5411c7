"""`qspace demo`, the command: its steps in order, timed, then the app served until Ctrl-C."""

from __future__ import annotations

import time
import webbrowser
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import httpx

from backend.settings import Settings
from qspace.demo.data import ensure_dataset_files
from qspace.demo.figures import stored_figures, summary
from qspace.demo.ingest import dataset_name, ensure_ingested
from qspace.demo.messages import DemoError, Echo, say
from qspace.demo.models import ensure_models
from qspace.demo.runs import all_done, api_headers, follow_runs, post_runs, run_specs
from qspace.demo.serving import serving
from qspace.server import loopback_url

DEFAULT_SIZE = 3000


@dataclass
class DemoResult:
    dataset_id: int
    dataset_name: str
    url: str
    runs: dict[str, int]  # kind -> run id
    figures: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(
    settings: Settings,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    port: int = 8000,
    open_browser: bool = True,
    serve: bool = True,
    progress: bool = True,
    echo: Echo = say,
) -> DemoResult:
    """Build, score and (with ``serve``) serve the demo; returns what it did. Ctrl-C stops serving."""
    if size < 8:
        raise DemoError("--size must be at least 8")
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    settings.ensure_dirs()

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        seconds[name] = round(now - since, 1)
        return now

    folder = ensure_dataset_files(settings, size, seed, echo)
    t = lap("data", t0)
    models = ensure_models(settings, seed, echo)
    t = lap("models", t)
    name = dataset_name(size, seed)
    ds = ensure_ingested(settings, folder, name, echo)
    t = lap("ingest", t)

    with serving(settings, port if serve else 0, with_ui=serve, echo=echo) as app:
        with httpx.Client(base_url=app.base, headers=api_headers(settings), timeout=60) as client:
            specs = run_specs(models)
            if serve or not all_done(client, ds, specs):
                app.ensure_worker()  # before posting: it re-enqueues what an interrupted demo left unfinished
            runs = post_runs(client, ds, specs)
            pending = [k for k, r in runs.items() if r["status"] in ("queued", "running")]
            if pending:
                echo(f"demo: scoring {' and '.join(pending)} through the queue")
                runs = follow_runs(client, runs, app.ensure_worker(), progress=progress)
            else:
                echo("demo: both runs are scored already")
        t = lap("scoring", t)
        failed = {k: r for k, r in runs.items() if r["status"] != "done"}
        if failed:
            raise DemoError(
                "; ".join(f"{k} run {r['id']} {r['status']}: {r.get('message') or ''}" for k, r in failed.items())
            )
        figures = stored_figures(settings, ds, runs["clip"]["id"], runs["mllm_loss"]["id"])
        seconds["total"] = round(time.perf_counter() - t0, 1)
        url = f"{loopback_url(settings.host, app.port if serve else port)}/explore?ds={ds}"
        result = DemoResult(ds, name, url, {k: int(r["id"]) for k, r in runs.items()}, figures, seconds)
        echo(summary(figures))
        echo(f"demo: ready in {seconds['total']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())})")
        if not serve:
            echo(f"demo: done; `qspace serve` shows it at {url}")
            return result
        echo(f"\n  qspace demo: open {url}\n  (Ctrl-C stops the server)\n")
        if open_browser:
            with suppress(Exception):
                webbrowser.open(url)
        worker = app.ensure_worker()  # started above: the served demo always starts it
        with suppress(KeyboardInterrupt):
            while worker.alive() and app.server_alive():
                time.sleep(0.5)
            echo("demo: the scoring worker or the server stopped; exiting")
    return result
