"""The demo's tiny models, trained offline on this machine: a CLIP (open_clip) and a LLaVA (transformers).

``ensure_demo_models(models_root, seed)`` returns ``models_root/demo-v{CODE_VERSION}-seed{S}-{recipe hash}/{clip,
llava}``, training them first when that folder does not exist yet (a second call returns at once). Both are saved
in the formats the ``clip`` and ``mllm_loss`` scorers load (the layouts of :mod:`workers.tiny_models`), so the
demo scores through the same code as ``ViT-L-14-336`` and ``llava-hf/llava-1.5-7b-hf``.

Neither model ever sees a sample it scores: both train on a *separate* synthetic corpus (the same generator,
another seed, no defects), so nothing about the demo's defects can be memorised (training on the scored samples
let a CLIP memorise its swapped pairs; DESIGN.md, "Demo feasibility").

- CLIP: 64 px images, patch 8, open_clip's own tokenizer; CLIP's contrastive (InfoNCE) loss on the text the
  ``clip`` scorer reads (all answers; sometimes one answer alone, so short texts align too). Only the
  token-embedding rows the corpus uses are trained (a few hundred of 49,408).
- LLaVA: the CLIP's image tower converted to transformers' ``CLIPVisionModel``, frozen, penultimate-layer patch
  features (as LLaVA-1.5); a two-layer MLP projector; a small Llama; a byte-level BPE trained on the corpus. It
  learns the answer tokens (and the ``</s>`` ending each answer) of clean conversations in LLaVA-1.5's format,
  encoded by the ``mllm_loss`` scorer's own :class:`ConversationEncoder`, so training and scoring see the same
  tokens. All short-answer samples (conversation, referring QA: few tokens, each tied to the image) and half of
  the long ones (detail description, complex reasoning) are used: grounding per CPU second is what limits it.

Deterministic for a seed (epochs, not time budgets), on 2 torch threads: about 2.5 minutes on 2 cores.
``python -m workers.demo_train OUT [--seed S] [--set FIELD=VALUE] [--eval DATASET_DIR]`` trains and measures it
outside the demo.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from backend.synthetic import TASK_TYPES, make_svit_like, svit_task_files  # noqa: E402
from workers.tiny_models import CLIP_WEIGHTS, IMAGE_TOKEN, train_bpe  # noqa: E402

CODE_VERSION = 2  # bump when a change here changes the trained weights: the cache key holds it
CLIP_NAME = "qspace-demo-clip"
THREADS = 2
CORPUS_SEED_OFFSET = 7_919_000  # the training corpus: same generator, a seed no demo dataset uses
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]
SHORT_TYPES = ("conversation", "referring_qa")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the weights, besides the seed and this module's code."""

    corpus_size: int = 6000  # clean synthetic samples generated for training
    image_size: int = 64
    patch_size: int = 8
    # CLIP: trains on a fixed random subset of the corpus
    clip_samples: int = 3000
    clip_width: int = 64
    clip_layers: int = 2
    clip_text_width: int = 64
    clip_text_layers: int = 2
    clip_embed_dim: int = 64
    clip_epochs: int = 6
    clip_batch: int = 32
    clip_lr: float = 7e-4
    clip_single_answer_p: float = 0.3  # multi-turn samples: train on one answer instead of all, this often
    # LLaVA: every short-answer sample of the corpus, this share of the long-answer ones
    llava_long_fraction: float = 0.5
    vocab_size: int = 800
    llm_hidden: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    llm_kv_heads: int = 2
    llm_intermediate: int = 256
    llava_epochs: int = 6
    llava_batch: int = 16
    llava_lr: float = 5e-3
    llava_projector_lr_mult: float = 10.0  # a faster projector: the use of the image sets in for every seed
    max_length: int = 1024

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class DemoModels:
    root: Path
    clip: Path
    llava: Path
    manifest: dict[str, Any]


def cache_dir(models_root: Path, seed: int, recipe: Recipe | None = None) -> Path:
    """Where the models of (seed, recipe, code version) live."""
    return Path(models_root) / f"demo-v{CODE_VERSION}-seed{seed}-{(recipe or Recipe()).digest()}"


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not (folder / "clip").is_dir() or not (folder / "llava").is_dir():
        return None
    return data


def cached_models(models_root: Path, seed: int = 0, recipe: Recipe | None = None) -> DemoModels | None:
    """The trained models of (seed, recipe) if the cache holds them, else None (nothing is trained)."""
    folder = cache_dir(models_root, seed, recipe)
    manifest = _read_manifest(folder)
    if manifest is None:
        return None
    return DemoModels(folder, folder / "clip", folder / "llava", manifest)


def ensure_demo_models(
    models_root: Path, seed: int = 0, recipe: Recipe | None = None, log: Log | None = None
) -> DemoModels:
    """The demo's CLIP and LLaVA for (seed, recipe): from the cache, or trained now (about 2.5 minutes on 2 cores).

    Training writes into a temporary sibling folder that is renamed into place when complete, so an
    interrupted run leaves no half-written cache entry.
    """
    recipe = recipe or Recipe()
    found = cached_models(models_root, seed, recipe)
    if found is not None:
        return found
    say = log or _print
    folder = cache_dir(models_root, seed, recipe)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = train_demo_models(tmp, seed, recipe, say)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            os.replace(tmp, folder)
        except OSError:  # a concurrent run finished first: its models are the same
            if _read_manifest(folder) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found = cached_models(models_root, seed, recipe)
    assert found is not None
    return found


def train_demo_models(out: Path, seed: int, recipe: Recipe, log: Log) -> dict[str, Any]:
    """Train both models into ``out/clip`` and ``out/llava``; returns the manifest (recipe, timings, losses)."""
    t_start = time.perf_counter()
    with _torch_threads(THREADS), _quiet():
        corpus_dir = out / "corpus"
        log(f"demo models: rendering a training corpus of {recipe.corpus_size:,} clean samples (seed {seed})")
        make_svit_like(corpus_dir, n=recipe.corpus_size, seed=seed + CORPUS_SEED_OFFSET, defect_rate=0.0)
        corpus = load_corpus(corpus_dir)
        clip_part, llava_part = split_corpus(corpus, seed, recipe)
        t0 = time.perf_counter()
        log(f"demo models: training the CLIP on {len(clip_part):,} image-text pairs")
        clip_stats = train_clip(clip_part, out / "clip", seed, recipe, log)
        t_clip = time.perf_counter() - t0
        t0 = time.perf_counter()
        log(f"demo models: training the LLaVA on {len(llava_part):,} conversations (image tower frozen)")
        llava_stats = train_llava(llava_part, out / "clip", out / "llava", seed, recipe, log)
        t_llava = time.perf_counter() - t0
        shutil.rmtree(corpus_dir)
    total = time.perf_counter() - t_start
    log(f"demo models: trained in {total:.0f} s (CLIP {t_clip:.0f} s, LLaVA {t_llava:.0f} s)")
    return {
        "code_version": CODE_VERSION,
        "seed": seed,
        "recipe": recipe.to_json(),
        "clip": clip_stats,
        "llava": llava_stats,
        "seconds": {"total": round(total, 1), "clip": round(t_clip, 1), "llava": round(t_llava, 1)},
        "torch": torch.__version__,
    }


def split_corpus(
    corpus: Sequence[CorpusSample], seed: int, recipe: Recipe
) -> tuple[list[CorpusSample], list[CorpusSample]]:
    """(the CLIP's samples: a random subset; the LLaVA's: all short-answer samples, a share of the long ones)."""
    order = list(range(len(corpus)))
    random.Random(seed + 3).shuffle(order)
    clip_part = [corpus[i] for i in sorted(order[: recipe.clip_samples])]
    long_ids = [i for i in order if corpus[i].task_type not in SHORT_TYPES]
    keep_long = set(long_ids[: round(len(long_ids) * recipe.llava_long_fraction)])
    llava_part = [s for i, s in enumerate(corpus) if s.task_type in SHORT_TYPES or i in keep_long]
    return clip_part, llava_part


# --- helpers ------------------------------------------------------------------------------------------


def _print(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """open_clip warns that a model built without weights is random, transformers shows bars: both meant."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@dataclass(frozen=True)
class CorpusSample:
    task_type: str
    image: str  # absolute path
    conversations: list[dict[str, str]]


def load_corpus(folder: Path) -> list[CorpusSample]:
    """The records of a ``make_svit_like`` folder, task types in file order."""
    out = []
    for task, path in zip(TASK_TYPES, svit_task_files(folder), strict=True):
        for rec in json.loads(path.read_text()):
            out.append(CorpusSample(task, str(folder / rec["image"]), rec["conversations"]))
    return out


def _answers(sample: CorpusSample) -> list[str]:
    from workers.scorers.base import answers

    return answers(sample.conversations)


def _schedule(step: int, total: int, warmup: float = 0.06) -> float:
    """Linear warm-up, then cosine decay to 5%."""
    w = max(1, int(total * warmup))
    if step < w:
        return (step + 1) / w
    p = min(1.0, (step - w) / max(1, total - w))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))


def _load_rgb(path: str) -> Any:
    from workers.scorers.base import load_image

    return load_image(path)


# --- CLIP ---------------------------------------------------------------------------------------------


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


def train_clip(corpus: Sequence[CorpusSample], out: Path, seed: int, recipe: Recipe, log: Log) -> dict[str, Any]:
    """Contrastive training of a tiny open_clip model; saved as config JSON + safetensors in ``out``."""
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

    images = torch.stack([preprocess(_load_rgb(s.image)) for s in corpus])
    full_text = tokenizer([select_text(s.conversations, "answers") for s in corpus])
    singles = [tokenizer(a) if len(a) > 1 else None for a in (_answers(s) for s in corpus)]
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
    total = per_epoch * recipe.clip_epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total))
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


def hf_vision_from_open_clip(clip_dir: Path, recipe: Recipe) -> tuple[Any, Any]:
    """(transformers ``CLIPVisionConfig``, state dict) equal to the open_clip model's image tower."""
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig

    sd = load_file(str(clip_dir / CLIP_WEIGHTS))
    w, layers = recipe.clip_width, recipe.clip_layers
    config = CLIPVisionConfig(
        hidden_size=w,
        intermediate_size=4 * w,
        num_hidden_layers=layers,
        num_attention_heads=w // 32,
        image_size=recipe.image_size,
        patch_size=recipe.patch_size,
        projection_dim=recipe.clip_embed_dim,
        hidden_act="gelu",  # open_clip's default (not quick_gelu) for a custom config
        layer_norm_eps=1e-5,
    )
    v = "visual."
    out: dict[str, torch.Tensor] = {
        "embeddings.class_embedding": sd[v + "class_embedding"],
        "embeddings.patch_embedding.weight": sd[v + "conv1.weight"],
        "embeddings.position_embedding.weight": sd[v + "positional_embedding"],
        "pre_layrnorm.weight": sd[v + "ln_pre.weight"],
        "pre_layrnorm.bias": sd[v + "ln_pre.bias"],
        "post_layernorm.weight": sd[v + "ln_post.weight"],
        "post_layernorm.bias": sd[v + "ln_post.bias"],
    }
    for i in range(layers):
        src, dst = f"{v}transformer.resblocks.{i}.", f"encoder.layers.{i}."
        qw, kw, vw = sd[src + "attn.in_proj_weight"].chunk(3)
        qb, kb, vb = sd[src + "attn.in_proj_bias"].chunk(3)
        out.update(
            {
                dst + "self_attn.q_proj.weight": qw,
                dst + "self_attn.q_proj.bias": qb,
                dst + "self_attn.k_proj.weight": kw,
                dst + "self_attn.k_proj.bias": kb,
                dst + "self_attn.v_proj.weight": vw,
                dst + "self_attn.v_proj.bias": vb,
                dst + "self_attn.out_proj.weight": sd[src + "attn.out_proj.weight"],
                dst + "self_attn.out_proj.bias": sd[src + "attn.out_proj.bias"],
                dst + "layer_norm1.weight": sd[src + "ln_1.weight"],
                dst + "layer_norm1.bias": sd[src + "ln_1.bias"],
                dst + "layer_norm2.weight": sd[src + "ln_2.weight"],
                dst + "layer_norm2.bias": sd[src + "ln_2.bias"],
                dst + "mlp.fc1.weight": sd[src + "mlp.c_fc.weight"],
                dst + "mlp.fc1.bias": sd[src + "mlp.c_fc.bias"],
                dst + "mlp.fc2.weight": sd[src + "mlp.c_proj.weight"],
                dst + "mlp.fc2.bias": sd[src + "mlp.c_proj.bias"],
            }
        )
    return config, {k: t.contiguous() for k, t in out.items()}


# --- LLaVA --------------------------------------------------------------------------------------------


def _corpus_texts(corpus: Sequence[CorpusSample]) -> Iterator[str]:
    """The corpus rendered as LLaVA-1.5 prompts: what the tokenizer will see."""
    for s in corpus:
        parts = []
        for c in s.conversations:
            role = "USER: " if c["from"] == "human" else "ASSISTANT: "
            parts.append(role + c["value"])
        yield " ".join(parts)


def build_llava(corpus: Sequence[CorpusSample], clip_dir: Path, seed: int, recipe: Recipe) -> tuple[Any, Any]:
    """(LlavaForConditionalGeneration with the CLIP's image tower, LlavaProcessor), untrained language side."""
    from transformers import (
        CLIPImageProcessor,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(_corpus_texts(corpus), recipe.vocab_size, SPECIALS, bos="<s>"),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=recipe.max_length,
        padding_side="right",
    )
    ids: dict[str, int] = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in SPECIALS}  # type: ignore[arg-type]
    vision, vision_state = hf_vision_from_open_clip(clip_dir, recipe)
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.llm_hidden,
        intermediate_size=recipe.llm_intermediate,
        num_hidden_layers=recipe.llm_layers,
        num_attention_heads=recipe.llm_heads,
        num_key_value_heads=recipe.llm_kv_heads,
        max_position_embeddings=recipe.max_length,
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"],
        tie_word_embeddings=False,
    )
    n_image_tokens = (recipe.image_size // recipe.patch_size) ** 2  # CLS dropped ("default" strategy)
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids[IMAGE_TOKEN],
        image_seq_length=n_image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed + 1)
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(vision_state, strict=True)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": recipe.image_size},
        crop_size={"height": recipe.image_size, "width": recipe.image_size},
        do_center_crop=True,
    )
    # No chat template: the scorer's "auto" then renders LLaVA-1.5's own training format,
    # "USER: <image>\n{q} ASSISTANT: {a}</s>", and counts the </s> that ends each answer.
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=recipe.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return model, processor


def make_encoder(model: Any, processor: Any) -> Any:
    """The ``mllm_loss`` scorer's conversation encoder for this model (the scorer builds the same one)."""
    from workers.scorers.lm import ConversationEncoder, model_max_length

    tokenizer = processor.tokenizer
    return ConversationEncoder(
        tokenizer,
        template="auto",
        include_eos=True,
        max_length=model_max_length(model, tokenizer),
        template_owner=processor,
        structured=True,
        image_token_id=int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)),
        n_image_tokens=int(model.config.image_seq_length),
    )


def _length_batches(lengths: Sequence[int], batch: int, gen: torch.Generator) -> list[list[int]]:
    """Random batches of similar length: shuffle, sort within windows of 16 batches, cut, shuffle the batches."""
    perm = torch.randperm(len(lengths), generator=gen).tolist()
    window = batch * 16
    batches = []
    for w in range(0, len(perm), window):
        part = sorted(perm[w : w + window], key=lambda i: lengths[i])
        batches += [part[k : k + batch] for k in range(0, len(part), batch)]
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]


def train_llava(
    corpus: Sequence[CorpusSample], clip_dir: Path, out: Path, seed: int, recipe: Recipe, log: Log
) -> dict[str, Any]:
    """Train the projector and the Llama on the answer tokens of the corpus; the image tower stays frozen."""
    from backend.scorer_specs import ScoreItem

    model, processor = build_llava(corpus, clip_dir, seed, recipe)
    encoder = make_encoder(model, processor)
    seqs = [encoder.encode(ScoreItem(i, s.conversations, [s.image]), n_images=1) for i, s in enumerate(corpus)]
    pad_id = int(processor.tokenizer.pad_token_id)
    image_id = int(model.config.image_token_id)

    core = model.model  # LlavaModel: vision_tower, multi_modal_projector, language_model
    core.vision_tower.requires_grad_(False)
    core.vision_tower.eval()
    # The tower is frozen: its features are computed once, exactly as LlavaModel selects them.
    feats = []
    with torch.no_grad():
        for k in range(0, len(corpus), 128):
            imgs = [_load_rgb(s.image) for s in corpus[k : k + 128]]
            pixels = processor.image_processor(images=imgs, return_tensors="pt")["pixel_values"]
            states = core.vision_tower(pixels, output_hidden_states=True).hidden_states
            feats.append(states[model.config.vision_feature_layer][:, 1:].clone())  # "default": CLS dropped
    features = torch.cat(feats)

    params = [p for p in model.parameters() if p.requires_grad]
    projector = {id(p) for p in core.multi_modal_projector.parameters()}
    groups = []
    for is_proj in (False, True):
        for decay in (True, False):
            group = [p for p in params if (id(p) in projector) == is_proj and (p.ndim >= 2) == decay]
            lr = recipe.llava_lr * (recipe.llava_projector_lr_mult if is_proj else 1.0)
            groups.append({"params": group, "weight_decay": 0.05 if decay else 0.0, "lr": lr})
    opt = torch.optim.AdamW(groups, lr=recipe.llava_lr, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(seed + 2)
    lengths = [len(s.ids) for s in seqs]
    per_epoch = math.ceil(len(seqs) / recipe.llava_batch)
    total = per_epoch * recipe.llava_epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total))
    embed = core.language_model.get_input_embeddings()
    model.train()
    core.vision_tower.eval()
    losses = []
    t0 = time.perf_counter()
    for epoch in range(recipe.llava_epochs):
        tot_loss, tot_tokens = 0.0, 0
        for batch in _length_batches(lengths, recipe.llava_batch, gen):
            width = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            rows, cols = [], []
            for r, i in enumerate(batch):
                s = seqs[i]
                ids[r, : len(s.ids)] = torch.tensor(s.ids)
                mask[r, : len(s.ids)] = 1
                rows += [r] * len(s.targets)
                cols += s.targets
            x = embed(ids)
            image_embeds = core.multi_modal_projector(features[batch])  # [b, n_image_tokens, hidden]
            x = x.masked_scatter((ids == image_id)[..., None].expand_as(x), image_embeds.to(x.dtype))
            hidden = core.language_model(inputs_embeds=x, attention_mask=mask, use_cache=False).last_hidden_state
            r_t, c_t = torch.tensor(rows), torch.tensor(cols)
            logits = model.lm_head(hidden[r_t, c_t - 1])
            loss = F.cross_entropy(logits.float(), ids[r_t, c_t])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            tot_loss += loss.item() * len(rows)
            tot_tokens += len(rows)
        losses.append(tot_loss / tot_tokens)
        log(
            f"  LLaVA epoch {epoch + 1:2d}/{recipe.llava_epochs}  answer-token loss {losses[-1]:.3f}  "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return {
        "epochs": recipe.llava_epochs,
        "steps": total,
        "loss": [round(x, 4) for x in losses],
        "vocab": len(processor.tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


# --- measuring: the scorers' figures on a make_svit_like dataset --------------------------------------


def evaluate(dataset_dir: Path, models: DemoModels, log: Log | None = None) -> dict[str, Any]:
    """Score a ``make_svit_like`` folder in this process with the ``clip`` and ``mllm_loss`` scorers and measure
    how well the scores find its defects (the figures tests/test_demo.py checks through the queue)."""
    from backend.demo import quality_figures
    from backend.scorer_specs import ScoreItem
    from workers.scorers.registry import build_scorer

    say = log or _print
    items: list[ScoreItem] = []
    task: list[str] = []
    defect: list[str] = []
    for t, path in zip(TASK_TYPES, svit_task_files(dataset_dir), strict=True):
        for rec in json.loads(path.read_text()):
            items.append(ScoreItem(len(items), rec["conversations"], [str(Path(dataset_dir) / rec["image"])]))
            task.append(t)
            defect.append(rec.get("defect", "none"))
    with _torch_threads(THREADS), _quiet():
        t0 = time.perf_counter()
        clip = build_scorer("clip", {"model": str(models.clip), "num_workers": 0}).score_all(items)
        t_clip = time.perf_counter() - t0
        t0 = time.perf_counter()
        mllm = build_scorer("mllm_loss", {"model": str(models.llava), "num_workers": 0, "batch_size": 16}).score_all(
            items
        )
        t_mllm = time.perf_counter() - t0
    sim = {i: r.metrics["similarity"] for i, r in clip.items() if r.metrics}
    loss = {i: r.metrics for i, r in mllm.items() if r.metrics}
    report = quality_figures(
        [
            {"task_type": task[i], "defect": defect[i], "similarity": sim.get(i), **(loss.get(i) or {})}
            for i in range(len(items))
        ]
    )
    report["seconds"] = {"clip": round(t_clip, 1), "mllm_loss": round(t_mllm, 1)}
    say(json.dumps(report, indent=1))
    return report


# --- CLI ----------------------------------------------------------------------------------------------


def _parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(Recipe)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        if key not in types:
            raise SystemExit(f"--set {pair}: unknown recipe field (known: {', '.join(types)})")
        default = getattr(Recipe(), key)
        out[key] = type(default)(raw)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.demo_train", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="models root (the cache folder is made under it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a recipe field")
    ap.add_argument("--eval", type=Path, help="a make_svit_like folder to score and measure")
    args = ap.parse_args(argv)
    overrides = _parse_overrides(args.set)
    models = ensure_demo_models(args.out, args.seed, replace(Recipe(), **overrides))
    print(json.dumps(models.manifest, indent=1))
    if args.eval:
        evaluate(args.eval, models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
