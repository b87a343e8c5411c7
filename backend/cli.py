"""The `qspace` command: serve, ingest, db, and the worker-side commands (imported lazily)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from backend.settings import Settings, get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Explore the quality space of multimodal data.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema (Alembic).")
app.add_typer(db_app, name="db")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _engine(settings: Settings, upgrade: bool = True) -> Engine:
    from backend.db import make_engine
    from backend.migrate import upgrade as do_upgrade

    settings.ensure_dirs()
    engine = make_engine(settings.sqlalchemy_url)
    if upgrade:
        do_upgrade(engine)
    return engine


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Bring the schema to REVISION (default: the newest)."""
    from backend.db import make_engine
    from backend.migrate import current, upgrade

    settings = get_settings()
    settings.ensure_dirs()
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine, revision)
    typer.echo(f"schema at {current(engine)} ({engine.url.render_as_string(hide_password=True)})")


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Step the schema back to REVISION ('base' drops everything)."""
    from backend.db import make_engine
    from backend.migrate import current, downgrade

    engine = make_engine(get_settings().sqlalchemy_url)
    downgrade(engine, revision)
    typer.echo(f"schema at {current(engine)}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision."""
    from backend.db import make_engine
    from backend.migrate import current

    typer.echo(current(make_engine(get_settings().sqlalchemy_url)) or "empty")


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="LLaVA JSON (a list) or JSONL files")],
    name: Annotated[str, typer.Option(help="dataset name")],
    image_root: Annotated[Path | None, typer.Option(help="image paths are relative to this")] = None,
    task_type_field: Annotated[str | None, typer.Option(help="record field holding the task type")] = None,
    task_type_rules: Annotated[Path | None, typer.Option(help="JSON rules: {type: regex}")] = None,
    task_type_prompts: Annotated[Path | None, typer.Option(help="JSON: {type: prompt text}")] = None,
    task_type_from_file: Annotated[
        bool | None, typer.Option(help="task type = file name (default: when several files)")
    ] = None,
    dedupe: Annotated[bool, typer.Option(help="keep the first record of each repeated id")] = False,
) -> None:
    """Ingest dataset files as one new dataset and print its id."""
    from backend.db import make_session_factory, session_scope
    from backend.ingest import IngestError, IngestOptions
    from backend.ingest import ingest as do_ingest
    from backend.task_types import load_prompts, load_rules

    settings = get_settings()
    try:
        rules = load_rules(task_type_rules) if task_type_rules else []
        prompts = load_prompts(task_type_prompts) if task_type_prompts else {}
    except ValueError as exc:
        _fail(str(exc))
        return
    if image_root is not None and not image_root.is_dir():
        _fail(f"--image-root {image_root}: no such directory")
    engine = _engine(settings)
    opts = IngestOptions(
        name=name,
        paths=paths,
        image_root=image_root,
        task_type_field=task_type_field,
        task_type_rules=rules,
        task_type_prompts=prompts,
        task_type_from_file=task_type_from_file,
        dedupe=dedupe,
    )
    try:
        with session_scope(make_session_factory(engine)) as session:
            report = do_ingest(session, opts)
    except IngestError as exc:
        _fail(f"nothing was ingested:\n{exc}", code=2)
        return
    types = ", ".join(f"{k}: {v}" for k, v in sorted(report.task_types.items(), key=lambda kv: -kv[1]))
    typer.secho(
        f"dataset {report.dataset_id} {name!r}: {report.n_samples} samples in {report.seconds:.1f} s ({types})"
        + (f"; {report.duplicates_dropped} duplicate ids dropped" if report.duplicates_dropped else ""),
        err=True,
    )
    typer.echo(report.dataset_id)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
    worker: Annotated[bool, typer.Option(help="start an embedded scoring worker")] = True,
    ui: Annotated[bool, typer.Option(help="serve the Dash UI at /")] = True,
) -> None:
    """Run the API (and UI, and an embedded worker) in one command."""
    from backend.server import run_server

    settings = get_settings()
    run_server(settings, host or settings.host, port or settings.port, with_worker=worker, with_ui=ui)


@app.command()
def demo(
    size: Annotated[int, typer.Option(help="synthetic samples")] = 3000,
    seed: Annotated[int, typer.Option(help="random seed (dataset and models)")] = 0,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="open a browser")] = True,
    serve_app: Annotated[bool, typer.Option("--serve/--no-serve", help="serve when done, else exit")] = True,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Synthetic SVIT-like data, tiny CLIP + LLaVA trained here, scored through the queue, served (cached)."""
    from backend.demo import DemoError, run_demo

    settings = get_settings()
    try:
        run_demo(
            settings,
            size=size,
            seed=seed,
            port=port or settings.port,
            open_browser=open_browser,
            serve=serve_app,
            progress=progress,
        )
    except DemoError as exc:
        _fail(str(exc))


@app.command("export")
def export_cmd(
    what: Annotated[str, typer.Argument(help="selection or curriculum")],
    ref: Annotated[int, typer.Argument(help="its id")],
    out: Annotated[Path, typer.Option(help="output file")],
    format: Annotated[str, typer.Option(help="llava | jsonl | parquet | ids (selections)")] = "llava",
) -> None:
    """Export a saved selection (one format) or a curriculum (zip) to a file."""
    from backend import exports
    from backend.db import make_session_factory
    from backend.models import Curriculum, Selection
    from backend.selections import ids_from_bytes
    from backend.space import SpaceStore

    engine = _engine(get_settings())
    factory, store = make_session_factory(engine), SpaceStore(engine)
    out.parent.mkdir(parents=True, exist_ok=True)
    if what == "selection":
        if format not in exports.FORMATS:
            _fail(f"--format {format!r}: choose one of {', '.join(exports.FORMATS)}")
        with factory() as session:
            sel = session.get(Selection, ref)
            if sel is None:
                _fail(f"selection {ref} not found")
                return
            ids, ds = ids_from_bytes(sel.sample_ids), sel.dataset_id
        with out.open("wb") as fh:
            exports.write_selection(factory, store, ds, ids, format, fh)
        typer.echo(f"{len(ids)} samples -> {out}", err=True)
    elif what == "curriculum":
        with factory() as session:
            if session.get(Curriculum, ref) is None:
                _fail(f"curriculum {ref} not found")
        with out.open("wb") as fh:
            manifest = exports.write_curriculum_zip(factory, store, ref, fh)
        counts = ", ".join(f"{s['name']}: {s['count']}" for s in manifest["stages"])
        typer.echo(f"{counts} -> {out}", err=True)
    else:
        _fail(f"export what? {what!r}: use 'selection' or 'curriculum'")


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="queues to consume, comma-separated (gpu = scoring)")] = "gpu,default",
    concurrency: Annotated[int | None, typer.Option(help="processes (default QSPACE_WORKER_CONCURRENCY)")] = None,
    device: Annotated[str | None, typer.Option(help="torch device for scorers, e.g. cuda:1 (default: auto)")] = None,
    pool: Annotated[str | None, typer.Option(help="Celery pool: prefork (default), solo, threads")] = None,
    loglevel: Annotated[str, typer.Option(help="log level")] = "INFO",
) -> None:
    """Run a scoring worker on QSPACE_BROKER_URL (one process per GPU)."""
    from workers.cli import run_worker

    run_worker(get_settings(), queues=queues, concurrency=concurrency, device=device, pool=pool, loglevel=loglevel)


@app.command()
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
    from workers.cli import parse_params, score_in_process, score_through_queue

    settings = get_settings()
    try:
        params = parse_params(model, param or [])
        if queue:
            out = score_through_queue(settings, dataset, kind, params, follow=follow, progress=progress)
        else:
            out = score_in_process(settings, dataset, kind, params, device=device, progress=progress)
    except (ValueError, NotFound, QueueUnavailable) as exc:
        _fail(str(exc), code=2)
        return
    rate = f", {out.samples_per_s:.1f} samples/s" if out.samples_per_s else ""
    typer.secho(
        f"run {out.id} ({out.kind}) {out.status}: {out.done}/{out.total} samples, {out.errors} errors{rate}"
        + (f" - {out.message}" if out.message else ""),
        err=True,
    )
    typer.echo(out.id)
    if out.status in ("failed", "cancelled"):
        raise typer.Exit(1)


@app.command("tiny-models")
def tiny_models(directory: Annotated[Path, typer.Argument(help="where to write clip/, llava/ and lm/")]) -> None:
    """Write tiny random offline checkpoints (tests and the demo load them like real models)."""
    from workers.cli import tiny_models as write

    raise typer.Exit(write(str(directory)))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
