"""Thin Celery tasks of the semantic view: a derived run (projection, clusters, duplicates) and a text query
embedded by a CLIP run's text tower (text search).

A derived run is one task on the ``default`` queue: claim the run (a lease kept by a heartbeat thread, so a
redelivered message never runs it twice at once; :mod:`backend.queue.derived`), read the embeddings, compute,
write one row per sample of the dataset in batches (samples without embeddings get the error ``no embedding``),
check for cancellation between steps. Any failure fails the run with its message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from backend.db import session_scope
from backend.queue import DERIVED_RUN_TASK, EMBED_TEXT_TASK
from backend.queue.chunks import mark_failed
from backend.queue.derived import (
    DerivedWork,
    batches,
    beat,
    claim,
    is_active,
    sample_answers,
    write_clusters_file,
    write_rows,
)
from backend.queue.embeddings import Embeddings, columns_for, read_embeddings
from backend.queue.finished import after_run_done
from backend.scorer_specs import ScoreResult
from backend.settings import Settings
from workers.celery_app import app
from workers.tasks import store

log = logging.getLogger("qspace.worker")
BEAT_S = 5.0


class Stopped(Exception):
    """The run was cancelled (or taken over) while it was computed."""


class Heartbeat:
    """Beats the run every few seconds from a thread while the maths runs; ``say`` sets the message."""

    def __init__(self, factory: sessionmaker[Session], run_id: int) -> None:
        self.factory, self.run_id = factory, run_id
        self.message = "reading the embeddings"
        self.status: str | None = "running"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"beat-{run_id}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(BEAT_S):
            try:
                with session_scope(self.factory) as s:
                    self.status = beat(s, self.run_id, self.message)
            except Exception as exc:  # a database hiccup: the next beat tries again
                log.warning("run %d: heartbeat failed: %s", self.run_id, exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def say(self, message: str) -> None:
        """A new step: record it now and stop if the run is no longer running."""
        self.message = message
        with session_scope(self.factory) as s:
            self.status = beat(s, self.run_id, message)
        if self.status != "running":
            raise Stopped(f"run {self.run_id} is {self.status}")


def compute(
    work: DerivedWork, emb: Embeddings, say: Callable[[str], None], factory: sessionmaker[Session]
) -> dict[str, np.ndarray]:
    """Metric name -> one value per embedded row."""
    p, src = work.params, work.params["source"]
    if work.kind == "projection":
        from workers.derived.projection import project

        xy = project(
            emb, src, p["method"], p["n_neighbors"], p["min_dist"], p["pca_dims"], p["seed"], say, p.get("fit_rows")
        )
        return {"map_x": xy[:, 0], "map_y": xy[:, 1]}
    if work.kind == "clusters":
        from workers.derived.clusters import examples, kmeans, tfidf_labels

        k = int(p["k"])
        say(f"k-means, k = {k}, {len(emb)} points")
        labels, dist = kmeans(emb, src, k, p["iterations"], p["seed"])
        say("labelling clusters (TF-IDF of the answers)")
        with factory() as s:
            answers = sample_answers(s, emb.ids.tolist())
        names = tfidf_labels([answers.get(int(i), "") for i in emb.ids], labels, k)
        write_clusters_file(
            work.out_dir,
            {"k": k, "source": src, "labels": names, "examples": examples(labels, dist, emb.ids, k)},
        )
        return {"cluster": labels.astype(np.float64)}
    if work.kind == "duplicates":
        from workers.derived.duplicates import groups, ranks

        say(f"near-duplicates at cosine >= {p['threshold']}, {len(emb)} points")
        roots = groups(emb, src, float(p["threshold"]), int(p["max_neighbours"]), bool(p.get("center")))
        rank, size = ranks(roots)
        return {"dup_group": emb.ids[roots].astype(np.float64), "dup_rank": rank, "dup_size": size}
    raise ValueError(f"unknown derived kind {work.kind!r}")


def run_derived(factory: sessionmaker[Session], settings: Settings, run_id: int, key: str) -> dict[str, Any]:
    """Claim, compute and write one derived run (in-process in tests; the task below in a worker)."""
    with session_scope(factory) as s:
        work = claim(s, run_id, key, settings.data_dir, settings.job_lease_s)
    if isinstance(work, str):
        log.info("derived run %d: skipped: %s", run_id, work)
        return {"run_id": run_id, "skipped": work}
    try:
        with Heartbeat(factory, run_id) as hb:
            emb = read_embeddings(work.embeddings, columns_for(work.params["source"]))
            values = compute(work, emb, hb.say, factory)
            hb.say("writing results")
            results = rows(work.sample_ids, emb.ids, values)
            status: str | None = "running"
            for part in batches(results):
                with session_scope(factory) as s:
                    status = write_rows(s, run_id, part, window_s=settings.progress_window_s)
                if not is_active(status):
                    break
        if status == "done":
            after_run_done(factory, settings.data_dir, run_id, keep_columns=settings.persist_columns)
    except Stopped as exc:
        log.info("derived run %d: %s", run_id, exc)
        return {"run_id": run_id, "stopped": str(exc)}
    except Exception as exc:
        log.exception("derived run %d failed", run_id)
        with session_scope(factory) as s:
            mark_failed(s, run_id, f"{type(exc).__name__}: {exc}")
        raise
    return {"run_id": run_id, "rows": len(results), "status": status}


def rows(sample_ids: list[int], emb_ids: np.ndarray, values: dict[str, np.ndarray]) -> list[ScoreResult]:
    """One result per sample of the dataset: its metrics, or ``no embedding`` (its clip row was an error)."""
    pos = {int(i): r for r, i in enumerate(emb_ids.tolist())}
    cols = {name: np.asarray(v, dtype=np.float64).tolist() for name, v in values.items()}
    out = []
    for sid in sample_ids:
        r = pos.get(sid)
        if r is None:
            out.append(ScoreResult(sid, None, "no embedding: the clip run could not score this sample"))
        else:
            out.append(ScoreResult(sid, {name: col[r] for name, col in cols.items()}, None))
    return out


@app.task(name=DERIVED_RUN_TASK)
def derived_run(run_id: int, key: str) -> dict[str, Any]:
    settings, factory = store()
    return run_derived(factory, settings, run_id, key)


# --- text search ---------------------------------------------------------------------------------------------


def embed_query(factory: sessionmaker[Session], run_id: int, text: str, device: str | None = None) -> list[float]:
    """The unit text embedding of ``text`` by the CLIP model of run ``run_id`` (as that run embeds answers)."""
    import torch
    import torch.nn.functional as F

    from backend.models import Run
    from workers.scorers.clip import clip_text_tokens
    from workers.tasks import get_scorer

    with factory() as s:
        run = s.get(Run, run_id)
        if run is None or run.kind != "clip":
            raise ValueError(f"run {run_id} is not a clip run")
        params, key = dict(run.params), run.scorer_key
    scorer = get_scorer("clip", params, key, device)
    scorer.load()
    with torch.inference_mode():
        tokens = clip_text_tokens(scorer.tokenizer, text, scorer.params.long_text).to(scorer.device)
        t = F.normalize(scorer.model.encode_text(tokens).float(), dim=-1)
        t = F.normalize(t.mean(0), dim=0)
    return [float(v) for v in t.cpu().tolist()]


@app.task(name=EMBED_TEXT_TASK, ignore_result=False)
def embed_text(run_id: int, text: str) -> list[float]:
    _, factory = store()
    return embed_query(factory, run_id, text)
