"""The demo's tiny LLaVA (transformers): the CLIP's image tower, frozen, a projector and a small Llama trained on
the corpus's answer tokens, saved in the layout the ``mllm_loss`` scorer loads."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from workers.demo_models.corpus import CorpusSample, load_rgb  # noqa: E402
from workers.demo_models.recipe import SPECIALS, Log, Recipe, Step, lr_schedule  # noqa: E402
from workers.tiny_models import CLIP_WEIGHTS, IMAGE_TOKEN, train_bpe  # noqa: E402


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


def llava_steps(n_samples: int, recipe: Recipe) -> int:
    """Optimizer steps of :func:`train_llava` on `n_samples` conversations (every batch of
    :func:`_length_batches`: windows are whole batches, so only the last batch is short)."""
    return math.ceil(n_samples / recipe.llava_batch) * recipe.llava_epochs


def train_llava(
    corpus: Sequence[CorpusSample],
    clip_dir: Path,
    out: Path,
    seed: int,
    recipe: Recipe,
    log: Log,
    on_step: Step | None = None,
) -> dict[str, Any]:
    """Train the projector and the Llama on the answer tokens of the corpus; the image tower stays frozen.
    `on_step` is called after each optimizer step."""
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
            imgs = [load_rgb(s.image) for s in corpus[k : k + 128]]
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
    total = llava_steps(len(seqs), recipe)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_schedule(s, total))
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
            if on_step is not None:
                on_step()
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
