"""Semantic-view benchmark (issue 17): kept embeddings, clusters, projection, neighbours, keep_embeddings cost.

    .venv/bin/python bench/semantic.py [--n 1000000] [--dim 768] [--umap 100000,200000] [--skip-clip]

Each step runs in its own child process so that its peak memory (ru_maxrss) is its own:
  - write: N x DIM float16 synthetic image and text embeddings (200 Gaussian blobs) as chunk files of 2,048
    samples, as a keep_embeddings clip run writes them; file size per 1M samples; read-back time;
  - clusters: the clusters run's maths (faiss spherical k-means, k = sqrt(N/10), 20 iterations, on the image
    embeddings): time and peak memory;
  - projection: PCA to 50 + UMAP (umap-learn) on the first n of the --umap sizes, fitted on at most --fit-rows
    of them and the rest placed by their nearest fitted neighbours (the projection run's default): time and
    peak memory;
  - neighbours: the API's index (backend.semantic) over N image embeddings: build time, then p50/p95 of 50
    single-sample neighbour queries (k = 12);
  - clip: a tiny-CLIP scoring of 2,048 synthetic samples with and without keep_embeddings (+ writing the chunk
    files), the relative slowdown and the cost per sample (a real ViT-L scorer is ~100x slower per sample, so
    the relative figure there is far smaller).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHUNK = 2048


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_write(folder: Path, n: int, dim: int) -> dict:
    from backend.queue.embeddings import read_embeddings, write_chunk

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, dim)).astype(np.float32)
    t0 = time.perf_counter()
    for i in range(0, n, CHUNK):
        m = min(CHUNK, n - i)
        blob = rng.integers(0, 200, size=m)
        img = centres[blob] + rng.normal(size=(m, dim)).astype(np.float32) * 0.8
        txt = centres[blob] + rng.normal(size=(m, dim)).astype(np.float32) * 0.8
        img /= np.linalg.norm(img, axis=1, keepdims=True)
        txt /= np.linalg.norm(txt, axis=1, keepdims=True)
        write_chunk(folder, np.arange(i + 1, i + m + 1), img, txt)
    write_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in folder.iterdir())
    t0 = time.perf_counter()
    emb = read_embeddings(folder, columns=("image",))
    read_s = time.perf_counter() - t0
    return {
        "n": n,
        "dim": dim,
        "bytes": size,
        "gb_per_1m": round(size / n * 1e6 / 1e9, 3),
        "write_s": round(write_s, 1),
        "read_image_s": round(read_s, 1),
        "rows": len(emb),
        "peak_mb": round(peak_mb()),
    }


def step_clusters(folder: Path) -> dict:
    from backend.derived_specs import default_k
    from backend.queue.embeddings import read_embeddings
    from workers.derived.clusters import kmeans

    t0 = time.perf_counter()
    emb = read_embeddings(folder, columns=("image",))
    read_s = time.perf_counter() - t0
    k = default_k(len(emb))
    t0 = time.perf_counter()
    labels, _ = kmeans(emb, "image", k, 20, 0)
    return {
        "n": len(emb),
        "k": k,
        "read_s": round(read_s, 1),
        "kmeans_s": round(time.perf_counter() - t0, 1),
        "clusters_used": int(np.unique(labels).size),
        "peak_mb": round(peak_mb()),
    }


def step_projection(folder: Path, n: int, fit_rows: int) -> dict:
    from backend.queue.embeddings import Embeddings, read_embeddings
    from workers.derived.projection import project

    full = read_embeddings(folder, columns=("image",))
    emb = Embeddings(full.ids[:n], full.image[:n].copy(), full.text)
    del full
    t0 = time.perf_counter()
    xy = project(emb, "image", "umap", 15, 0.1, 50, 0, lambda m: print(m, file=sys.stderr), fit_rows=fit_rows)
    return {"n": n, "fit_rows": min(n, fit_rows), "umap_s": round(time.perf_counter() - t0, 1),
            "finite": bool(np.isfinite(xy).all()), "peak_mb": round(peak_mb())}  # fmt: skip


def step_neighbours(folder: Path) -> dict:
    from backend import semantic

    t0 = time.perf_counter()
    idx = semantic.INDEXES.get(folder, "image")
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    times = []
    for sid in rng.integers(1, len(idx.emb) + 1, size=50):
        t0 = time.perf_counter()
        row = idx.emb.row_of(int(sid))
        q = idx.emb.matrix("image", np.asarray([row]))[0]
        found = idx.search(q, 13)
        times.append(time.perf_counter() - t0)
        assert found
    ms = np.asarray(times) * 1000
    return {
        "n": len(idx.emb),
        "index": type(idx.index).__name__,
        "build_s": round(build_s, 1),
        "query_ms_p50": round(float(np.median(ms)), 2),
        "query_ms_p95": round(float(np.quantile(ms, 0.95)), 2),
        "peak_mb": round(peak_mb()),
    }


def step_clip(work: Path) -> dict:
    import torch

    torch.set_num_threads(2)
    from PIL import Image

    from backend.scorer_specs import ScoreItem
    from workers.scorers.embeddings import write_kept
    from workers.scorers.registry import build_scorer
    from workers.tiny_models import _write_clip

    _write_clip(work / "clip", 12)  # CLIP-deep towers: one model call costs what it costs at scale
    rng = np.random.default_rng(0)
    (work / "img").mkdir()
    paths = []
    for i in range(64):
        p = work / "img" / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, size=(96, 96, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    conv = [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A thing."}]
    items = [ScoreItem(i, conv, [paths[i % 64]]) for i in range(2048)]
    out: dict[bool, float] = {}
    for keep in (False, True) * 3:  # interleaved, best of three each: the machine is shared
        scorer = build_scorer(
            "clip", {"model": str(work / "clip"), "num_workers": 0, "keep_embeddings": keep}, device="cpu"
        )
        scorer.load()
        scorer.clear_image_cache()
        t0 = time.perf_counter()
        for i in range(0, len(items), 256):  # per chunk, as the task does
            results = list(scorer.score(items[i : i + 256]))
            if keep:
                write_kept(scorer.kept, work / f"emb-{time.time_ns()}", {r.sample_id for r in results})
        out[keep] = min(out.get(keep, np.inf), time.perf_counter() - t0)
    # The added work alone, at ViT-L's width: collecting (float16 + compensated rounding) and writing a chunk.
    from workers.scorers.embeddings import KeptEmbeddings

    kept = KeptEmbeddings()
    img = torch.nn.functional.normalize(torch.randn(256, 768), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(256, 768), dim=-1)
    reps = []
    for r in range(20):
        t0 = time.perf_counter()
        for b in range(0, 256, 64):
            kept.add(list(range(b, b + 64)), img[b : b + 64], txt[b : b + 64])
        write_kept(kept, work / "micro", set(range(256 * r, 256 * r + 256)) | set(range(256)))
        reps.append(time.perf_counter() - t0)
    micro_us = float(np.median(reps)) / 256 * 1e6
    return {
        "added_us_per_sample_768d": round(micro_us, 1),
        "vs_vitl_h100_2ms_per_sample_pct": round(micro_us / 2000 * 100, 2),
        "samples": len(items),
        "without_s": round(out[False], 2),
        "with_s": round(out[True], 2),
        "slowdown_pct": round(100 * (out[True] / out[False] - 1), 1),
        "overhead_us_per_sample": round((out[True] - out[False]) / len(items) * 1e6, 1),
    }


def child(step: str, *args: str) -> dict:
    cmd = [sys.executable, __file__, "--step", step, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"step {step} failed:\n{proc.stderr[-3000:]}")
    result: dict = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{step}: {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--umap", default="100000,200000", help="sizes for the projection step (comma-separated)")
    ap.add_argument("--fit-rows", type=int, default=200_000, help="projection: rows the map is fitted on")
    ap.add_argument("--skip-clip", action="store_true")
    ap.add_argument("--steps", default="write,clusters,neighbours,projection,clip")
    ap.add_argument("--step")
    ap.add_argument("--folder")
    args = ap.parse_args()
    if args.step:
        folder = Path(args.folder) if args.folder else Path(".")
        steps = {
            "write": lambda: step_write(folder, args.n, args.dim),
            "clusters": lambda: step_clusters(folder),
            "projection": lambda: step_projection(folder, args.n, args.fit_rows),
            "neighbours": lambda: step_neighbours(folder),
            "clip": lambda: step_clip(folder),
        }
        print(json.dumps(steps[args.step]()))
        return
    with tempfile.TemporaryDirectory(prefix="qspace-semantic-") as tmp:
        folder = Path(tmp) / "emb"
        folder.mkdir()
        steps = set(args.steps.split(","))
        child("write", "--folder", str(folder), "--n", str(args.n), "--dim", str(args.dim))
        if "clusters" in steps:
            child("clusters", "--folder", str(folder))
        if "neighbours" in steps:
            child("neighbours", "--folder", str(folder))
        for n in [int(x) for x in args.umap.split(",") if x and "projection" in steps]:
            child("projection", "--folder", str(folder), "--n", str(min(n, args.n)), "--fit-rows", str(args.fit_rows))
        if "clip" in steps and not args.skip_clip:
            clip_dir = Path(tmp) / "clip"
            clip_dir.mkdir()
            child("clip", "--folder", str(clip_dir))


if __name__ == "__main__":
    main()
