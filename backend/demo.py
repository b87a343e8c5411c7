"""`qspace demo`: a dataset ingested, scored and served on the embedded default."""

from __future__ import annotations

import threading
import webbrowser
from pathlib import Path

import typer
from sqlalchemy import select

from backend.db import make_engine, make_session_factory, session_scope
from backend.ingest import IngestOptions, ingest
from backend.migrate import upgrade
from backend.models import Dataset
from backend.settings import Settings

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "sample"
DEMO_NAME = "sample"


def ensure_sample_dataset(settings: Settings) -> int:
    """The small sample dataset shipped with the tests, ingested once."""
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    with session_scope(make_session_factory(engine)) as session:
        existing = session.scalar(select(Dataset.id).where(Dataset.name == DEMO_NAME))
        if existing is not None:
            return existing
        report = ingest(
            session,
            IngestOptions(name=DEMO_NAME, paths=sorted(SAMPLE_DIR.glob("*.json")), image_root=SAMPLE_DIR),
        )
        return report.dataset_id


def run_demo(settings: Settings, size: int, seed: int, port: int, open_browser: bool, serve: bool) -> None:
    settings.ensure_dirs()
    ds = ensure_sample_dataset(settings)
    url = f"http://{settings.host}:{port}/"
    typer.echo(f"dataset {ds} ready; serving {url}", err=True)
    if not serve:
        return
    if open_browser:
        threading.Timer(1.5, lambda: webbrowser.open(url)).start()
    from backend.server import run_server

    run_server(settings, settings.host, port)
