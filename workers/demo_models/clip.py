"""The demo's tiny CLIP (open_clip): contrastive training on the corpus, saved in the layout the ``clip`` scorer
loads."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from workers.demo_models.corpus import CorpusSample, answers_of, load_rgb  # noqa: E402
from workers.demo_models.recipe import CLIP_NAME, Log, Recipe, Step, lr_schedule  # noqa: E402
from workers.tiny_models import CLIP_WEIGHTS  # noqa: E402


def clip_config(recipe: Recipe) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "embed_dim": recipe.clip_embed_dim,
        "vision_cfg": {
            "image_size": recipe.image_size,
            "layers": recipe.clip_layers,
            "width": recipe.clip_width,
            "head_width": 32,
            "patch_size": recipe.patch_size,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": recipe.clip_text_width,
            "heads": max(1, recipe.clip_text_width // 32),
            "layers": recipe.clip_text_layers,
        },
    }
    return cfg


def clip_steps(n_samples: int, recipe: Recipe) -> int:
    """Optimizer steps of :func:`train_clip` on `n_samples` pairs (whole batches only)."""
    return (n_samples // recipe.clip_batch) * recipe.clip_epochs


def train_clip(
    corpus: Sequence[CorpusSample], out: Path, seed: int, recipe: Recipe, log: Log, on_step: Step | None = None
) -> dict[str, Any]:
    """Contrastive training of a tiny open_clip model; saved as config JSON + safetensors in ``out``.
    `on_step` is called after each optimizer step."""
    import open_clip
    from safetensors.torch import save_file

    from workers.scorers.base import select_text
    from workers.scorers.clip import encode_text_trimmed

    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / f"{CLIP_NAME}.json"
    cfg_path.write_text(json.dumps(clip_config(recipe), indent=2) + "\n")
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(CLIP_NAME, pretrained=None)
    tokenizer = open_clip.get_tokenizer(CLIP_NAME)

    images = torch.stack([preprocess(load_rgb(s.image)) for s in corpus])
    full_text = tokenizer([select_text(s.conversations, "answers") for s in corpus])
    singles = [tokenizer(a) if len(a) > 1 else None for a in (answers_of(s) for s in corpus)]
    # Train only the embedding rows the corpus uses (a few hundred of 49,408): the optimizer step and the
    # embedding gradient stay small. Order-preserving, so the end token keeps the largest id (argmax pooling).
    used = torch.unique(torch.cat([full_text.flatten(), *[t.flatten() for t in singles if t is not None]]))
    remap = torch.zeros(int(used.max()) + 1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    full_embedding = model.token_embedding
    model.token_embedding = torch.nn.Embedding.from_pretrained(full_embedding.weight[used].clone(), freeze=False)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}],
        lr=recipe.clip_lr,
        betas=(0.9, 0.98),
    )
    n, b = len(corpus), recipe.clip_batch
    per_epoch = n // b
    total = clip_steps(n, recipe)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_schedule(s, total))
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    model.train()
    losses = []
    t0 = time.perf_counter()
    for epoch in range(recipe.clip_epochs):
        perm = torch.randperm(n, generator=gen)
        running = 0.0
        for k in range(per_epoch):
            idx = perm[k * b : (k + 1) * b]
            rows = []
            for i in idx.tolist():
                one = singles[i]
                if one is not None and rng.random() < recipe.clip_single_answer_p:
                    rows.append(one[rng.randrange(len(one))])
                else:
                    rows.append(full_text[i])
            text = remap[torch.stack(rows)]
            img = F.normalize(model.encode_image(images[idx]), dim=-1)
            txt = F.normalize(encode_text_trimmed(model, text), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.T
            target = torch.arange(len(idx))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            running += loss.item()
            if on_step is not None:
                on_step()
        losses.append(running / per_epoch)
        elapsed = time.perf_counter() - t0
        log(f"  CLIP  epoch {epoch + 1:2d}/{recipe.clip_epochs}  contrastive loss {losses[-1]:.3f}  ({elapsed:.0f} s)")
    model.eval()
    with torch.no_grad():
        full_embedding.weight[used] = model.token_embedding.weight
    model.token_embedding = full_embedding
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / CLIP_WEIGHTS))
    return {"epochs": recipe.clip_epochs, "steps": total, "loss": [round(x, 4) for x in losses]}
