"""`qspace worker`, `qspace score` (in this process, or through the queue) and `qspace tiny-models`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from backend.settings import Settings, get_settings
from qspace.cli.errors import fail

if TYPE_CHECKING:
    from backend.run_schemas import RunOut


def worker(
    queues: Annotated[str, typer.Option(help="queues to consume, comma-separated (gpu = scoring)")] = "gpu,default",
    concurrency: Annotated[int | None, typer.Option(help="processes (default QSPACE_WORKER_CONCURRENCY)")] = None,
    device: Annotated[str | None, typer.Option(help="torch device for scorers, e.g. cuda:1 (default: auto)")] = None,
    pool: Annotated[str | None, typer.Option(help="Celery pool: prefork (default), solo, threads")] = None,
    loglevel: Annotated[str, typer.Option(help="log level")] = "INFO",
) -> None:
    """Run a scoring worker on QSPACE_BROKER_URL (one process per GPU)."""
    from workers.worker import run_worker

    run_worker(get_settings(), queues=queues, concurrency=concurrency, device=device, pool=pool, loglevel=loglevel)


def score(
    dataset: Annotated[str, typer.Argument(help="dataset name or id")],
    kind: Annotated[str, typer.Option(help="scorer kind: clip, mllm_loss, lm_loss, ifd, length")],
    model: Annotated[str | None, typer.Option(help="model name or local checkpoint directory")] = None,
    param: Annotated[list[str] | None, typer.Option(help="scorer parameter key=value (repeatable)")] = None,
    queue: Annotated[
        bool, typer.Option("--queue", help="enqueue for the workers (qspace serve / qspace worker) and follow it")
    ] = False,
    follow: Annotated[bool, typer.Option(help="with --queue: wait for the run to finish")] = True,
    device: Annotated[str | None, typer.Option(help="in-process: torch device (default: auto)")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Score DATASET with a scorer and store the scores (the same scorer again resumes the run). Prints the run id."""
    from backend.datasets import NotFound
    from backend.queue import QueueUnavailable

    settings = get_settings()
    try:
        params = parse_params(model, param or [])
        if queue:
            out = score_through_queue(settings, dataset, kind, params, follow=follow, progress=progress)
        else:
            out = score_in_process(settings, dataset, kind, params, device=device, progress=progress)
    except (ValueError, NotFound, QueueUnavailable) as exc:
        fail(str(exc), code=2)
    rate = f", {out.samples_per_s:.1f} samples/s" if out.samples_per_s else ""
    typer.secho(
        f"run {out.id} ({out.kind}) {out.status}: {out.done}/{out.total} samples, {out.errors} errors{rate}"
        + (f" - {out.message}" if out.message else ""),
        err=True,
    )
    typer.echo(out.id)
    if out.status in ("failed", "cancelled"):
        raise typer.Exit(1)


def tiny_models(directory: Annotated[Path, typer.Argument(help="where to write clip/, llava/ and lm/")]) -> None:
    """Write tiny random offline checkpoints (tests and the demo load them like real models)."""
    from workers.tiny_models import tiny_models_command

    raise typer.Exit(tiny_models_command(str(directory)))


# --- what `qspace score` does -------------------------------------------------------------------------


def parse_params(model: str | None, pairs: list[str]) -> dict[str, Any]:
    """`--model M --param key=value ...` as a params dict; values are JSON when they parse (numbers, true,
    null, lists), else strings."""
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
    from backend.runs import cancel_run, get_run, plan_run, run_out
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
    from backend.runs import TERMINAL, get_run, run_out, submit_run

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
