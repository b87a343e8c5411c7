"""Seeds a dataset with two finished runs (clip, mllm_loss) whose scores are written directly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from backend.ingest import IngestOptions, ingest
from backend.models import Run, Sample, Score

TASKS = ("conversation", "complex_reasoning", "detail_description", "referring_qa")


@dataclass
class Seeded:
    dataset_id: int
    clip_run: int
    loss_run: int
    sample_ids: list[int]
    clip: dict[int, float]
    loss: dict[int, float]
    errors: set[int]
    path: Path


def write_dataset(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        task = TASKS[i % len(TASKS)]
        rec: dict[str, object] = {
            "id": f"{task}-{i}",
            "conversations": [
                {"from": "human", "value": f"<image>\nQuestion {i} about <b>the</b> picture?"},
                {"from": "gpt", "value": " ".join(["word"] * int(rng.integers(1, 40)))},
            ],
            "task": task,
            "defect": "none" if i % 5 else "swapped_image",
        }
        if i % 17 == 0:
            rec.pop("conversations")
            rec["conversations"] = [{"from": "human", "value": "text only"}, {"from": "gpt", "value": "yes"}]
        else:
            rec["image"] = f"images/{i % 7}.jpg" if i % 23 else [f"images/{i % 7}.jpg", "images/0.jpg"]
        records.append(rec)
    path = root / "seeded.json"
    path.write_text(json.dumps(records))
    return path


def seed_scored(factory: sessionmaker[Session], root: Path, n: int = 400, seed: int = 0) -> Seeded:
    path = write_dataset(root, n, seed)
    rng = np.random.default_rng(seed + 1)
    with factory() as session:
        report = ingest(session, IngestOptions(name=f"seeded-{seed}", paths=[path], task_type_field="task"))
        ds = report.dataset_id
        ids = list(session.scalars(select(Sample.id).where(Sample.dataset_id == ds).order_by(Sample.id)))
        clip_run = Run(
            dataset_id=ds, kind="clip", params={"model": "tiny"}, scorer_key="k-clip", status="done", total=n, done=n
        )
        loss_run = Run(
            dataset_id=ds,
            kind="mllm_loss",
            params={"model": "tiny"},
            scorer_key="k-loss",
            status="done",
            total=n,
            done=n,
        )
        session.add_all([clip_run, loss_run])
        session.flush()
        clip, loss, errors = {}, {}, set()
        clip_rows, loss_rows = [], []
        for k, sid in enumerate(ids):
            if k % 31 == 5:
                errors.add(sid)
                clip_rows.append({"run_id": clip_run.id, "sample_id": sid, "metrics": None, "error": "image missing"})
            else:
                c = float(rng.normal(0.25, 0.05))
                clip[sid] = c
                clip_rows.append({"run_id": clip_run.id, "sample_id": sid, "metrics": {"similarity": c}, "error": None})
            ls = float(rng.gamma(2.0, 5.0))
            loss[sid] = ls
            tokens = int(rng.integers(1, 50))
            loss_rows.append(
                {
                    "run_id": loss_run.id,
                    "sample_id": sid,
                    "error": None,
                    "metrics": {
                        "loss_sum": ls,
                        "loss_mean": ls / tokens,
                        "tokens": tokens,
                        "perplexity": float(np.exp(ls / tokens)),
                    },
                }
            )
        session.execute(insert(Score), clip_rows)
        session.execute(insert(Score), loss_rows)
        session.commit()
        return Seeded(ds, clip_run.id, loss_run.id, ids, clip, loss, errors, path)
