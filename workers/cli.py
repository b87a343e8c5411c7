"""What the worker-side `qspace` commands do: `worker`, `score` (in-process or through the queue), `tiny-models`.

backend/cli.py imports this module lazily, inside the commands.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from backend.run_schemas import RunOut
from backend.runs import TERMINAL, run_out
from backend.settings import Settings


def parse_params(model: str | None, pairs: list[str]) -> dict[str, Any]:
    """`--model M --param key=value ...` as a params dict; values are JSON when they parse (numbers, true,
    null, lists), else strings."""
    import json

    params: dict[str, Any] = {}
    if model is not None:
        params["model"] = model
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {pair!r}: expected key=value")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        params[key.strip()] = value
    return params


def run_worker(
    settings: Settings,
    queues: str = "gpu,default",
    concurrency: int | None = None,
    device: str | None = None,
    pool: str | None = None,
    loglevel: str = "INFO",
    hostname: str | None = None,
) -> None:
    """Run a Celery worker in this process until it is told to stop (SIGTERM: finish the current chunk)."""
    if device:
        settings.worker_device = device  # the tasks read the process-wide settings (pool processes inherit it)
    from workers.celery_app import app

    argv = [
        "worker",
        f"--queues={queues}",
        f"--concurrency={concurrency or settings.worker_concurrency}",
        f"--loglevel={loglevel}",
        f"--hostname={hostname or f'qspace-{os.getpid()}@%h'}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if pool:
        argv.append(f"--pool={pool}")
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app.worker_main(argv)


def _bar(total: int, initial: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="sample",
        smoothing=0.1,
        dynamic_ncols=True,
        disable=not enabled,
        file=sys.stderr,
    )


def score_in_process(
    settings: Settings,
    dataset_ref: str,
    kind: str,
    params: dict[str, Any],
    device: str | None = None,
    progress: bool = True,
) -> RunOut:
    """Create or resume the run and score what is missing in this process, chunk by chunk, with the same
    idempotent writes and progress as the workers; Ctrl-C cancels the run (running it again resumes)."""
    from backend.datasets import get_dataset
    from backend.db import make_engine, make_session_factory, session_scope
    from backend.migrate import upgrade
    from backend.runs import cancel_run, get_run, plan_run
    from workers.tasks import process_chunk

    settings.ensure_dirs()
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        dataset = get_dataset(session, dataset_ref)
        plan = plan_run(session, dataset, kind, params, settings.chunk_size, stale_s=0.0)
        run_id, key = plan.run.id, plan.run.scorer_key
        total, done = plan.run.total, plan.run.done
    bar = _bar(total, done, f"run {run_id} {kind}", progress)
    errors = 0
    try:
        for chunk in plan.chunks:
            report = process_chunk(factory, settings, run_id, key, chunk, device=device)
            errors += report.errors
            bar.update(report.inserted)
            bar.set_postfix(errors=errors, refresh=False)
            if report.skipped or report.stopped:
                break
    except KeyboardInterrupt:
        with session_scope(factory) as session:
            run = get_run(session, run_id)
            if run.status in ("queued", "running"):
                cancel_run(session, run)
                run.message = "interrupted; run the same `qspace score` again to resume"
        raise
    finally:
        bar.close()
    with session_scope(factory) as session:
        return run_out(get_run(session, run_id), tau=settings.progress_window_s)


def score_through_queue(
    settings: Settings,
    dataset_ref: str,
    kind: str,
    params: dict[str, Any],
    follow: bool = True,
    progress: bool = True,
    poll_s: float = 1.0,
) -> RunOut:
    """Create or resume the run on the task queue (like POST /api/datasets/{ds}/runs) and follow its progress
    until it is finished (Ctrl-C stops following; the workers go on)."""
    from backend.db import make_engine, make_session_factory, session_scope
    from backend.migrate import upgrade
    from backend.queue import TaskQueue
    from backend.runs import get_run, submit_run

    settings.ensure_dirs()
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    queue = TaskQueue(settings)
    try:
        with factory() as session:
            run = submit_run(
                session,
                queue,
                dataset_ref,
                kind,
                params,
                chunk_size=settings.chunk_size,
                stale_s=settings.run_stale_s,
                check=queue.check,
            )
            out = run_out(run, tau=settings.progress_window_s)
    finally:
        queue.close()
    if not follow or out.status in TERMINAL:
        return out
    bar = _bar(out.total, out.done, f"run {out.id} {kind}", progress)
    try:
        while True:
            time.sleep(poll_s)
            with session_scope(factory) as session:
                out = run_out(get_run(session, out.id), tau=settings.progress_window_s)
            bar.update(max(out.done - bar.n, 0))
            bar.set_postfix(status=out.status, errors=out.errors, refresh=False)
            if out.status in TERMINAL:
                return out
    finally:
        bar.close()


def tiny_models(directory: str) -> int:
    from workers.tiny_models import tiny_models_command

    return tiny_models_command(directory)
