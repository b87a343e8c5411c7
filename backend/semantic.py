"""The semantic view, API side: neighbours of a sample, text-search ranking and cluster summaries, from a run's
kept embeddings (:mod:`backend.queue.embeddings`) with numpy and faiss; torch-free.

Neighbours: the embeddings of the run (one source: image, text or both) are loaded once and kept in memory
(the last two asked for) with a faiss inner-product index over their unit rows: exact (``IndexFlatIP``) up to
``EXACT_UP_TO`` rows, an IVF index with float16 storage above (sqrt(n) lists, 16 probed; built on the first
query).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from backend.datasets import NotFound
from backend.derived_specs import is_derived
from backend.models import Run, Sample
from backend.queue.derived import read_clusters_file
from backend.queue.embeddings import (
    SOURCES,
    Embeddings,
    cached_embeddings,
    embeddings_dir,
    folder_stamp,
    has_embeddings,
    run_dir,
)
from backend.space import SpaceStore, resolve_axis
from backend.space.axes import MAIN_METRIC

EXACT_UP_TO = 200_000
NLIST_PER_SQRT_N = 1
TRAIN_PER_LIST = 40  # faiss asks for >= 39 training points per list
NPROBE = 16
MAX_K = 1000


class SemanticError(ValueError):
    """A request the semantic routes refuse with 422 (the message says why)."""


def embeddings_of(session: Session, run_id: int, data_dir: Path, dataset_id: int | None = None) -> Run:
    """The clip run with kept embeddings that ``run_id`` names (SemanticError otherwise)."""
    run = session.get(Run, run_id)
    if run is None:
        raise SemanticError(f"run: no run {run_id}")
    if dataset_id is not None and run.dataset_id != dataset_id:
        raise SemanticError(f"run: run {run_id} is not a run of dataset {dataset_id}")
    if run.kind != "clip" or not (run.params or {}).get("keep_embeddings"):
        raise SemanticError(
            f"run: run {run_id} ({run.kind}) kept no embeddings; post a clip run with keep_embeddings: true"
        )
    if not has_embeddings(embeddings_dir(data_dir, run.id, run.scorer_key)):
        raise SemanticError(f"run: run {run_id} has no embeddings yet ({run.status})")
    return run


class _Indexed:
    def __init__(self, emb: Embeddings, source: str) -> None:
        import faiss

        faiss.omp_set_num_threads(os.cpu_count() or 1)  # building: every core (a query sets 1)
        self.emb = emb
        self.source = source
        n = len(emb)
        d = emb.matrix(source, np.arange(min(n, 1))).shape[1]
        if n <= EXACT_UP_TO:
            self.index: Any = faiss.IndexFlatIP(d)
        else:
            nlist = int(NLIST_PER_SQRT_N * np.sqrt(n))  # 1,000 lists at 1M: trained in seconds
            self.index = faiss.IndexIVFScalarQuantizer(
                faiss.IndexFlatIP(d), d, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
            )
            rows = np.random.default_rng(0).choice(n, size=min(n, nlist * TRAIN_PER_LIST), replace=False)
            self.index.train(emb.matrix(source, np.sort(rows)))
            self.index.nprobe = NPROBE
        for i in range(0, n, 65_536):  # float32 a block at a time: never the whole 1M x 768 (3 GB) at once
            self.index.add(emb.matrix(source, np.arange(i, min(n, i + 65_536))))

    def search(self, q: np.ndarray, k: int) -> list[dict[str, Any]]:
        import faiss

        # One query: OpenMP threads cost more than they give (24 ms vs 3 ms at 20k rows on a busy 2-core box).
        faiss.omp_set_num_threads(1)
        scores, rows = self.index.search(np.ascontiguousarray(q.reshape(1, -1), dtype=np.float32), k)
        return [
            {"id": int(self.emb.ids[r]), "score": round(float(s), 6)}
            for s, r in zip(scores[0], rows[0], strict=True)
            if r >= 0
        ]


class NeighbourIndex:
    """The last ``size`` (run, source) indexes, rebuilt when the run's files change."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], tuple[Any, _Indexed]] = OrderedDict()

    def get(self, folder: Path, source: str) -> _Indexed:
        key = (str(folder), source)
        stamp = folder_stamp(folder)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == stamp:
                self._items.move_to_end(key)
                return hit[1]
            built = _Indexed(cached_embeddings(folder, source), source)
            self._items[key] = (stamp, built)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return built


INDEXES = NeighbourIndex()


def _source(source: str) -> str:
    if source not in SOURCES:
        raise SemanticError(f"source: {source!r} is not one of {', '.join(SOURCES)}")
    return source


def neighbours(
    session: Session, sample_id: int, run_id: int, k: int, source: str, data_dir: Path
) -> list[dict[str, Any]]:
    """The ``k`` samples nearest to ``sample_id`` (cosine of ``source`` embeddings), itself left out."""
    sample = session.get(Sample, sample_id)
    if sample is None:
        raise NotFound(f"sample {sample_id} not found")
    run = embeddings_of(session, run_id, data_dir, sample.dataset_id)
    idx = INDEXES.get(embeddings_dir(data_dir, run.id, run.scorer_key), _source(source))
    row = idx.emb.row_of(sample_id)
    if row is None:
        raise NotFound(f"sample {sample_id} has no embedding in run {run_id} (its clip score is an error)")
    q = idx.emb.matrix(source, np.asarray([row]))[0]
    found = idx.search(q, min(k + 1, len(idx.emb)))
    return [f for f in found if f["id"] != sample_id][:k]


def search(
    session: Session, dataset_id: int, run_id: int, vector: list[float], k: int, source: str, data_dir: Path
) -> list[dict[str, Any]]:
    """The ``k`` samples nearest to a query vector (a text embedding: ``image`` source finds pictures of it)."""
    run = embeddings_of(session, run_id, data_dir, dataset_id)
    idx = INDEXES.get(embeddings_dir(data_dir, run.id, run.scorer_key), _source(source))
    q = np.asarray(vector, dtype=np.float32)
    if source == "both":  # a text query against [image | text] halves: the same vector on both halves
        q = np.concatenate([q, q]) / np.sqrt(2)
    width = int(idx.index.d)
    if q.shape != (width,):
        raise SemanticError(f"the query embedding has {q.size} dimensions, the run's embeddings {width}")
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    return idx.search(q, min(k, len(idx.emb)))


def check_search(session: Session, dataset_id: int, run_id: int, data_dir: Path) -> Run:
    """SemanticError before anything is enqueued (unknown run, no embeddings)."""
    return embeddings_of(session, run_id, data_dir, dataset_id)


# --- clusters --------------------------------------------------------------------------------------------


def cluster_summary(session: Session, store: SpaceStore, run: Run, data_dir: Path) -> dict[str, Any]:
    """Per cluster: id, size, label, a few example sample ids, and the median of each scoring run's main metric."""
    if run.kind != "clusters":
        raise SemanticError(f"run {run.id} is a {run.kind} run, not a clusters run")
    if run.status != "done":
        raise SemanticError(f"run {run.id} is {run.status}; clusters are listed once it is done")
    info = read_clusters_file(run_dir(data_dir, run.id, run.scorer_key)) or {}
    col = store.column(session, resolve_axis(session, run.dataset_id, f"{run.id}:cluster"))
    labels = col.values.astype(np.int64)
    k = int(info.get("k") or (int(labels.max()) + 1 if labels.size else 0))
    sizes = np.bincount(labels, minlength=k)
    medians: dict[str, list[float | None]] = {}
    others = session.query(Run).filter(Run.dataset_id == run.dataset_id, Run.status == "done").order_by(Run.id)
    for other in others:
        metric = MAIN_METRIC.get(other.kind)
        if metric is None or is_derived(other.kind):
            continue
        axis = resolve_axis(session, run.dataset_id, f"{other.id}:{metric}")
        c = store.column(session, axis)
        _, a, b = np.intersect1d(col.ids, c.ids, assume_unique=True, return_indices=True)
        vals, labs = c.values[b], labels[a]
        meds: list[float | None] = []
        for cl in range(k):
            v = vals[(labs == cl) & np.isfinite(vals)]
            meds.append(round(float(np.median(v)), 6) if v.size else None)
        medians[f"{other.id}:{metric}"] = meds
    names = info.get("labels") or [""] * k
    examples = info.get("examples") or [[] for _ in range(k)]
    return {
        "run_id": run.id,
        "k": k,
        "source": run.params.get("source"),
        "clusters": [
            {
                "id": c,
                "size": int(sizes[c]) if c < sizes.size else 0,
                "label": names[c] if c < len(names) else "",
                "medians": {axis: meds[c] for axis, meds in medians.items()},
                "examples": examples[c] if c < len(examples) else [],
            }
            for c in range(k)
        ],
    }
