"""GPU benchmark: samples/s and model FLOP utilisation (MFU) of the scorers at real model sizes.

Random weights: open_clip models with ``pretrained=None`` (ViT-B-32, ViT-L-14-336), and LLaVA / Llama
configs of ~0.5B and ~7B built in memory in bf16. Synthetic 640x480 JPEGs are decoded and preprocessed
in loader workers, as in production, so ``samples/s`` is end to end. ``model only`` repeats one
prepared batch (no decoding) to show what the GPU alone does. MFU = useful model FLOPs per second
(no padding, the head only at counted tokens) over the card's bf16 peak, measured here with a large
matrix product.

    python -m bench.scoring_gpu                 # CUDA machine
    python -m bench.scoring_gpu --quick         # tiny sizes on CPU: checks the script end to end
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

import torch  # noqa: E402

from backend.scorer_specs import ScoreItem  # noqa: E402
from bench.scoring import make_samples  # noqa: E402
from workers.scorers.base import cached_model, clear_model_cache, model_key, select_text  # noqa: E402
from workers.scorers.registry import build_scorer  # noqa: E402
from workers.tiny_models import llava_config, llava_processor, write_tiny_models  # noqa: E402

LLAMA = {  # hidden, layers, intermediate, heads, kv heads
    "tiny": (64, 2, 128, 4, 4),
    "0.5B": (1280, 24, 3456, 20, 20),  # ~0.47B non-embedding + 2 x 41M embeddings
    "7B": (4096, 32, 11008, 32, 32),  # Llama-2-7B / Vicuna-7B (LLaVA-1.5-7B's language model)
}
VISION = {  # CLIP vision tower of the LLaVA: hidden, layers, intermediate, heads, image, patch
    "tiny": (32, 2, 64, 2, 32, 8),
    "L-336": (1024, 24, 4096, 16, 336, 14),  # LLaVA-1.5's CLIP ViT-L/14-336
}
VOCAB = 32000
PROFILE = False  # --profile: a kernel table for one batch of each loss scorer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """FLOP/s of an n x n x n matrix product in ``dtype`` (median of 10 after 3 warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / sorted(times)[len(times) // 2]


# --- FLOP counts (a multiply-add = 2 FLOPs) ---------------------------------------------------------


def vit_flops(tokens: int, width: int, layers: int, mlp: int, patch_inputs: int) -> float:
    """One image through a ViT: patch embedding, then per layer qkv/out (8 d^2), MLP (2*2*mlp*d), attention."""
    per_layer = tokens * (8 * width**2 + 4 * width * mlp) + 4 * tokens**2 * width
    return 2.0 * (tokens - 1) * patch_inputs * width + layers * per_layer


def text_tower_flops(tokens: int, width: int, layers: int) -> float:
    """CLIP's causal text transformer over ``tokens`` (MLP ratio 4; causal attention counted in full)."""
    return layers * (tokens * 24 * width**2 + 4 * tokens**2 * width)


def llama_flops(lengths: list[int], counted: int, hidden: int, layers: int, inter: int, kv: int, heads: int) -> float:
    """Forward FLOPs of a Llama over sequences of ``lengths`` (causal attention: half the scores) plus the
    output head at ``counted`` positions."""
    kv_dim = hidden * kv // heads
    per_token = 2 * layers * (2 * hidden**2 + 2 * hidden * kv_dim + 3 * hidden * inter)
    attn = sum(2 * layers * t * t * hidden for t in lengths)
    return per_token * sum(lengths) + attn + 2 * hidden * VOCAB * counted


# --- models in memory --------------------------------------------------------------------------------


def _build(factory: Callable[[], Any], device: torch.device, dtype: torch.dtype) -> Any:
    """Construct a model straight on ``device`` in ``dtype`` (random init)."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = factory()
    finally:
        torch.set_default_dtype(prev)
    return model.eval()


def llama_config(size: str, processor: Any) -> Any:
    from transformers import LlamaConfig

    hidden, layers, inter, heads, kv = LLAMA[size]
    tok = processor.tokenizer
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


def vision_config(size: str) -> Any:
    from transformers import CLIPVisionConfig

    hidden, layers, inter, heads, image, patch = VISION[size]
    cfg = CLIPVisionConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=inter,
        num_attention_heads=heads,
        image_size=image,
        patch_size=patch,
        projection_dim=768,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


# --- runs --------------------------------------------------------------------------------------------


@dataclass
class Row:
    scorer: str
    model: str
    batch: int
    samples: int
    seconds: float
    model_only_sps: float
    flops: float  # useful FLOPs over the timed samples
    tokens: int = 0

    def cells(self, peak: float) -> list[str]:
        sps = self.samples / self.seconds
        tflops = self.flops / self.seconds / 1e12
        model_only = f"{self.model_only_sps:,.0f}" if not math.isnan(self.model_only_sps) else "-"
        toks = f"{self.tokens / self.seconds:,.0f}" if self.tokens else "-"
        return [
            self.scorer,
            self.model,
            str(self.batch),
            f"{sps:,.1f}",
            model_only,
            toks,
            f"{tflops:,.1f}",
            f"{100 * self.flops / self.seconds / peak:.0f}%",
        ]


def timed_score(scorer: Any, items: list[ScoreItem], device: torch.device) -> tuple[float, dict[int, Any]]:
    scorer.score_all(items[: 2 * scorer.batch_size])  # warm-up: kernels, allocator, loader start
    if hasattr(scorer, "clear_image_cache"):
        scorer.clear_image_cache()  # the timed run embeds every image, the warm-up's too
    sync(device)
    t0 = time.perf_counter()
    results = scorer.score_all(items)
    sync(device)
    return time.perf_counter() - t0, results


def model_only(step: Callable[[], Any], n: int, device: torch.device, repeats: int = 5) -> float:
    """Samples/s of ``step`` (one prepared batch of ``n`` samples) on the device alone."""
    step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    sync(device)
    return n * repeats / (time.perf_counter() - t0)


def run_clip(name: str, pretrained: str | None, items: list[ScoreItem], batch: int, workers: int,
             device: torch.device, image_path: str = "nvjpeg", compile_visual: bool = False) -> Row:
    """``image_path``: where images are decoded and resized (ClipScorer.image_path: "host",
    "device_resize", "nvjpeg"). ``compile_visual``: the image tower through ``torch.compile``."""
    import open_clip

    scorer: Any = build_scorer(
        "clip", {"model": name, "pretrained": pretrained, "batch_size": batch, "num_workers": workers},
        device=device,
    )
    scorer.load()
    if image_path != "host" and scorer.image_path == "host":  # CPU run (--quick): host only
        image_path = "host"
    scorer.image_path = image_path
    label = {"host": "PIL decode + resize in loader", "device_resize": "PIL decode in loader, GPU resize",
             "nvjpeg": "GPU nvJPEG decode + resize"}[image_path]
    if compile_visual:
        scorer.model.visual = torch.compile(scorer.model.visual)
        label += ", compiled"
    seconds, results = timed_score(scorer, items, device)
    assert all(r.error is None for r in results.values()), next(r for r in results.values() if r.error)
    scorer.image_path = "host"
    prepared = [scorer.prepare(it) for it in items[:batch]]  # decoded on the host: the model step alone
    if image_path != "host":  # how far decoding/resizing on the GPU moves the score from the PIL path
        pil = scorer.score_all(items[:512])
        diff = max(abs(pil[k].metrics["similarity"] - results[k].metrics["similarity"]) for k in pil)
        print(f"  {name} [{label}]: max |similarity - similarity(PIL path)| over 512 samples = {diff:.2e}",
              flush=True)
    scorer.image_path = image_path
    mo = model_only(lambda: scorer.forward(prepared), len(prepared), device)

    if Path(name).is_dir():  # a local folder (qspace tiny-models): its one config JSON
        cfg = json.loads(next(Path(name).glob("*.json")).read_text())
    else:
        cfg = open_clip.get_model_config(name)
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    size, patch = v["image_size"], v["patch_size"]
    n_img = (size // patch) ** 2 + 1
    img = vit_flops(n_img, v["width"], v["layers"], int(v.get("mlp_ratio", 4) * v["width"]), 3 * patch * patch)
    lengths = [min(77, len(scorer.tokenizer.encode(select_text(it.conversations, "answers"))) + 2) for it in items]
    txt = sum(text_tower_flops(n, t["width"], t["layers"]) for n in lengths)
    return Row("clip", f"{name} [{label}]", batch, len(items), seconds, mo, img * len(items) + txt)


def run_loss(kind: str, size: str, items: list[ScoreItem], *, batch: int, count: int, workers: int,
             device: torch.device, dtype: torch.dtype, quick: bool) -> Row:
    from transformers import LlamaForCausalLM, LlavaForConditionalGeneration

    items = items[:count]
    vsize = "tiny" if quick else "L-336"
    image = VISION[vsize][4]
    processor = llava_processor(image_size=image, patch_size=VISION[vsize][5], model_max_length=4096)
    name = f"random/{kind}-{size}"
    if kind == "mllm_loss":
        cfg = llava_config(processor, vision_config(vsize), llama_config(size, processor))
        model = _build(lambda: LlavaForConditionalGeneration(cfg), device, dtype)
        cached_model(model_key("mllm", name, device, dtype), lambda: (model, processor))
        params: dict[str, Any] = {"model": name, "batch_size": batch, "num_workers": workers}
    else:
        cfg = llama_config(size, processor)
        model = _build(lambda: LlamaForCausalLM(cfg), device, dtype)
        cached_model(model_key("lm", name, device, dtype), lambda: (model, processor.tokenizer))
        params = {"model": name, "batch_size": batch, "num_workers": workers}
    scorer: Any = build_scorer(kind, params, device=device, dtype=dtype)
    scorer.load()
    seconds, results = timed_score(scorer, items, device)
    assert all(r.error is None for r in results.values()), next(r for r in results.values() if r.error)

    # useful FLOPs: every real token through the LM, the head at counted tokens, the vision tower per image
    if kind == "mllm_loss":
        seqs = [scorer._encode(it) for it in items]
        prepared = [scorer.prepare(s) for s in sorted(seqs, key=lambda s: len(s.ids))[-batch:]]
        mo = model_only(lambda: scorer._score_batch(prepared), len(prepared), device)
    else:
        seqs = [scorer.encoder.encode(it) for it in items]
        longest = sorted(seqs, key=lambda s: len(s.ids))[-batch:]
        mo = model_only(lambda: scorer._score_batch(longest), len(longest), device)
    if PROFILE and not quick:
        from torch.profiler import ProfilerActivity, profile

        step = (lambda: scorer._score_batch(prepared)) if kind == "mllm_loss" else (
            lambda: scorer._score_batch(longest))
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            step()
            sync(device)
        print(f"--- profile: {kind} {size}, one batch of {batch}", flush=True)
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14), flush=True)
    hidden, layers, inter, heads, kv = LLAMA[size]
    lengths = [len(s.ids) for s in seqs]
    flops = llama_flops(lengths, sum(len(s.targets) for s in seqs), hidden, layers, inter, kv, heads)
    if kind == "mllm_loss":
        vh, vl, vi, _, vimg, vp = VISION[vsize]
        n_img = (vimg // vp) ** 2 + 1
        per_image = vit_flops(n_img, vh, vl, vi, 3 * vp * vp) + 2 * (n_img - 1) * (vh * hidden + hidden * hidden)
        flops += per_image * sum(len(it.images) for it in items)
    return Row(kind, f"Llama {size}" + (" + CLIP L/14-336" if kind == "mllm_loss" and not quick else ""),
               batch, len(items), seconds, mo, flops, tokens=sum(lengths))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes on CPU (checks the script)")
    ap.add_argument("--workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--only", default="", help="comma-separated subset, run in this order: clip-b32,clip-l336,"
                    "clip-l336-pil,clip-l336-gpu-resize,clip-l336-compiled,lm-0.5B,mllm-0.5B,lm-7B,mllm-7B")
    ap.add_argument("--profile", action="store_true", help="print a kernel table for one batch of each LM")
    args = ap.parse_args(argv)
    global PROFILE
    PROFILE = args.profile
    quick = args.quick
    device = torch.device("cpu" if quick or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    torch.backends.cuda.matmul.allow_tf32 = True
    peak = measure_peak(device, dtype, 512 if quick else 8192)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}, {dtype}, peak (matmul) {peak / 1e12:,.1f} TFLOP/s", flush=True)

    n = (lambda full, small: small if quick else full)  # noqa: E731
    plan: list[tuple[str, Callable[[list[ScoreItem]], Row]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        items = make_samples(Path(tmp) / "images", n(8192, 48), sizes=(480, 640) if not quick else (96, 160),
                             n_images=n(512, 16))
        print(f"{len(items)} samples, {args.workers} loader workers", flush=True)
        if quick:
            tiny = write_tiny_models(Path(tmp) / "tiny")
            plan.append(("clip-tiny", lambda it: run_clip(str(tiny["clip"]), None, it, 16, args.workers, device)))
        else:
            plan.append(("clip-b32", lambda it: run_clip("ViT-B-32", None, it, 512, args.workers, device)))
            for label, path, comp in (("clip-l336", "nvjpeg", False), ("clip-l336-pil", "host", False),
                                      ("clip-l336-gpu-resize", "device_resize", False),
                                      ("clip-l336-compiled", "nvjpeg", True)):
                plan.append((label, partial(lambda it, p, c: run_clip(
                    "ViT-L-14-336", None, it[:4096], 256, args.workers, device, image_path=p, compile_visual=c),
                    p=path, c=comp)))
        # (size, lm batch, mllm batch, samples): batches of ~10k+ tokens keep the GPU's matrix units fed
        sizes = [("tiny", 8, 8, 48)] if quick else [("0.5B", 256, 64, 4096), ("7B", 128, 32, 1024)]
        for size, lm_batch, mllm_batch, count in sizes:
            lm_run = partial(run_loss, "lm_loss", size, batch=lm_batch, count=count, workers=args.workers,
                             device=device, dtype=dtype, quick=quick)
            mllm_run = partial(run_loss, "mllm_loss", size, batch=mllm_batch, count=count // 2,
                               workers=args.workers, device=device, dtype=dtype, quick=quick)
            plan += [(f"lm-{size}", lm_run), (f"mllm-{size}", mllm_run)]
        order = [x for x in args.only.split(",") if x]
        only = set(order)
        if order:  # run in the order given
            plan.sort(key=lambda p: order.index(p[0]) if p[0] in only else len(order))
        head = ["scorer", "model", "batch", "samples/s (end to end)", "samples/s (model only)", "tokens/s",
                "TFLOP/s", "MFU"]
        lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" if i < 2 else "---:" for i in range(8)) + " |"]
        for label, fn in plan:
            if only and label not in only:
                continue
            t0 = time.perf_counter()
            row = fn(items)
            clear_model_cache()  # free the device for the next model
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            lines.append("| " + " | ".join(row.cells(peak)) + " |")
            print(f"{label} ({time.perf_counter() - t0:.0f} s): {lines[-1]}", flush=True)
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
