"""The one seeding module of the tests and benches: datasets written straight into the store with finished `clip`
and `mllm_loss` runs whose scores are synthetic (only tests and benches write to the store directly; the UI and
scripts go through the REST API).

- `seed_scored`: a small LLaVA-shaped dataset (JSON, no real images), normal/gamma scores, a few error rows.
- `seed_svit`: an SVIT-like dataset with real images (`qspace.synthetic`), scores shaped like the paper's plane:
  detail descriptions at high loss, referring QA at low loss, swapped images at low CLIP similarity.
- `seed_big`: up to millions of samples by bulk insert (the UI and scale benches).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from backend.ingest import IngestOptions, ingest
from backend.models import Dataset, Run, Sample, Score
from backend.task_types import load_prompts
from qspace.synthetic import TASK_TYPE_PROMPTS, TASK_TYPES, make_svit_like

TASKS = ("conversation", "complex_reasoning", "detail_description", "referring_qa")
LOSS_BASE = {"detail_description": 3.2, "complex_reasoning": 2.6, "conversation": 2.1, "referring_qa": 0.9}


@dataclass
class Seeded:
    """What `seed_scored` wrote, with the scores it gave, to compare the API's answers with."""

    dataset_id: int
    clip_run: int
    loss_run: int
    sample_ids: list[int]
    clip: dict[int, float]
    loss: dict[int, float]
    errors: set[int]
    path: Path


@dataclass
class SeededPlane:
    """What `seed_svit` / `seed_big` wrote."""

    dataset_id: int
    clip_run: int
    loss_run: int
    n: int
    image_root: Path | None = None


def finished_runs(
    session: Session, dataset_id: int, n: int, keys: tuple[str, str], models: tuple[str, str], **extra: Any
) -> tuple[Run, Run]:
    """A finished `clip` run and a finished `mllm_loss` run of `n` samples (flushed: their ids are set)."""
    runs = tuple(
        Run(dataset_id=dataset_id, kind=kind, params={"model": model}, scorer_key=key, status="done", total=n, done=n,
            **extra)
        for kind, key, model in zip(("clip", "mllm_loss"), keys, models, strict=True)
    )  # fmt: skip
    session.add_all(runs)
    session.flush()
    return runs[0], runs[1]


def loss_row(run_id: int, sample_id: int, loss_sum: float, tokens: int) -> dict[str, Any]:
    """An `mllm_loss` score row with the scorer's four metrics."""
    return {
        "run_id": run_id,
        "sample_id": sample_id,
        "error": None,
        "metrics": {
            "loss_sum": loss_sum,
            "loss_mean": loss_sum / tokens,
            "tokens": tokens,
            "perplexity": float(np.exp(loss_sum / tokens)),
        },
    }


def clip_row(run_id: int, sample_id: int, similarity: float | None, error: str | None = None) -> dict[str, Any]:
    metrics = None if similarity is None else {"similarity": similarity}
    return {"run_id": run_id, "sample_id": sample_id, "metrics": metrics, "error": error}


# --- seed_scored ---------------------------------------------------------------------------------------------

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
        clip_run, loss_run = finished_runs(session, ds, n, ("k-clip", "k-loss"), ("tiny", "tiny"))
        clip, loss, errors = {}, {}, set()
        clip_rows, loss_rows = [], []
        for k, sid in enumerate(ids):
            if k % 31 == 5:
                errors.add(sid)
                clip_rows.append(clip_row(clip_run.id, sid, None, "image missing"))
            else:
                c = float(rng.normal(0.25, 0.05))
                clip[sid] = c
                clip_rows.append(clip_row(clip_run.id, sid, c))
            ls = float(rng.gamma(2.0, 5.0))
            loss[sid] = ls
            loss_rows.append(loss_row(loss_run.id, sid, ls, int(rng.integers(1, 50))))
        session.execute(insert(Score), clip_rows)
        session.execute(insert(Score), loss_rows)
        session.commit()
        return Seeded(ds, clip_run.id, loss_run.id, ids, clip, loss, errors, path)


# --- seed_svit and seed_big ----------------------------------------------------------------------------------


def _scores(task: str, defect: str, rng: np.random.Generator) -> tuple[float, float, int]:
    """(clip similarity, loss_sum, tokens) for one sample."""
    tokens = int(
        max(
            2,
            rng.normal(
                {"detail_description": 90, "complex_reasoning": 60, "conversation": 40, "referring_qa": 6}.get(
                    task, 30
                ),
                8,
            ),
        )
    )
    loss_mean = float(np.exp(rng.normal(np.log(LOSS_BASE.get(task, 2.0) / 2.5), 0.25)))
    if defect not in ("none", "swapped_image"):
        loss_mean *= 1.6
    clip = float(rng.normal(0.30, 0.035))
    if defect == "swapped_image":
        clip -= 0.09
    return clip, loss_mean * tokens, tokens


def add_runs(factory: sessionmaker[Session], dataset_id: int, seed: int = 0, error_every: int = 0) -> tuple[int, int]:
    """Two finished runs (clip, mllm_loss) with a score for every sample of the dataset."""
    rng = np.random.default_rng(seed + 7)
    with factory() as session:
        rows = session.execute(
            select(Sample.id, Sample.task_type, Sample.meta).where(Sample.dataset_id == dataset_id).order_by(Sample.id)
        ).all()
        keys = (f"ui-clip-{seed}", f"ui-loss-{seed}")
        clip_run, loss_run = finished_runs(session, dataset_id, len(rows), keys, ("tiny-clip", "tiny-llava"))
        clip_run.samples_per_s, loss_run.samples_per_s = 500.0, 120.0
        clip_rows: list[dict[str, Any]] = []
        loss_rows: list[dict[str, Any]] = []
        for k, (sid, task, meta) in enumerate(rows):
            c, ls, tok = _scores(task, str((meta or {}).get("defect", "none")), rng)
            if error_every and k % error_every == error_every - 1:
                clip_rows.append(clip_row(clip_run.id, sid, None, "image missing"))
            else:
                clip_rows.append(clip_row(clip_run.id, sid, c))
            loss_rows.append(loss_row(loss_run.id, sid, ls, tok))
        session.execute(insert(Score), clip_rows)
        session.execute(insert(Score), loss_rows)
        session.commit()
        return clip_run.id, loss_run.id


def seed_svit(
    factory: sessionmaker[Session], root: Path, n: int = 400, seed: int = 0, name: str = "svit-mini"
) -> SeededPlane:
    """An SVIT-like dataset with real images (qspace.synthetic), ingested, then scored directly."""
    data = make_svit_like(root / "svit", n=n, seed=seed, image_size=96)
    files = [data / f"{t}.json" for t in TASK_TYPES]
    prompts = load_prompts(data / "task_type_prompts.json")
    with factory() as session:
        report = ingest(session, IngestOptions(name=name, paths=files, image_root=data, task_type_prompts=prompts))
        session.commit()
    clip_run, loss_run = add_runs(factory, report.dataset_id, seed)
    return SeededPlane(report.dataset_id, clip_run, loss_run, report.n_samples, data)


def seed_big(engine: Engine, root: Path, n: int = 1_000_000, seed: int = 0, name: str = "big") -> SeededPlane:
    """`n` samples (pointing at a handful of real images) and two finished runs, with bulk inserts."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    img_dir = root / "big-images"
    img_dir.mkdir(parents=True, exist_ok=True)
    palette = [(220, 38, 38), (35, 85, 220), (40, 160, 60), (240, 200, 15), (130, 55, 180), (0, 140, 140)]
    for k, color in enumerate(palette):
        im = Image.new("RGB", (128, 128), (250, 246, 236))
        ImageDraw.Draw(im).ellipse((24 + 4 * k, 24, 104 - 4 * k, 104), fill=color)
        im.save(img_dir / f"{k}.jpg", quality=90)
    t0 = time.perf_counter()
    task_idx = rng.integers(0, len(TASK_TYPES), n)
    tasks = np.asarray(TASK_TYPES)[task_idx]
    defect_names = np.asarray(["none"] * 8 + ["swapped_image", "shuffled"])
    defects = defect_names[rng.integers(0, len(defect_names), n)]
    loss_base = np.asarray([LOSS_BASE[t] for t in TASK_TYPES])[task_idx]
    tokens = np.maximum(2, rng.normal(40, 12, n)).astype(np.int64)
    loss_mean = np.exp(rng.normal(np.log(loss_base / 2.5), 0.25)) * np.where(defects == "shuffled", 1.6, 1.0)
    loss_sum = loss_mean * tokens
    clip = rng.normal(0.30, 0.035, n) - np.where(defects == "swapped_image", 0.09, 0.0)
    with engine.begin() as conn:
        ds_id = conn.execute(
            insert(Dataset)
            .values(
                name=name, image_root=str(img_dir), sources=[], n_samples=n, task_type_prompts=dict(TASK_TYPE_PROMPTS)
            )
            .returning(Dataset.id)
        ).scalar_one()
        first = (conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM samples")).scalar() or 0) + 1
        runs = [
            conn.execute(
                insert(Run)
                .values(dataset_id=ds_id, kind=kind, params={"model": f"bench-{kind}"},
                        scorer_key=f"bench-{kind}-{seed}", status="done", total=n, done=n)
                .returning(Run.id)
            ).scalar_one()
            for kind in ("clip", "mllm_loss")
        ]  # fmt: skip
        # Raw DB-API executemany over pre-serialised JSON: the ORM path is ~10x slower at 1M rows.
        ph = "?" if engine.dialect.name == "sqlite" else "%s"
        sample_sql = (
            "INSERT INTO samples (id, dataset_id, position, external_id, image, conversations, task_type, n_turns, "
            f"question_chars, answer_chars, metadata) VALUES ({', '.join([ph] * 11)})"
        )
        score_sql = f"INSERT INTO scores (run_id, sample_id, metrics, error) VALUES ({ph}, {ph}, {ph}, NULL)"
        question = '{"from": "human", "value": "<image>\\nWhat is in the picture?"}'
        batch = 100_000
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            conn.exec_driver_sql(
                sample_sql,
                [
                    (first + i, ds_id, i, f"s{i}", f'"{i % len(palette)}.jpg"',
                     f'[{question}, {{"from": "gpt", "value": "A shape, sample {i}."}}]', str(tasks[i]), 1, 30, 20,
                     f'{{"defect": "{defects[i]}"}}')
                    for i in range(lo, hi)
                ],
            )  # fmt: skip
            conn.exec_driver_sql(
                score_sql, [(runs[0], first + i, f'{{"similarity": {float(clip[i])!r}}}') for i in range(lo, hi)]
            )
            conn.exec_driver_sql(
                score_sql,
                [
                    (runs[1], first + i, f'{{"loss_sum": {float(loss_sum[i])!r}, "loss_mean": {float(loss_mean[i])!r}, '
                     f'"tokens": {int(tokens[i])}, "perplexity": {float(np.exp(loss_mean[i]))!r}}}')
                    for i in range(lo, hi)
                ],
            )  # fmt: skip
    print(json.dumps({"seeded": n, "seconds": round(time.perf_counter() - t0, 1)}))
    return SeededPlane(int(ds_id), runs[0], runs[1], n, img_dir)
