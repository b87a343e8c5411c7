"""`qspace demo`, the command: its steps in order, timed, then the app served until Ctrl-C."""

from __future__ import annotations

import time
import webbrowser
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backend.settings import Settings
from qspace.demo.background import Training, end_training_job, follow_training, start_training, stop_training
from qspace.demo.data import ensure_dataset_files
from qspace.demo.experiment import follow_experiment, result_table, start_experiment
from qspace.demo.experiment_base import prepare_experiments
from qspace.demo.figures import stored_figures, summary
from qspace.demo.ingest import dataset_name, ensure_ingested
from qspace.demo.messages import DemoError, Echo, say
from qspace.demo.models import cached_model_paths, ensure_models
from qspace.demo.runs import all_done, api_headers, follow_runs, post_runs, run_specs
from qspace.demo.serving import Services, serving
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
    experiment: dict[str, Any] | None = None  # the demo's experiment as served, when it ran


class _Laps:
    """Seconds per step, and since the start."""

    def __init__(self) -> None:
        self.t0 = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.last, 1)
        self.last = now

    def total(self) -> float:
        self.seconds["total"] = round(time.perf_counter() - self.t0, 1)
        return self.seconds["total"]

    def line(self) -> str:
        return ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())


def run_demo(
    settings: Settings,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    port: int = 8000,
    open_browser: bool = True,
    serve: bool = True,
    progress: bool = True,
    echo: Echo = say,
    experiment: bool = True,
) -> DemoResult:
    """Build, score and (with ``serve``) serve the demo; returns what it did. Ctrl-C stops serving.

    Served, the app answers as soon as the dataset is written and ingested; the models train and the runs score
    in the background, then (with ``experiment``) the paper's picks train against random controls
    (:func:`serve_at_once`). With ``serve=False`` every step up to scoring finishes before it returns
    (:func:`build_synchronously`)."""
    if size < 8:
        raise DemoError("--size must be at least 8")
    laps = _Laps()
    settings.ensure_dirs()
    folder = ensure_dataset_files(settings, size, seed, echo)
    laps.lap("data")
    if not serve:
        return build_synchronously(settings, folder, size, seed, port, progress, echo, laps)
    name = dataset_name(size, seed)
    ds = ensure_ingested(settings, folder, name, echo)
    laps.lap("ingest")
    return serve_at_once(settings, ds, name, seed, port, open_browser, progress, echo, laps, experiment)


def build_synchronously(
    settings: Settings, folder: Path, size: int, seed: int, port: int, progress: bool, echo: Echo, laps: _Laps
) -> DemoResult:
    """``qspace demo --no-serve``: models, dataset, both runs scored, figures; then it returns."""
    models = ensure_models(settings, seed, echo)
    laps.lap("models")
    name = dataset_name(size, seed)
    ds = ensure_ingested(settings, folder, name, echo)
    laps.lap("ingest")
    with (
        serving(settings, 0, with_ui=False, echo=echo) as app,
        httpx.Client(base_url=app.base, headers=api_headers(settings), timeout=60) as client,
    ):
        prepare_experiments(client, settings, ds, models, seed, echo)
        specs = run_specs(models)
        if not all_done(client, ds, specs):
            app.ensure_worker()  # before posting: it re-enqueues what an interrupted demo left unfinished
        runs = score(client, app, post_runs(client, ds, specs), progress, echo)
    laps.lap("scoring")
    failed = failures(runs)
    if failed:
        raise DemoError(failed)
    figures = stored_figures(settings, ds, runs["clip"]["id"], runs["mllm_loss"]["id"])
    laps.total()
    url = f"{loopback_url(settings.host, port)}/explore?ds={ds}"
    echo(summary(figures))
    echo(f"demo: ready in {laps.seconds['total']:.0f} s ({laps.line()})")
    echo(f"demo: done; `qspace serve` shows it at {url}")
    return DemoResult(ds, name, url, {k: int(r["id"]) for k, r in runs.items()}, figures, laps.seconds)


def serve_at_once(
    settings: Settings,
    ds: int,
    name: str,
    seed: int,
    port: int,
    open_browser: bool,
    progress: bool,
    echo: Echo,
    laps: _Laps,
    experiment: bool = True,
) -> DemoResult:
    """The app served now; then, while it answers, the models trained (a ``demo_models`` job, when the cache
    lacks them), both runs scored, and (with ``experiment``) the demo's experiment trained and evaluated, with
    their progress in the terminal and in the UI. Serves until Ctrl-C."""
    with serving(settings, port, with_ui=True, echo=echo) as app:
        laps.lap("serving")
        url = f"{loopback_url(settings.host, app.port)}/explore?ds={ds}"
        result = DemoResult(ds, name, url, {}, {}, laps.seconds)
        training: Training | None = None
        try:  # Ctrl-C from here on stops the demo cleanly, whatever it is doing
            worker = app.ensure_worker()  # before posting: it re-enqueues what an interrupted demo left unfinished
            echo(f"\n  qspace demo: open {url}\n  (Ctrl-C stops the server)\n")
            echo(f"demo: the app answers after {time.perf_counter() - laps.t0:.0f} s")
            if open_browser:
                with suppress(Exception):
                    webbrowser.open(url)
            with httpx.Client(base_url=app.base, headers=api_headers(settings), timeout=60) as client:
                models = cached_model_paths(settings, seed)
                if models is None:
                    echo(
                        "demo: training the tiny CLIP and LLaVA in the background (about 2.5 minutes on 2 cores, "
                        "once); the app shows the progress on its Datasets page"
                    )
                    training = start_training(settings, ds, seed)
                    models = follow_training(client, settings, training, progress=progress, echo=echo)
                else:
                    echo(f"demo: models from the cache ({models.clip.parent})")
                laps.lap("models")
                if models is not None:
                    runs = post_runs_for(client, settings, training, ds, run_specs(models))
                    training = None
                    try:
                        prepare_experiments(client, settings, ds, models, seed, echo)
                    except (DemoError, OSError, ValueError) as exc:  # experiments wait; the plane need not
                        echo(f"demo: experiments not prepared: {exc}")
                    runs = score(client, app, runs, progress, echo)
                    laps.lap("scoring")
                    result.runs = {k: int(r["id"]) for k, r in runs.items()}
                    failed = failures(runs)
                    if failed:
                        echo(f"demo: scoring failed: {failed}; the app stays up")
                    else:
                        result.figures = stored_figures(settings, ds, result.runs["clip"], result.runs["mllm_loss"])
                        laps.total()
                        echo(summary(result.figures))
                        echo(f"demo: scored in {laps.seconds['total']:.0f} s ({laps.line()}); the plane is at {url}")
                        if experiment:
                            result.experiment = run_experiment(client, app, ds, result.runs, progress, echo)
                            laps.lap("experiment")
            while worker.alive() and app.server_alive():
                time.sleep(0.5)
            echo("demo: the scoring worker or the server stopped; exiting")
        except KeyboardInterrupt:
            pass
        finally:
            if training is not None:
                stop_training(settings, training)
    return result


def run_experiment(
    client: httpx.Client, app: Services, ds: int, runs: dict[str, int], progress: bool, echo: Echo
) -> dict[str, Any] | None:
    """The demo's experiment (:mod:`qspace.demo.experiment`) started or found, followed, its table printed; None
    when it could not start (the app stays up either way)."""
    try:
        exp = start_experiment(client, ds, runs, echo)
        page = f"{loopback_url(app.settings.host, app.port)}/experiments?ds={ds}&exp={exp['id']}"
        if exp["status"] not in ("done", "failed", "cancelled"):
            echo(f"demo: the Experiments page follows it: {page}")
            app.ensure_worker()
        t0 = time.perf_counter()
        exp = follow_experiment(client, exp, progress=progress, echo=echo)
        echo(result_table(exp))
        echo(f"demo: experiment {exp['id']} {exp['status']} (followed {time.perf_counter() - t0:.0f} s); {page}")
        return exp
    except (DemoError, httpx.HTTPError) as exc:
        echo(f"demo: the experiment did not run: {exc}")
        return None


def post_runs_for(
    client: httpx.Client,
    settings: Settings,
    training: Training | None,
    ds: int,
    specs: dict[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """POST both runs; the training job (if any) ends only now, so the UI never sees a moment with neither the
    job nor the runs pending."""
    try:
        runs = post_runs(client, ds, specs)
    except DemoError as exc:
        if training is not None:
            end_training_job(settings, training, None, error=str(exc))
        raise
    if training is not None:
        end_training_job(settings, training, {k: int(r["id"]) for k, r in runs.items()}, error=None)
    return runs


def score(
    client: httpx.Client, app: Services, runs: dict[str, dict[str, Any]], progress: bool, echo: Echo
) -> dict[str, dict[str, Any]]:
    """Follow the posted runs that are still pending to their end; kind -> Run."""
    pending = [k for k, r in runs.items() if r["status"] in ("queued", "running")]
    if not pending:
        echo("demo: both runs are scored already")
        return runs
    echo(f"demo: scoring {' and '.join(pending)} through the queue")
    return follow_runs(client, runs, app.ensure_worker(), progress=progress)


def failures(runs: dict[str, dict[str, Any]]) -> str:
    """The runs that did not finish, in words ("" when all did)."""
    return "; ".join(
        f"{k} run {r['id']} {r['status']}: {r.get('message') or ''}" for k, r in runs.items() if r["status"] != "done"
    )
