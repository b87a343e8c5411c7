"""`qspace ingest` and `qspace export`: data into the store, selections and curricula out of it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from backend.settings import Settings, get_settings
from qspace.cli.errors import fail


def _engine(settings: Settings, upgrade: bool = True) -> Engine:
    from backend.db import make_engine
    from backend.migrate import upgrade as do_upgrade

    settings.ensure_dirs()
    engine = make_engine(settings.sqlalchemy_url)
    if upgrade:
        do_upgrade(engine)
    return engine


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
    from backend.ingest import IngestError, IngestOptions, IngestProgress
    from backend.ingest import ingest as do_ingest
    from backend.task_types import load_prompts, load_rules

    settings = get_settings()
    try:
        rules = load_rules(task_type_rules) if task_type_rules else []
        prompts = load_prompts(task_type_prompts) if task_type_prompts else {}
    except ValueError as exc:
        fail(str(exc))
    if image_root is not None and not image_root.is_dir():
        fail(f"--image-root {image_root}: no such directory")
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
    total = sum(p.stat().st_size for p in paths if p.is_file())
    # The bar goes to stderr: stdout carries only the dataset id, for scripts.
    with typer.progressbar(length=max(total, 1), label="ingest", file=sys.stderr) as bar:

        def progress(p: IngestProgress) -> None:
            bar.update(max(0, p.bytes_done - bar.pos))

        try:
            with session_scope(make_session_factory(engine)) as session:
                report = do_ingest(session, opts, progress)
        except IngestError as exc:
            fail(f"nothing was ingested:\n{exc}", code=2)
    types = ", ".join(f"{k}: {v}" for k, v in sorted(report.task_types.items(), key=lambda kv: -kv[1]))
    typer.secho(
        f"dataset {report.dataset_id} {name!r}: {report.n_samples} samples in {report.seconds:.1f} s ({types})"
        + (f"; {report.duplicates_dropped} duplicate ids dropped" if report.duplicates_dropped else ""),
        err=True,
    )
    typer.echo(report.dataset_id)


def export(
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
            fail(f"--format {format!r}: choose one of {', '.join(exports.FORMATS)}")
        with factory() as session:
            sel = session.get(Selection, ref)
            if sel is None:
                fail(f"selection {ref} not found")
            ids, ds = ids_from_bytes(sel.sample_ids), sel.dataset_id
        with out.open("wb") as fh:
            exports.write_selection(factory, store, ds, ids, format, fh)
        typer.echo(f"{len(ids)} samples -> {out}", err=True)
    elif what == "curriculum":
        with factory() as session:
            if session.get(Curriculum, ref) is None:
                fail(f"curriculum {ref} not found")
        with out.open("wb") as fh:
            manifest = exports.write_curriculum_zip(factory, store, ref, fh)
        counts = ", ".join(f"{s['name']}: {s['count']}" for s in manifest["stages"])
        typer.echo(f"{counts} -> {out}", err=True)
    else:
        fail(f"export what? {what!r}: use 'selection' or 'curriculum'")
