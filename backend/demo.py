"""`qspace demo`: a synthetic SVIT-like dataset, tiny models trained here, scored through the real queue, served.

One command, no GPU, no servers, no model download:

1. writes a synthetic SVIT-like dataset with rendered images and labelled defects under the data directory
   (``backend.synthetic.make_svit_like``; cached);
2. trains the tiny CLIP and LLaVA on a separate synthetic corpus (``workers.demo_train``; cached, so a second run
   starts at once);
3. ingests the dataset (task types from the file names, their generation prompts from
   ``task_type_prompts.json``), unless it is there already;
4. starts the API with an embedded Celery worker and posts a ``clip`` and an ``mllm_loss`` run through the REST
   API, following their progress in the terminal (runs already done are not scored again);
5. serves the app at http://127.0.0.1:PORT with the explore page on the demo dataset, or, with ``--no-serve``,
   stops there.

It ends by printing how well the scores find the injected defects (:func:`quality_figures`). The back end never
imports torch: the training module is imported only inside :func:`ensure_models`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import select

from backend.db import make_engine, make_session_factory, session_scope
from backend.ingest import IngestOptions, ingest
from backend.migrate import upgrade
from backend.models import Dataset, Sample, Score
from backend.settings import Settings
from backend.synthetic import TASK_TYPES, make_svit_like, svit_task_files

DEFAULT_SIZE = 3000
ANSWER_DEFECTS = ("shuffled", "wrong_fact", "truncated", "filler")
RUN_TIMEOUT_S = 3600.0  # give up following a run that makes no progress for this long
Echo = Callable[[str], None]


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do."""


@dataclass
class DemoResult:
    dataset_id: int
    dataset_name: str
    url: str
    runs: dict[str, int]  # kind -> run id
    figures: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def dataset_name(size: int, seed: int) -> str:
    return f"svit-demo-n{size}-seed{seed}"


def _echo(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- 1. the dataset files -----------------------------------------------------------------------------


def ensure_dataset_files(settings: Settings, size: int, seed: int, echo: Echo = _echo) -> Path:
    """The synthetic dataset's folder under the data directory, written first if missing (atomically)."""
    folder = settings.data_dir / "demo" / f"svit-n{size}-seed{seed}"
    if all(p.is_file() for p in svit_task_files(folder)) and (folder / "task_type_prompts.json").is_file():
        return folder
    echo(f"demo: writing a synthetic SVIT-like dataset of {size:,} samples (images, four task types, defects)")
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        make_svit_like(tmp, n=size, seed=seed)
        if folder.exists():  # an incomplete earlier attempt
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# --- 2. the models ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPaths:
    clip: Path
    llava: Path


def ensure_models(settings: Settings, seed: int, echo: Echo = _echo) -> ModelPaths:
    """The demo's trained CLIP and LLaVA from the cache under ``data_dir/models``, trained first if missing."""
    try:
        from workers.demo_train import cached_models, ensure_demo_models
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DemoError(
            f"the demo trains its models with torch, open_clip and transformers ({exc}); "
            "install them with: pip install -e '.[workers]'"
        ) from exc
    root = settings.data_dir / "models"
    found = cached_models(root, seed)
    if found is None:
        echo("demo: training the tiny CLIP and LLaVA on this machine (about 2.5 minutes on 2 cores, once)")
        found = ensure_demo_models(root, seed, log=echo)
    else:
        echo(f"demo: models from the cache ({found.root})")
    return ModelPaths(found.clip, found.llava)


# --- 3. ingest ----------------------------------------------------------------------------------------


def ensure_ingested(settings: Settings, folder: Path, name: str, echo: Echo = _echo) -> int:
    """The dataset's id, ingesting it first unless a dataset of that name exists."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        upgrade(engine)
        with session_scope(make_session_factory(engine)) as session:
            existing = session.scalar(select(Dataset.id).where(Dataset.name == name))
            if existing is not None:
                return int(existing)
            prompts = json.loads((folder / "task_type_prompts.json").read_text())
            report = ingest(
                session,
                IngestOptions(
                    name=name,
                    paths=svit_task_files(folder),
                    image_root=folder,
                    task_type_from_file=True,
                    task_type_prompts=prompts,
                ),
            )
            echo(f"demo: ingested {report.n_samples:,} samples as dataset {report.dataset_id} {name!r}")
            return report.dataset_id
    finally:
        engine.dispose()


# --- 4. serve, and score through the queue -----------------------------------------------------------


class _Server:
    """uvicorn in a background thread (the main thread keeps the terminal and Ctrl-C)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="qspace-demo-server", daemon=True)
        self.where = f"{host}:{port}" if port else host

    def start(self, timeout: float = 60.0) -> int:
        """Start serving; returns the bound port."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise DemoError(f"the server did not start on {self.where} (is the port in use? try --port)")
            time.sleep(0.05)
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class Services:
    """The running app: its base URL, and the embedded scoring worker (started on first need)."""

    def __init__(self, settings: Settings, server: _Server, base: str, echo: Echo) -> None:
        self.settings = settings
        self.server = server
        self.base = base
        self.echo = echo
        self.worker: Any = None
        self.log_path = settings.data_dir / "demo-worker.log"

    def ensure_worker(self) -> Any:
        """Start the embedded worker (a real ``celery worker`` child process) unless it runs already. Runs that an
        interrupted earlier demo left unfinished are enqueued again first (a server-less broker loses the chunks its
        killed worker had taken)."""
        if self.worker is None:
            from workers.embedded import requeue_after_restart, start_embedded_worker

            requeued = requeue_after_restart(self.settings)
            if requeued:
                self.echo(f"demo: unfinished runs enqueued again: {requeued}")
            self.worker = start_embedded_worker(self.settings, log_path=self.log_path, requeue=False)
            self.echo(f"demo: scoring worker started (pid {self.worker.pid}, log {self.log_path})")
        return self.worker

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    def server_alive(self) -> bool:
        return self.server.thread.is_alive()


@contextmanager
def serving(settings: Settings, port: int, with_ui: bool, echo: Echo = _echo) -> Iterator[Services]:
    """The app (API, and the UI with ``with_ui``) on ``settings.host``:`port` (0 = any free port)."""
    from backend.server import build_app

    server = _Server(build_app(settings, with_ui=with_ui), settings.host, port)
    bound = server.start()
    services = Services(settings, server, f"http://{loopback(settings.host)}:{bound}", echo)
    try:
        yield services
    finally:
        services.stop()
        server.stop()


def loopback(host: str) -> str:
    """The address that reaches a server bound at `host` from this machine."""
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _headers(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}


def run_specs(models: ModelPaths) -> dict[str, dict[str, Any]]:
    """kind -> params of the demo's two runs. Batch sizes and loader processes are runtime knobs: they change speed,
    not scores (nor the scorer key). The demo's 64 px images decode in well under a millisecond, so loader processes
    (forked again for every chunk) would cost more than they save on a 2-core machine."""
    return {
        "clip": {"model": str(models.clip), "batch_size": 64, "num_workers": 0},
        "mllm_loss": {"model": str(models.llava), "batch_size": 16, "num_workers": 0},
    }


def all_done(client: httpx.Client, dataset_id: int, specs: dict[str, dict[str, Any]]) -> bool:
    """Whether the dataset has a finished run of each spec (same scorer key), so there is nothing to score."""
    from backend.scorer_specs import scorer_key

    r = client.get(f"/api/datasets/{dataset_id}/runs")
    r.raise_for_status()
    status = {run["scorer_key"]: run["status"] for run in r.json()}
    return all(status.get(scorer_key(kind, params)) == "done" for kind, params in specs.items())


def post_runs(client: httpx.Client, dataset_id: int, specs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """POST the runs (create, or resume: samples already scored are not scored again); returns kind -> Run."""
    runs = {}
    for kind, params in specs.items():
        r = client.post(f"/api/datasets/{dataset_id}/runs", json={"kind": kind, "params": params})
        if r.status_code != 202:
            raise DemoError(f"POST {kind} run: HTTP {r.status_code}: {r.text[:500]}")
        runs[kind] = r.json()
    return runs


def follow_runs(
    client: httpx.Client,
    runs: dict[str, dict[str, Any]],
    worker: Any,
    progress: bool = True,
    poll_s: float = 0.5,
    stall_s: float = RUN_TIMEOUT_S,
) -> dict[str, dict[str, Any]]:
    """Poll GET /api/runs/{id} until every run is finished, with one progress bar per run."""
    from tqdm import tqdm

    bars = {
        kind: tqdm(
            position=k,
            total=run["total"],
            initial=run["done"],
            desc=f"{kind:9s} run {run['id']}",
            unit="sample",
            dynamic_ncols=True,
            disable=not progress,
            file=sys.stderr,
        )
        for k, (kind, run) in enumerate(runs.items())
    }
    last_change = time.monotonic()
    try:
        while True:
            active = [k for k, r in runs.items() if r["status"] in ("queued", "running")]
            if not active:
                return runs
            time.sleep(poll_s)
            for kind in active:
                r = client.get(f"/api/runs/{runs[kind]['id']}")
                r.raise_for_status()
                run = r.json()
                if run["done"] != runs[kind]["done"] or run["status"] != runs[kind]["status"]:
                    last_change = time.monotonic()
                runs[kind] = run
                bar = bars[kind]
                bar.update(max(run["done"] - bar.n, 0))
                rate = run.get("samples_per_s")
                bar.set_postfix_str(f"{run['status']}" + (f", {rate:.0f}/s" if rate else ""), refresh=True)
            if not worker.alive():
                raise DemoError(f"the scoring worker exited (code {worker.process.poll()}); see its log")
            if time.monotonic() - last_change > stall_s:
                raise DemoError(f"no scoring progress for {stall_s:.0f} s; see the worker log")
    finally:
        for bar in bars.values():
            bar.close()


# --- 5. what the scores found ------------------------------------------------------------------------


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties counting half: the Mann-Whitney U statistic / (n_pos n_neg)."""
    p, q = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if not len(p) or not len(q):
        return float("nan")
    x = np.concatenate([p, q])
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each distinct value's first occurrence
    ranks = (first + (counts - 1) / 2 + 1)[inverse]  # average ranks over ties
    return float((ranks[: len(p)].sum() - len(p) * (len(p) + 1) / 2) / (len(p) * len(q)))


def quality_figures(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How well the scores find the labelled defects. ``rows``: {task_type, defect, similarity, loss_mean,
    loss_sum} per sample (missing scores as None).

    - ``clip_auc``: clean pairs above swapped-image pairs on CLIP similarity;
    - ``loss_auc``: corrupted answers (shuffled, wrong_fact, truncated, filler) above clean ones on loss_mean;
    - per task type and per defect kind, and the mean loss_sum of clean samples per task type.
    """

    def col(name: str, keep: Callable[[dict[str, Any]], bool]) -> list[float]:
        return [float(r[name]) for r in rows if keep(r) and r.get(name) is not None]

    def is_clean(r: dict[str, Any]) -> bool:
        return r["defect"] == "none"

    def of_type(t: str, defects: Sequence[str]) -> Callable[[dict[str, Any]], bool]:
        return lambda r: r["task_type"] == t and r["defect"] in defects

    def of_defect(defects: Sequence[str]) -> Callable[[dict[str, Any]], bool]:
        return lambda r: r["defect"] in defects

    out: dict[str, Any] = {
        "n": len(rows),
        "clip_auc": auc(col("similarity", is_clean), col("similarity", of_defect(["swapped_image"]))),
        "loss_auc": auc(col("loss_mean", of_defect(ANSWER_DEFECTS)), col("loss_mean", is_clean)),
        "clip_auc_by_type": {
            t: auc(col("similarity", of_type(t, ["none"])), col("similarity", of_type(t, ["swapped_image"])))
            for t in TASK_TYPES
        },
        "loss_auc_by_defect": {
            d: auc(col("loss_mean", of_defect([d])), col("loss_mean", is_clean)) for d in ANSWER_DEFECTS
        },
        "loss_sum_by_type": {},
    }
    for t in TASK_TYPES:
        sums = col("loss_sum", of_type(t, ["none"]))
        out["loss_sum_by_type"][t] = float(np.mean(sums)) if sums else float("nan")
    return _rounded(out)


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return x


def stored_figures(settings: Settings, dataset_id: int, clip_run: int, loss_run: int) -> dict[str, Any]:
    """:func:`quality_figures` of the scores stored for the dataset's two runs and its defect labels."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with make_session_factory(engine)() as session:
            rows: dict[int, dict[str, Any]] = {
                sid: {"task_type": tt, "defect": (meta or {}).get("defect", "none")}
                for sid, tt, meta in session.execute(
                    select(Sample.id, Sample.task_type, Sample.meta).where(Sample.dataset_id == dataset_id)
                )
            }
            for sid, metrics in session.execute(
                select(Score.sample_id, Score.metrics).where(Score.run_id.in_([clip_run, loss_run]))
            ):
                if metrics and sid in rows:
                    rows[sid].update(metrics)
    finally:
        engine.dispose()
    return quality_figures(list(rows.values()))


def summary(figures: dict[str, Any]) -> str:
    sums = figures["loss_sum_by_type"]
    return (
        f"swapped images vs clean pairs, CLIP similarity: AUC {figures['clip_auc']:.3f}\n"
        f"corrupted vs clean answers, loss_mean: AUC {figures['loss_auc']:.3f} "
        f"({', '.join(f'{k} {v:.2f}' for k, v in figures['loss_auc_by_defect'].items())})\n"
        f"mean loss_sum of clean samples: " + ", ".join(f"{k} {v:.1f}" for k, v in sums.items())
    )


# --- the command ------------------------------------------------------------------------------------


def run_demo(
    settings: Settings,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    port: int = 8000,
    open_browser: bool = True,
    serve: bool = True,
    progress: bool = True,
    echo: Echo = _echo,
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
        with httpx.Client(base_url=app.base, headers=_headers(settings), timeout=60) as client:
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
        url = f"http://{loopback(settings.host)}:{app.base.rsplit(':', 1)[1] if serve else port}/explore?ds={ds}"
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
        with suppress(KeyboardInterrupt):
            while app.worker.alive() and app.server_alive():
                time.sleep(0.5)
            echo("demo: the scoring worker or the server stopped; exiting")
    return result
