"""Kept CLIP embeddings: equal to the scorer's own (the similarity recomputed from them), written once per chunk
under redelivery, read back one row per sample, gone with the run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backend.datasets import get_dataset
from backend.models import Score
from backend.queue.embeddings import chunk_files, embeddings_dir, read_embeddings, write_chunk
from backend.runs import plan_run
from backend.scorer_specs import ScoreItem, scorer_key
from tests.queue_helpers import ingest_dataset, write_dataset
from workers.scorers.clip import ClipScorer
from workers.scorers.registry import build_scorer


def _clip(models: dict[str, Path], **params: object) -> ClipScorer:
    params = {"model": str(models["clip"]), "num_workers": 0, "keep_embeddings": True, **params}
    scorer = build_scorer("clip", params, device="cpu")
    assert isinstance(scorer, ClipScorer)
    return scorer


@pytest.mark.parametrize("params", [{}, {"scale": "x100", "long_text": "chunks", "batch_size": 5}])
def test_kept_embeddings_give_back_the_similarity(
    tiny_models: dict[str, Path], samples: list[ScoreItem], params: dict, tmp_path: Path
) -> None:
    scorer = _clip(tiny_models, **params)
    got = scorer.score_all(samples)
    ok = {sid for sid, r in got.items() if r.error is None}
    assert len(ok) >= 25 and len(scorer.kept) == len(ok)  # errors keep nothing
    ids, image, text = scorer.kept.take()
    assert set(ids.tolist()) == ok and image.dtype == np.float16 and image.shape == text.shape
    write_chunk(tmp_path, ids, image, text)
    emb = read_embeddings(tmp_path)
    scale = 100.0 if params.get("scale") == "x100" else 1.0
    multi = 0
    for sid in ok:
        row = emb.row_of(sid)
        assert row is not None
        recomputed = scale * float(emb.image[row].astype(np.float64) @ emb.text[row].astype(np.float64))
        want = got[sid].metrics["similarity"]  # type: ignore[index]
        assert abs(recomputed - want) <= 1e-4 * scale, (sid, recomputed, want)
        assert abs(np.linalg.norm(emb.text[row].astype(np.float64)) - 1) < 2e-3  # the text vector is a unit one
        multi += len(next(s for s in samples if s.sample_id == sid).images) > 1
    assert multi >= 2  # multi-image samples are covered: their image vector is the mean of the unit ones


def test_without_the_flag_nothing_is_kept_and_keys_differ(
    tiny_models: dict[str, Path], samples: list[ScoreItem]
) -> None:
    scorer = _clip(tiny_models, keep_embeddings=False)
    scorer.score_all(samples[:6])
    assert len(scorer.kept) == 0
    base = {"model": str(tiny_models["clip"])}
    assert scorer_key("clip", base) == scorer_key("clip", {**base, "keep_embeddings": False})
    assert scorer_key("clip", base) != scorer_key("clip", {**base, "keep_embeddings": True})


def test_chunk_files_are_written_once_and_read_once_per_sample(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = np.arange(10, 20)
    img, txt = rng.normal(size=(10, 8)), rng.normal(size=(10, 8))
    first = write_chunk(tmp_path, ids[::-1], img[::-1], txt[::-1])  # any order in, sorted on disk
    again = write_chunk(tmp_path, ids, img, txt)  # a redelivered chunk: the same file, replaced atomically
    assert first == again and len(chunk_files(tmp_path)) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    write_chunk(tmp_path, ids[5:], img[5:], txt[5:])  # a partial redelivery: another file, overlapping ids
    write_chunk(tmp_path, np.arange(30, 33), img[:3], txt[:3])
    emb = read_embeddings(tmp_path)
    assert emb.ids.tolist() == [*range(10, 20), 30, 31, 32]
    np.testing.assert_allclose(emb.image[:10].astype(np.float64), img, atol=2e-3)
    np.testing.assert_allclose(emb.text[10:].astype(np.float64), txt[:3], atol=2e-3)
    both = emb.matrix("both")
    assert both.shape == (13, 16) and np.allclose(np.linalg.norm(both, axis=1), 1, atol=1e-5)
    only_text = read_embeddings(tmp_path, columns=("text",))
    assert only_text.image.shape == (0, 0) and only_text.text.shape == (13, 8)


def test_process_chunk_keeps_embeddings_exactly_once(
    tiny_models: dict[str, Path], session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Through the worker's chunk function: a redelivered chunk (its scores not committed yet, and committed)
    leaves one row per sample, equal to the stored similarity."""
    from backend.settings import Settings
    from workers.tasks import process_chunk

    ds = ingest_dataset(session_factory, write_dataset(tmp_path / "ds", 12, missing=[3]), "ds")
    settings = Settings(data_dir=tmp_path / "data")
    params = {"model": str(tiny_models["clip"]), "num_workers": 0, "keep_embeddings": True}
    with session_factory() as s:
        plan = plan_run(s, get_dataset(s, ds), "clip", params, chunk_size=5)
        s.commit()
        run_id, key, chunks = plan.run.id, plan.run.scorer_key, plan.chunks
    folder = embeddings_dir(settings.data_dir, run_id, key)
    for c in chunks:
        process_chunk(session_factory, settings, run_id, key, c)
    files = chunk_files(folder)
    assert len(files) == 3
    stamps = {p.name: os.stat(p).st_mtime_ns for p in files}
    for c in chunks:  # redelivered after the commit: nothing left to score, nothing written
        again = process_chunk(session_factory, settings, run_id, key, c)
        assert again.inserted == 0
    assert {p.name: os.stat(p).st_mtime_ns for p in chunk_files(folder)} == stamps
    emb = read_embeddings(folder)
    with session_factory() as s:
        rows = {sid: m for sid, m in s.execute(select(Score.sample_id, Score.metrics).where(Score.run_id == run_id))}
    ok = sorted(sid for sid, m in rows.items() if m)
    assert emb.ids.tolist() == ok and len(ok) == 11  # the sample with a missing image has no embeddings
    for sid in ok:
        r = emb.row_of(sid)
        assert r is not None
        sim = float(emb.image[r].astype(np.float64) @ emb.text[r].astype(np.float64))
        assert abs(sim - rows[sid]["similarity"]) <= 1e-4
