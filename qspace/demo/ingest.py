"""Step 3 of the demo: the dataset in the store (task types from the file names, their prompts from
``task_type_prompts.json``), ingested once."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from backend.db import make_engine, make_session_factory, session_scope
from backend.ingest import IngestOptions, ingest
from backend.migrate import upgrade
from backend.models import Dataset
from backend.settings import Settings
from qspace.demo.messages import Echo, say
from qspace.synthetic import svit_task_files


def dataset_name(size: int, seed: int) -> str:
    return f"svit-demo-n{size}-seed{seed}"


def ensure_ingested(settings: Settings, folder: Path, name: str, echo: Echo = say) -> int:
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
