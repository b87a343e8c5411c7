"""CPU benchmark with the tiny models: the batched scorers vs a per-sample loop, same model, same inputs.

The per-sample loop is each scorer's ``reference``: one sample at a time, no padding, the direct model
call (decode, preprocess, tokenize, forward). Both run in this process on the same samples; results are
asserted equal (1e-4 relative or 1e-6 absolute) and the speed ratio is printed.

    python -m bench.scoring [--samples 512] [--layers 12] [--threads 1] [--workers 1] [--batch 32]

``--kinds mllm_gain`` times ``mllm_loss`` with both optional metrics (``image_gain``, ``question_gain``: two
more passes) against the base scorer, both batched, alternating chunk by chunk (target: <= 2.2x the base).

By default the tiny models get CLIP's depth (12 layers per tower; width stays tiny) so that a one-sample
model call costs what it costs at scale, many small ops, rather than nothing next to JPEG decoding;
``--layers 2`` benchmarks the checkpoints ``qspace tiny-models`` writes. On a CPU, batches past ~32 lose
to cache misses, so the batch is smaller than on a GPU.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from backend.scorer_specs import ScoreItem, ScoreResult  # noqa: E402
from workers.scorers.clip import ClipScorer  # noqa: E402
from workers.scorers.lm import IfdScorer, LmLossScorer  # noqa: E402
from workers.scorers.mllm import MllmLossScorer  # noqa: E402
from workers.scorers.registry import build_scorer  # noqa: E402
from workers.tiny_models import _WORDS, write_tiny_models  # noqa: E402


def make_samples(
    folder: Path,
    n: int,
    seed: int = 0,
    sizes: tuple[int, int] = (96, 160),
    n_images: int = 64,
    share_files: bool = False,
) -> list[ScoreItem]:
    """``n`` LLaVA-like samples, 1-3 turns of 4-60 words, each with one JPEG (sides in ``sizes``,
    ``n_images`` distinct pictures). Each sample has its own file (a hard link to one of the pictures),
    so a scorer decodes and embeds every sample's image; with ``share_files`` samples share the
    ``n_images`` files, and the CLIP scorer embeds each file once (datasets that ask several questions
    of an image)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(min(n, n_images)):
        w, h = rng.randint(*sizes), rng.randint(*sizes)
        im = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        block = max(8, w // 10)
        for _ in range(30):
            x, y = rng.randrange(w), rng.randrange(h)
            im.paste(tuple(rng.randint(0, 255) for _ in range(3)), (x, y, x + block, y + block))
        im = Image.blend(im, Image.effect_noise((w, h), 40).convert("RGB"), 0.2)  # photo-like entropy
        path = folder / f"{i}.jpg"
        im.save(path, quality=90)
        images.append(str(path))

    def sentence(lo: int, hi: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."

    items = []
    for i in range(n):
        conv = [{"from": "human", "value": "<image>\n" + sentence(4, 15)}, {"from": "gpt", "value": sentence(4, 60)}]
        for _ in range(rng.randint(0, 2)):
            conv += [{"from": "human", "value": sentence(3, 12)}, {"from": "gpt", "value": sentence(2, 40)}]
        image = images[i % len(images)]
        if not share_files:
            own = folder / f"s{i}.jpg"
            try:
                os.link(image, own)
            except OSError:  # no hard links here: a copy
                shutil.copyfile(image, own)
            image = str(own)
        items.append(ScoreItem(i, conv, [image]))
    return items


def check_equal(batched: dict[int, ScoreResult], reference: list[ScoreResult]) -> tuple[float, float]:
    """(largest relative, largest absolute difference) over all metrics; raises if any differs by more than
    1e-4 relative and 1e-6 absolute (a similarity near 0 moves by ~1e-8 between batch shapes)."""
    worst = worst_abs = 0.0
    for want in reference:
        got = batched[want.sample_id]
        assert got.error == want.error, (got, want)
        for k, v in (want.metrics or {}).items():
            g = (got.metrics or {})[k]
            rel = abs(g - v) / max(abs(v), 1e-6)
            worst, worst_abs = max(worst, rel), max(worst_abs, abs(g - v))
            assert math.isclose(g, v, rel_tol=1e-4, abs_tol=1e-6), (want.sample_id, k, g, v)
    return worst, worst_abs


def model_only(scorer: Any, items: list[ScoreItem]) -> tuple[float, float]:
    """(seconds one sample per call, seconds batched) for the model step alone, on inputs prepared
    once (decoded, tokenized): what batching changes in the model calls, without the shared work."""
    if isinstance(scorer, ClipScorer):
        prepared: list[Any] = [scorer.prepare(it) for it in items]
        size: Callable[[Any], int] = lambda x: int((x.tokens != 0).sum())  # noqa: E731
        step: Callable[[list[Any]], list[ScoreResult]] = scorer.forward
    elif isinstance(scorer, MllmLossScorer):
        prepared = [scorer.prepare(scorer._encode(it)) for it in items]
        size, step = (lambda x: len(x.seq.ids)), scorer._score_batch
    elif isinstance(scorer, LmLossScorer) and not isinstance(scorer, IfdScorer):
        prepared = [scorer.encoder.encode(it) for it in items]
        size, step = (lambda x: len(x.ids)), scorer._score_batch
    else:
        return math.nan, math.nan
    t0 = time.perf_counter()
    one = {r.sample_id: r for x in prepared for r in step([x])}
    t_one = time.perf_counter() - t0
    ordered = sorted(prepared, key=size)
    b = scorer.batch_size
    t0 = time.perf_counter()
    batched = {r.sample_id: r for i in range(0, len(ordered), b) for r in step(ordered[i : i + b])}
    t_batched = time.perf_counter() - t0
    check_equal(batched, list(one.values()))
    return t_one, t_batched


def bench(kind: str, params: dict, items: list[ScoreItem], repeats: int = 3, chunk: int = 128) -> dict[str, float]:
    """Both paths over the same samples, alternating chunk by chunk (``chunk`` samples: the batched
    scorer gets whole chunks, so it still batches and buckets), ``repeats`` times; per chunk each path's
    fastest run counts. On a shared machine a burst of load from other jobs then hits neither path alone."""
    scorer = build_scorer(kind, params, device="cpu")
    scorer.load()
    scorer.score_all(items[:8])  # warm-up: first calls allocate
    for it in items[:4]:
        scorer.reference(it)  # type: ignore[attr-defined]
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    best_b = [math.inf] * len(chunks)
    best_l = [math.inf] * len(chunks)
    batched: dict[int, ScoreResult] = {}
    reference: list[ScoreResult] = []
    for r in range(repeats):
        for c, part in enumerate(chunks):
            if hasattr(scorer, "clear_image_cache"):
                scorer.clear_image_cache()  # each timed run embeds its images (shared files: once each)
            t0 = time.perf_counter()
            got = scorer.score_all(part)
            best_b[c] = min(best_b[c], time.perf_counter() - t0)
            t0 = time.perf_counter()
            want = [scorer.reference(it) for it in part]  # type: ignore[attr-defined]
            best_l[c] = min(best_l[c], time.perf_counter() - t0)
            if r == 0:
                batched.update(got)
                reference += want
    t_batched, t_loop = sum(best_b), sum(best_l)
    worst, worst_abs = check_equal(batched, reference)
    ok = [it for it in items if batched[it.sample_id].error is None]
    m_one, m_batched = model_only(scorer, ok)
    return {
        "model_ratio": m_one / m_batched,
        "batched_s": t_batched,
        "loop_s": t_loop,
        "batched_sps": len(items) / t_batched,
        "loop_sps": len(items) / t_loop,
        "ratio": t_loop / t_batched,
        "max_rel_diff": worst,
        "max_abs_diff": worst_abs,
    }


GAIN = {"image_gain": True, "question_gain": True}


def gain_cost(params: dict, items: list[ScoreItem], repeats: int = 3, chunk: int = 128, checked: int = 32) -> dict:
    """``mllm_loss`` with both optional metrics against the base scorer, both batched, alternating chunk by
    chunk (fastest run per chunk counts); the first ``checked`` samples checked against the reference
    (``image_gain``, a difference of two losses, within 1e-4 of their sum)."""
    base = build_scorer("mllm_loss", params, device="cpu")
    gain = build_scorer("mllm_loss", {**params, **GAIN}, device="cpu")
    for s in (base, gain):
        s.score_all(items[:8])  # warm-up
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    best_base = [math.inf] * len(chunks)
    best_gain = [math.inf] * len(chunks)
    got: dict[int, ScoreResult] = {}
    for _ in range(repeats):
        for c, part in enumerate(chunks):
            t0 = time.perf_counter()
            base.score_all(part)
            best_base[c] = min(best_base[c], time.perf_counter() - t0)
            t0 = time.perf_counter()
            got.update(gain.score_all(part))
            best_gain[c] = min(best_gain[c], time.perf_counter() - t0)
    worst = 0.0
    for it in items[:checked]:
        want, g = gain.reference(it), got[it.sample_id]  # type: ignore[attr-defined]
        assert (g.error, g.omitted) == (want.error, want.omitted), (g, want)
        for k, v in (want.metrics or {}).items():
            scale = abs(v) if k != "image_gain" else abs(want.metrics["loss_no_image"]) + abs(want.metrics["loss_mean"])
            diff = abs((g.metrics or {})[k] - v) / max(scale, 1e-6)
            assert diff <= 1e-4, (it.sample_id, k, g.metrics, v)
            worst = max(worst, diff)
    t_base, t_gain = sum(best_base), sum(best_gain)
    return {"base_sps": len(items) / t_base, "gain_sps": len(items) / t_gain, "cost": t_gain / t_base,
            "max_rel_diff": worst}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--layers", type=int, default=12, help="depth of every tiny tower")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both paths)")
    ap.add_argument("--workers", type=int, default=1 if (os.cpu_count() or 1) <= 2 else 2,
                    help="loader processes of the batched scorers (default: 1 on a 2-core machine, else 2)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating timed runs of each path (fastest counts)")
    ap.add_argument("--chunk", type=int, default=256,
                    help="samples per alternation between the two paths (the batched scorer's window)")
    ap.add_argument("--batch", type=int, default=32, help="batch size of the batched scorers")
    ap.add_argument("--kinds", default="clip,mllm_loss,lm_loss,ifd")
    ap.add_argument("--shared-images", type=int, default=0, metavar="K",
                    help="samples share K image files (CLIP embeds each once); default: a file per sample")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        models = write_tiny_models(Path(tmp) / "models", layers=args.layers)
        if args.shared_images:
            items = make_samples(Path(tmp) / "images", args.samples, n_images=args.shared_images, share_files=True)
        else:
            items = make_samples(Path(tmp) / "images", args.samples)
        configs = {
            "clip": {"model": str(models["clip"]), "batch_size": args.batch, "num_workers": args.workers},
            "mllm_loss": {"model": str(models["llava"]), "batch_size": args.batch, "num_workers": args.workers},
            "lm_loss": {"model": str(models["lm"]), "batch_size": args.batch, "num_workers": args.workers},
            "ifd": {"model": str(models["lm"]), "batch_size": args.batch, "num_workers": args.workers},
        }
        rows = []
        gain_row = None
        for kind in args.kinds.split(","):
            if kind == "mllm_gain":
                gain_row = gain_cost(configs["mllm_loss"], items, repeats=args.repeats, chunk=args.chunk)
                print(f"{kind}: {gain_row}", file=sys.stderr)
                continue
            r = bench(kind, configs[kind], items, repeats=args.repeats, chunk=args.chunk)
            rows.append((kind, r))
            print(f"{kind}: {r}", file=sys.stderr)
    print(
        f"\n{args.samples} samples, tiny models with {args.layers} layers per tower, batch {args.batch}, "
        f"torch threads {args.threads}, loader workers {args.workers}, CPU ({os.cpu_count()} cores); "
        f"paths alternate every {args.chunk} samples, fastest of {args.repeats} per chunk; "
        + (f"samples share {args.shared_images} image files" if args.shared_images else "an image file per sample")
        + "\n"
    )
    print(
        "| scorer | per-sample loop (samples/s) | batched scorer (samples/s) | speed-up "
        "| model step alone: speed-up | max rel. diff | max abs. diff |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, r in rows:
        model = "n/a" if math.isnan(r["model_ratio"]) else f"{r['model_ratio']:.1f}x"
        print(
            f"| {kind} | {r['loop_sps']:.0f} | {r['batched_sps']:.0f} | {r['ratio']:.1f}x | {model} "
            f"| {r['max_rel_diff']:.1e} | {r['max_abs_diff']:.1e} |"
        )
    if gain_row is not None:
        print(
            "\n| scorer | base mllm_loss, batched (samples/s) | with image_gain + question_gain (samples/s) "
            "| cost (x base) | target | max rel. diff vs reference |"
        )
        print("| --- | ---: | ---: | ---: | --- | ---: |")
        g = gain_row
        print(
            f"| mllm_loss + both gains | {g['base_sps']:.0f} | {g['gain_sps']:.0f} | {g['cost']:.2f}x | <= 2.2x "
            f"| {g['max_rel_diff']:.1e} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
