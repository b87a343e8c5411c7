"""CPU benchmark of the closed loop's engine with the tiny LLaVA: training throughput against a forward-only pass
over the same batches, the Trainer against a hand-written loop, and evaluation speed.

- ``train()``: the real job (transformers Trainer, checkpoints, progress), timed end to end and in its steady
  state (between the first and the last optimizer step, from the progress reports).
- forward-only: the model's forward with labels (the loss) under ``no_grad``, over the Trainer's own batches
  (the same collator, the same sample order and padding).
- hand loop: forward, backward, clip, AdamW step over those batches, no Trainer: what the Trainer costs.
- evaluation: a multiple-choice suite (4 options per item), the shared-prefix path against one model call per
  option (the per-item reference).

    python -m bench.training [--samples 300] [--epochs 3] [--batch 16] [--layers 2] [--threads 1]
                             [--eval-items 500] [--eval-batch 16]

``--model DIR`` benchmarks another LLaVA checkpoint (e.g. the demo's) instead of the tiny one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

import torch  # noqa: E402

from backend.eval_specs import load_eval_suite  # noqa: E402
from backend.scorer_specs import ScoreItem  # noqa: E402
from backend.train_specs import TrainParams, resolve_train_params  # noqa: E402
from bench.scoring import make_samples  # noqa: E402
from workers.evaluation import SuiteEvaluator  # noqa: E402
from workers.tiny_models import _WORDS, write_tiny_models  # noqa: E402
from workers.training import Progress, train  # noqa: E402
from workers.training.data import Collator, Examples  # noqa: E402
from workers.training.job import encode_for_training  # noqa: E402
from workers.training.model import load_for_training, prepare_model  # noqa: E402
from workers.training.trainer import JobCallback, make_trainer, stage_arguments  # noqa: E402

CPU = torch.device("cpu")


def trainer_batches(model_dir: str, items: list[ScoreItem], params: TrainParams, folder: Path) -> list[dict[str, Any]]:
    """One epoch of the batches the Trainer feeds the model (collated), in its order for seed 0."""
    [(examples, _)] = encode_for_training(model_dir, params, [items])
    model, processor = load_for_training(model_dir, CPU, torch.float32)
    collator = Collator(processor.image_processor, int(processor.tokenizer.pad_token_id))
    args = stage_arguments(params, folder, seed=0, max_steps=1, precision="fp32", device=CPU)
    callback = JobCallback(stage=0, n_stages=1, steps_before=0, total_steps=1, samples_per_step=1, on_progress=None,
                           should_stop=None)
    trainer = make_trainer(model, args, Examples(examples), collator, params.lr, callback)
    return list(trainer.get_train_dataloader())


def forward_only(model_dir: str, batches: list[dict[str, Any]], epochs: int) -> float:
    """Samples/s of the forward pass with the loss, no gradients."""
    model, _ = load_for_training(model_dir, CPU, torch.float32)
    n, t0 = 0, time.perf_counter()
    with torch.no_grad():
        for _ in range(epochs):
            for b in batches:
                model(**b)
                n += len(b["input_ids"])
    return n / (time.perf_counter() - t0)


def hand_loop(model_dir: str, batches: list[dict[str, Any]], epochs: int, params: TrainParams) -> float:
    """Samples/s of forward + backward + AdamW (projector at its own rate), no Trainer."""
    model, _ = load_for_training(model_dir, CPU, torch.float32)
    model = prepare_model(model, params, seed=0, precision="fp32")
    proj = {id(p) for p in model.model.multi_modal_projector.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([
        {"params": [p for p in trainable if id(p) not in proj], "lr": params.lr},
        {"params": [p for p in trainable if id(p) in proj], "lr": params.projector_lr or params.lr},
    ], weight_decay=0.0)
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for b in batches:
            loss = model(**b).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            n += len(b["input_ids"])
    return n / (time.perf_counter() - t0)


def write_suite(folder: Path, items: list[ScoreItem], n: int) -> Path:
    """``n`` multiple-choice items on the samples' images: 4 options from a small vocabulary."""
    rng = random.Random(1)
    words = ["red", "blue", "green", "yellow", "circle", "square", "triangle", "star", "one", "two", "three",
             "left", "right", "top", "bottom"]
    lines = []
    for i in range(n):
        options = rng.sample(words, 4)
        q = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 10))).capitalize() + "?"
        lines.append({"id": i, "image": items[i % len(items)].images[0], "question": q, "options": options,
                      "answer": rng.randrange(4)})
    path = folder / "suite.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--layers", type=int, default=2, help="depth of the tiny model's towers")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--eval-items", type=int, default=500)
    ap.add_argument("--eval-batch", type=int, default=16, help="items per pair of model calls in the evaluation")
    ap.add_argument("--model", help="a LLaVA checkpoint folder instead of the tiny model")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = resolve_train_params({"preset": "quick", "epochs": args.epochs, "batch_size": args.batch,
                                   "checkpoint_every": 10_000})
    out: dict[str, Any] = {
        "command": "python -m bench.training " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": args.threads,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = args.model or str(write_tiny_models(root / "models", layers=args.layers)["llava"])
        items = make_samples(root / "images", args.samples, sizes=(48, 96))
        batches = trainer_batches(model_dir, items, params, root / "probe")
        n_samples = args.samples * args.epochs

        fwd = forward_only(model_dir, batches, args.epochs)
        hand = hand_loop(model_dir, batches, args.epochs, params)
        stamps: list[tuple[float, int]] = []

        def note(p: Progress) -> None:
            stamps.append((time.perf_counter(), p.step))

        t0 = time.perf_counter()
        result = train(model_dir, [items], root / "job", params=params, seed=0, on_progress=note)
        wall = time.perf_counter() - t0
        (t_first, s_first), (t_last, s_last) = stamps[0], stamps[-1]
        steady = (s_last - s_first) * args.batch / (t_last - t_first)  # all batches full but the last
        out["train"] = {
            "samples": args.samples, "epochs": args.epochs, "batch": args.batch, "steps": result.steps,
            "forward_only_samples_per_s": round(fwd, 1),
            "hand_loop_samples_per_s": round(hand, 1),
            "trainer_steady_samples_per_s": round(steady, 1),
            "train_job_wall_s": round(wall, 2),
            "train_job_samples_per_s": round(n_samples / wall, 1),
            "ratio_trainer_to_forward": round(steady / fwd, 3),
            "ratio_hand_loop_to_forward": round(hand / fwd, 3),
            "ratio_trainer_to_hand_loop": round(steady / hand, 3),
        }
        print(json.dumps(out["train"]), file=sys.stderr)

        suite = load_eval_suite(write_suite(root, items, args.eval_items))
        ev = SuiteEvaluator(result.model_dir, device="cpu")
        t0 = time.perf_counter()
        res = ev.evaluate(suite, batch_items=args.eval_batch)
        fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        for it in suite.items:
            ev.reference_item(it)
        slow = time.perf_counter() - t0
        assert res is not None
        out["eval"] = {
            "items": args.eval_items, "options": 4, "batch_items": args.eval_batch,
            "shared_prefix_s": round(fast, 2), "per_option_calls_s": round(slow, 2),
            "speed_up": round(slow / fast, 2), "accuracy": round(res.metrics["accuracy"], 3),
        }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
