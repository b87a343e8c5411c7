"""Helpers of the semantic-view tests: a dataset with a finished clip run whose embeddings are kept (synthetic
vectors in known clusters, written as the workers write them), an API client whose queue runs derived runs
in-process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from backend.models import Run, Sample, Score
from backend.queue.embeddings import embeddings_dir, write_chunk
from backend.settings import Settings
from tests.queue_helpers import ingest_dataset, write_dataset

WORDS = ["apple", "boat", "cloud", "desert", "engine", "forest"]


@dataclass
class Seeded:
    dataset_id: int
    clip_run: int
    ids: list[int]  # every sample, sorted
    embedded: list[int]  # those with embeddings (one sample's clip row is an error)
    truth: dict[int, int]  # sample id -> the blob its vectors came from
    loss_run: int = 0


def seed_embedded(
    factory: sessionmaker[Session],
    settings: Settings,
    root: Path,
    n: int = 60,
    blobs: int = 3,
    dim: int = 16,
    seed: int = 0,
    chunk: int = 25,
) -> Seeded:
    """`n` samples, a finished clip run with keep_embeddings (image and text vectors around `blobs` well-separated
    centres; the answers name the blob's word), an mllm_loss run; sample 5 failed the clip run."""
    rng = np.random.default_rng(seed)
    ds = ingest_dataset(factory, write_dataset(root / "ds", n), "ds")
    centres = rng.normal(size=(blobs, dim)) * 3
    with factory() as s:
        ids = sorted(s.scalars(Sample.__table__.select().with_only_columns(Sample.id).where(Sample.dataset_id == ds)))
        samples = {x.id: x for x in s.query(Sample).filter(Sample.dataset_id == ds)}
        for k, sid in enumerate(ids):  # answers that name the blob's word (cluster labels come from them)
            samples[sid].conversations = [
                {"from": "human", "value": "<image>\nWhat is it?"},
                {"from": "gpt", "value": f"It is a {WORDS[k % blobs]} near the {WORDS[k % blobs]}."},
            ]
        params = {"model": "ViT-B-32", "pretrained": "openai", "keep_embeddings": True}
        clip = Run(dataset_id=ds, kind="clip", params=params, scorer_key="c" * 64, status="done", total=n, done=n)
        loss = Run(dataset_id=ds, kind="mllm_loss", params={"model": "x"}, scorer_key="l" * 64, status="done",
                   total=n, done=n)  # fmt: skip
        s.add_all([clip, loss])
        s.flush()
        truth = {sid: k % blobs for k, sid in enumerate(ids)}
        bad = ids[5]
        img = np.stack([centres[truth[i]] + rng.normal(size=dim) * 0.3 for i in ids])
        txt = np.stack([centres[truth[i]] + rng.normal(size=dim) * 0.3 for i in ids])
        img /= np.linalg.norm(img, axis=1, keepdims=True)
        txt /= np.linalg.norm(txt, axis=1, keepdims=True)
        rows: list[dict[str, Any]] = []
        loss_rows: list[dict[str, Any]] = []
        ok: list[int] = []
        for r, sid in enumerate(ids):
            if sid == bad:
                rows.append({"run_id": clip.id, "sample_id": sid, "metrics": None, "error": "image missing: x"})
            else:
                ok.append(r)
                rows.append({"run_id": clip.id, "sample_id": sid, "metrics": {"similarity": float(img[r] @ txt[r])},
                             "error": None})  # fmt: skip
            loss_rows.append({"run_id": loss.id, "sample_id": sid, "metrics": {"loss_sum": float(truth[sid])},
                              "error": None})  # fmt: skip
        s.execute(insert(Score), rows + loss_rows)
        s.commit()
        folder = embeddings_dir(settings.data_dir, clip.id, clip.scorer_key)
        for i in range(0, len(ok), chunk):
            part = np.asarray(ok[i : i + chunk])
            write_chunk(folder, np.asarray(ids)[part], img[part], txt[part])
        return Seeded(ds, clip.id, ids, [ids[r] for r in ok], truth, loss.id)


@dataclass
class InlineQueue:
    """Stands in for TaskQueue: derived runs are recorded (run them with `drain`), text is embedded by `embed`."""

    settings: Settings
    factory: sessionmaker[Session]
    derived: list[tuple[int, str]] = field(default_factory=list)
    vectors: dict[str, list[float]] = field(default_factory=dict)
    down: bool = False

    def check(self) -> None:
        pass

    def send_chunks(self, run_id: int, key: str, chunks: Any) -> int:
        return len(list(chunks))

    def send_derived(self, run_id: int, key: str) -> None:
        from backend.queue import QueueUnavailable

        if self.down:
            raise QueueUnavailable("the task queue at redis://nowhere is unreachable")
        self.derived.append((run_id, key))

    def drain(self) -> list[dict[str, Any]]:
        from workers.derived_tasks import run_derived

        out = [run_derived(self.factory, self.settings, r, k) for r, k in self.derived]
        self.derived.clear()
        return out

    def embed_text(self, run_id: int, text: str, timeout_s: float) -> list[float]:
        if self.down:
            raise TimeoutError("no worker answered within 20 s: is a worker consuming the 'default' queue?")
        return self.vectors[text]
