"""qspace's ``clip`` against Data-Juicer's ``image_text_similarity_filter``: the same 2,000 LLaVA-shaped samples
(a JPEG each + question/answer turns), THE SAME WEIGHTS, the same CPU, in one run (issue 19, "races against peers").

The tiny open_clip CLIP (``workers/tiny_models.py``, 12 layers per tower by default, as CLIP's) is converted to a
Hugging Face ``CLIPModel`` folder by ``bench/peers/clip_to_hf.py`` (embeddings equal within 1e-5, token ids
equal); qspace loads the open_clip checkpoint, Data-Juicer the converted one. Data-Juicer runs in its own
environment (``bench/peers/setup_data_juicer.sh`` makes ``bench/peers/.venv-dj``), its operator's own
``compute_stats_single`` one sample at a time (its executor's batched call, ``compute_stats_batched``, is a loop
over it), as shipped: no ``torch.no_grad`` (its code has none).

What each computes, and how the inputs are made to match:

- Data-Juicer: for each ``<|__dj__eoc|>`` chunk of the sample's text with images, the chunk with special tokens
  removed and stripped, ``CLIPProcessor(text, images, truncation=True, max_length=77, padding=True)``,
  ``CLIPModel(...).logits_per_text / 100`` averaged over the chunk's images (``reduce_mode="avg"``, no flips).
  ``logits_per_text`` is ``exp(logit_scale) * cos``: the checkpoint's ``logit_scale`` is set to ``ln 100``
  (where trained CLIPs sit, clamped: OpenAI's ViT-L/14 has exactly that) so the value is the cosine. qspace
  ignores ``logit_scale``.
- qspace: ``similarity`` = mean over the sample's images of cos(image, text), ``text: answers`` (the answers
  joined by a space; CLIP's first 77 tokens). Data-Juicer's text field gets that same text, one chunk, one image.
- Preprocessing: the same tokens (checked on all texts). Images: Data-Juicer's venv has no torchvision, so
  transformers picks ``CLIPImageProcessorPil``: PIL bicubic resize of the short side to 32 (as open_clip's
  torchvision ``Resize`` on a PIL image), then a centre crop at ``(size - 32) // 2``, where torchvision's
  ``CenterCrop`` (open_clip) takes ``round((size - 32) / 2)`` (half to even): when the resized long side exceeds
  32 by 3 mod 4 pixels the crops are one pixel apart. Values are compared separately for the samples whose
  crops agree (pixels equal, so values within 1e-4) and those where they don't (the difference, measured).
- Harness checks, in this process on all samples: Data-Juicer's formula recomputed with transformers on its own
  processor's inputs, and qspace's open_clip model on those same pixels and ids: both must equal Data-Juicer's
  values (the converted weights are the same model; the harness reads its values right); and open_clip's own
  preprocessing with HF's crop offset must too (the crop is the only difference).
- Also timed, not the headline: Data-Juicer's same loop under ``torch.inference_mode`` (what autograd costs it).

    python -m bench.peers.data_juicer_clip [--samples 2000] [--layers 12] [--threads 1] [--batch 32] [--dj-python PATH]
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, cast

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from backend.scorer_specs import ScoreItem  # noqa: E402
from bench.peers.clip_to_hf import check as check_conversion  # noqa: E402
from bench.peers.clip_to_hf import convert  # noqa: E402
from bench.peers.data_juicer import race_arguments, run_data_juicer  # noqa: E402
from bench.scoring import make_samples  # noqa: E402
from workers.scorers.base import select_text  # noqa: E402
from workers.scorers.clip import ClipScorer, load_clip  # noqa: E402
from workers.tiny_models import CLIP_WEIGHTS, _write_clip  # noqa: E402

DJ_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import torch
    torch.set_num_threads(int(sys.argv[3]))
    from data_juicer.ops.filter.image_text_similarity_filter import ImageTextSimilarityFilter
    from data_juicer.utils.constant import Fields, StatsKeys
    from data_juicer.utils.mm_utils import SpecialTokens
    from data_juicer.utils.model_utils import get_model
    op = ImageTextSimilarityFilter(hf_clip=sys.argv[1], min_score=-1.0, max_score=1.0, reduce_mode="avg")
    rows = [json.loads(line) for line in open(sys.argv[2])]
    rows = [{"text": SpecialTokens.image + r["text"] + SpecialTokens.eoc, "images": r["images"]} for r in rows]
    for r in rows[:16]:  # warm-up: model load, first calls
        op.compute_stats_single({**r, Fields.stats: {}})
    t0 = time.perf_counter()
    sims = [op.compute_stats_single({**r, Fields.stats: {}})[Fields.stats][StatsKeys.image_text_similarity]
            for r in rows]
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.inference_mode():  # not how it ships: what autograd costs it
        for r in rows:
            op.compute_stats_single({**r, Fields.stats: {}})
    seconds_no_grad = time.perf_counter() - t0
    _, processor = get_model(op.model_key)
    print(json.dumps({"seconds": seconds, "seconds_no_grad": seconds_no_grad, "similarity": [float(s[0]) for s in sims],
                      "image_processor": type(processor.image_processor).__name__,
                      "grad_enabled": torch.is_grad_enabled()}))
    """
)


def set_logit_scale(clip_dir: Path, value: float) -> None:
    """Rewrite the open_clip checkpoint's ``logit_scale`` (the only weight qspace's cosine never reads)."""
    from safetensors.torch import load_file, save_file

    path = clip_dir / CLIP_WEIGHTS
    state = load_file(str(path))
    state["logit_scale"] = torch.tensor(value, dtype=state["logit_scale"].dtype)
    save_file(state, str(path))


def crop_offsets(size: tuple[int, int], short: int, crop: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, left) torchvision's CenterCrop takes, (top, left) HF's takes) after resizing ``size`` (w, h) so its
    short side is ``short`` (both resize the same: the long side to ``int(short * long / short_side)``)."""
    w, h = size
    if w <= h:
        nw, nh = short, int(short * h / w)
    else:
        nw, nh = int(short * w / h), short
    tv = (round((nh - crop) / 2.0), round((nw - crop) / 2.0))  # Python's round: half to even, as torchvision
    hf = ((nh - crop) // 2, (nw - crop) // 2)
    return tv, hf


def score_qspace(clip_dir: Path, items: list[ScoreItem], batch: int) -> tuple[float, list[float]]:
    scorer = ClipScorer({"model": str(clip_dir), "batch_size": batch, "num_workers": 0})
    scorer.load()
    scorer.score_all(items[:16])  # warm-up, as for Data-Juicer
    scorer.clear_image_cache()  # every timed sample decodes and embeds its image
    t0 = time.perf_counter()
    got = scorer.score_all(items)
    seconds = time.perf_counter() - t0
    metrics = [got[it.sample_id].metrics for it in items]
    return seconds, [float(m["similarity"]) if m else math.nan for m in metrics]


@torch.inference_mode()
def harness(clip_dir: Path, hf_dir: Path, texts: list[str], paths: list[str]) -> dict[str, np.ndarray]:
    """Per sample: Data-Juicer's formula with transformers on its processor's inputs ("dj_formula"), qspace's
    open_clip model on those same pixels and ids ("open_clip_on_dj_inputs"), open_clip's own preprocessing with
    HF's crop offset ("open_clip_floor_crop"), and whether the two crops agree."""
    from torchvision.transforms import Compose
    from transformers import CLIPModel, CLIPProcessor

    hf = CLIPModel.from_pretrained(hf_dir).eval()
    processor = CLIPProcessor.from_pretrained(hf_dir, backend="pil")  # what Data-Juicer's venv resolves to
    model, preprocess, _ = load_clip(str(clip_dir), None, torch.device("cpu"), torch.float32)
    size = int(processor.image_processor.size["shortest_edge"])
    crop = int(processor.image_processor.crop_size["height"])
    ctx = int(hf.config.text_config.max_position_embeddings)
    steps = cast(Any, preprocess).transforms  # open_clip's Compose: Resize, CenterCrop, ..., ToTensor, Normalize
    resize, to_tensor = steps[0], Compose(steps[-2:])
    formula, ours, floor_crop, same = [], [], [], []
    for text, path in zip(texts, paths, strict=True):
        with Image.open(path) as im:
            image = im.convert("RGB")
        x = processor(text=text, images=[image], return_tensors="pt", truncation=True, max_length=ctx, padding=True)
        formula.append(float((hf(**x).logits_per_text / 100.0).mean()))
        i = F.normalize(model.encode_image(x["pixel_values"]), dim=-1)
        ids = F.pad(x["input_ids"], (0, ctx - x["input_ids"].shape[1]))  # open_clip's layout: 0s after the end
        t = F.normalize(model.encode_text(ids), dim=-1)
        ours.append(float((t @ i.T).mean()))
        tv, (top, left) = crop_offsets(image.size, size, crop)
        same.append(tv == (top, left))
        # open_clip's own pipeline with HF's crop offset: isolates the crop as the only difference
        pixels = to_tensor(resize(image).crop((left, top, left + crop, top + crop)))[None]
        floor_crop.append(float((t @ F.normalize(model.encode_image(pixels), dim=-1).T).mean()))
    return {
        "dj_formula": np.asarray(formula),
        "open_clip_on_dj_inputs": np.asarray(ours),
        "open_clip_floor_crop": np.asarray(floor_crop),
        "same_crop": np.asarray(same),
    }


def main() -> int:
    args = race_arguments(__doc__.splitlines()[0], "depth of each tiny CLIP tower (12 = CLIP's)")
    with tempfile.TemporaryDirectory(prefix="qspace-dj-clip-") as tmp:
        clip_dir, hf_dir = Path(tmp) / "clip", Path(tmp) / "clip-hf"
        _write_clip(clip_dir, args.layers)
        set_logit_scale(clip_dir, math.log(100.0))
        convert(clip_dir, hf_dir)
        items = make_samples(Path(tmp) / "images", args.samples)
        texts = [select_text(it.conversations, "answers") for it in items]
        paths = [it.images[0] for it in items]
        conversion = check_conversion(clip_dir, hf_dir, texts, [Image.open(p).convert("RGB") for p in paths[:64]])
        data = Path(tmp) / "samples.jsonl"
        data.write_text(
            "".join(json.dumps({"text": t, "images": [p]}) + "\n" for t, p in zip(texts, paths, strict=True))
        )
        q_seconds, q_sim = score_qspace(clip_dir, items, args.batch)
        dj = run_data_juicer(args, DJ_SCRIPT, hf_dir, data, tmp)
        check = harness(clip_dir, hf_dir, texts, paths)
    d = np.asarray(dj["similarity"], dtype=np.float64)
    q = np.asarray(q_sim, dtype=np.float64)
    same = check["same_crop"]
    diff = np.abs(q - d)
    report = {
        "samples": args.samples,
        "layers": args.layers,
        "threads": args.threads,
        "qspace_clip_samples_per_s": round(args.samples / q_seconds, 1),
        "data_juicer_image_text_similarity_samples_per_s": round(args.samples / dj["seconds"], 1),
        "speedup": round(dj["seconds"] / q_seconds, 2),
        "data_juicer_under_inference_mode_samples_per_s": round(args.samples / dj["seconds_no_grad"], 1),
        "speedup_vs_data_juicer_under_inference_mode": round(dj["seconds_no_grad"] / q_seconds, 2),
        "data_juicer": {"image_processor": dj["image_processor"], "grad_enabled": dj["grad_enabled"]},
        "conversion": conversion,
        "values": {
            "harness_max_abs_diff_dj_vs_same_formula_here": float(np.max(np.abs(d - check["dj_formula"]))),
            "harness_max_abs_diff_dj_vs_open_clip_on_dj_inputs": float(
                np.max(np.abs(d - check["open_clip_on_dj_inputs"]))
            ),
            "harness_max_abs_diff_dj_vs_open_clip_preprocessing_with_floor_crop": float(
                np.max(np.abs(d - check["open_clip_floor_crop"]))
            ),
            "same_crop_samples": int(same.sum()),
            "qspace_vs_dj_max_abs_diff_same_crop": float(diff[same].max()) if same.any() else None,
            "crop_one_pixel_apart_samples": int((~same).sum()),
            "qspace_vs_dj_max_abs_diff_crop_apart": float(diff[~same].max()) if (~same).any() else None,
            "qspace_vs_dj_mean_abs_diff_crop_apart": float(diff[~same].mean()) if (~same).any() else None,
        },
        "versions": {"torch": torch.__version__},
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
