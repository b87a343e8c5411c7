"""Convert an open_clip CLIP (the model qspace's ``clip`` scorer loads) to a Hugging Face ``CLIPModel`` folder.

Peers that score with transformers (Data-Juicer's ``image_text_similarity_filter``) then run THE SAME WEIGHTS as
qspace: the folder holds ``config.json`` + weights and a ``CLIPProcessor`` whose image processor has open_clip's
resize / crop size, interpolation, mean and std, and whose tokenizer's ``vocab.json`` / ``merges.txt`` are built
from open_clip's own BPE file (so token ids match; open_clip's ``<start_of_text>`` / ``<end_of_text>`` become HF's
``<|startoftext|>`` / ``<|endoftext|>``, ids 49406 / 49407 as in OpenAI's vocabulary).

Mapping (open_clip -> HF), per tower: ``conv1`` -> ``patch_embedding``, ``class_embedding``, ``positional_embedding``
-> ``position_embedding.weight``, ``ln_pre`` / ``ln_post`` -> ``pre_layrnorm`` / ``post_layernorm``,
``ln_final`` -> ``final_layer_norm``; per block ``ln_1`` / ``ln_2`` -> ``layer_norm1`` / ``layer_norm2``,
``attn.in_proj_{weight,bias}`` (nn.MultiheadAttention's fused q|k|v) split into ``q_proj`` / ``k_proj`` /
``v_proj``, ``attn.out_proj``, ``mlp.c_fc`` / ``mlp.c_proj`` -> ``mlp.fc1`` / ``mlp.fc2``; ``visual.proj`` and
``text_projection`` (``x @ P``) -> bias-free Linear weights ``P.T``; ``logit_scale`` as is. GELU vs QuickGELU
follows the model's own activation module.

    python -m bench.peers.clip_to_hf OPEN_CLIP_DIR OUT_DIR    # converts, then checks embeddings (1e-5) and ids
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from workers.scorers.clip import load_clip  # noqa: E402

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _activation(block: Any) -> str:
    act = type(block.mlp.gelu).__name__
    if act == "GELU" and getattr(block.mlp.gelu, "approximate", "none") == "none":
        return "gelu"
    if act == "QuickGELU":
        return "quick_gelu"
    raise ValueError(f"unsupported activation {act}")


def _check_plain_clip(model: Any) -> None:
    """Refuse open_clip variants HF's CLIPModel cannot express (rather than convert them wrongly)."""
    v = model.visual
    problems = {
        "not open_clip's CLIP class": type(model).__name__ != "CLIP",
        "text pooling is not argmax (end token)": getattr(model, "text_pool_type", None) != "argmax",
        "vision pooling is not the class token": getattr(v, "pool_type", None) != "tok" or v.attn_pool is not None,
        "vision LayerNorm after pooling": bool(getattr(v, "final_ln_after_pool", False)),
        "patch embedding has a bias": v.conv1.bias is not None,
        "no ln_pre": not isinstance(v.ln_pre, torch.nn.LayerNorm),
        "layer scale": any(
            not isinstance(b.ls_1, torch.nn.Identity) for b in [*v.transformer.resblocks, *model.transformer.resblocks]
        ),
        "attention is not nn.MultiheadAttention": any(
            not isinstance(b.attn, torch.nn.MultiheadAttention)
            for b in [*v.transformer.resblocks, *model.transformer.resblocks]
        ),
    }
    bad = [k for k, is_bad in problems.items() if is_bad]
    if bad:
        raise ValueError("cannot convert to HF CLIPModel: " + ", ".join(bad))


def hf_config(model: Any) -> Any:
    """A ``CLIPConfig`` with the open_clip model's shapes, activation and LayerNorm eps."""
    from transformers import CLIPConfig

    v, tb, vb = model.visual, model.transformer.resblocks[0], model.visual.transformer.resblocks[0]
    text = {
        "vocab_size": model.token_embedding.weight.shape[0],
        "hidden_size": model.token_embedding.weight.shape[1],
        "intermediate_size": tb.mlp.c_fc.out_features,
        "num_hidden_layers": len(model.transformer.resblocks),
        "num_attention_heads": tb.attn.num_heads,
        "max_position_embeddings": model.positional_embedding.shape[0],
        "hidden_act": _activation(tb),
        "layer_norm_eps": tb.ln_1.eps,
        "projection_dim": model.text_projection.shape[1],
        "bos_token_id": 49406,
        "eos_token_id": 49407,  # pooled at the first end token (HF pads with it too)
        "pad_token_id": 49407,
    }
    vision = {
        "hidden_size": v.conv1.out_channels,
        "intermediate_size": vb.mlp.c_fc.out_features,
        "num_hidden_layers": len(v.transformer.resblocks),
        "num_attention_heads": vb.attn.num_heads,
        "image_size": int(v.image_size[0]),
        "patch_size": int(v.patch_size[0]),
        "hidden_act": _activation(vb),
        "layer_norm_eps": vb.ln_1.eps,
        "projection_dim": v.proj.shape[1],
    }
    return CLIPConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=model.text_projection.shape[1],
        logit_scale_init_value=float(model.logit_scale.detach()),
    )


def _blocks(src: dict[str, torch.Tensor], oc: str, hf: str, n: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for i in range(n):
        a, b = f"{oc}.resblocks.{i}.", f"{hf}.layers.{i}."
        q, k, v = src[a + "attn.in_proj_weight"].chunk(3)
        qb, kb, vb = src[a + "attn.in_proj_bias"].chunk(3)
        out |= {
            b + "self_attn.q_proj.weight": q, b + "self_attn.q_proj.bias": qb,
            b + "self_attn.k_proj.weight": k, b + "self_attn.k_proj.bias": kb,
            b + "self_attn.v_proj.weight": v, b + "self_attn.v_proj.bias": vb,
            b + "self_attn.out_proj.weight": src[a + "attn.out_proj.weight"],
            b + "self_attn.out_proj.bias": src[a + "attn.out_proj.bias"],
        }  # fmt: skip
        for o, h in (
            ("ln_1", "layer_norm1"),
            ("ln_2", "layer_norm2"),
            ("mlp.c_fc", "mlp.fc1"),
            ("mlp.c_proj", "mlp.fc2"),
        ):
            out[b + h + ".weight"] = src[a + o + ".weight"]
            out[b + h + ".bias"] = src[a + o + ".bias"]
    return out


def hf_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The open_clip state dict under HF ``CLIPModel``'s names."""
    src = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    out = {
        "text_model.embeddings.token_embedding.weight": src["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": src["positional_embedding"],
        "text_model.final_layer_norm.weight": src["ln_final.weight"],
        "text_model.final_layer_norm.bias": src["ln_final.bias"],
        "text_projection.weight": src["text_projection"].T,
        "vision_model.embeddings.class_embedding": src["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": src["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": src["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": src["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": src["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": src["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": src["visual.ln_post.bias"],
        "visual_projection.weight": src["visual.proj"].T,
        "logit_scale": src["logit_scale"],
    }
    out |= _blocks(src, "transformer", "text_model.encoder", len(model.transformer.resblocks))
    out |= _blocks(src, "visual.transformer", "vision_model.encoder", len(model.visual.transformer.resblocks))
    return {k: v.contiguous().clone() for k, v in out.items()}


def bpe_files(tokenizer: Any) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) exactly as open_clip's SimpleTokenizer builds them from its BPE file."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    if getattr(tokenizer, "sot_token_id", None) != 49406 or getattr(tokenizer, "vocab_size", None) != 49408:
        raise ValueError("tokenizer: expected open_clip's CLIP BPE tokenizer (49,408 tokens, no extra specials)")
    with gzip.open(default_bpe()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # the slice SimpleTokenizer uses
    units = list(bytes_to_unicode().values())
    vocab = units + [u + "</w>" for u in units] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    got = {tok: i for i, tok in enumerate(vocab)}
    ours = dict(tokenizer.encoder)
    ours[BOS], ours[EOS] = ours.pop("<start_of_text>"), ours.pop("<end_of_text>")
    if got != ours:
        raise ValueError("rebuilt vocabulary differs from open_clip's encoder")
    return got, merges


def hf_processor(preprocess: Any, tokenizer: Any, context_length: int) -> Any:
    """A ``CLIPProcessor``: open_clip's resize / crop / interpolation / mean / std, and its BPE."""
    from torchvision.transforms import CenterCrop, InterpolationMode, Normalize, Resize
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer
    from transformers.image_utils import PILImageResampling

    steps = {type(s): s for s in preprocess.transforms}
    resize, crop = steps.get(Resize), steps.get(CenterCrop)
    norm = next(s for s in preprocess.transforms if isinstance(s, Normalize))
    if resize is None or crop is None or not isinstance(resize.size, int):
        raise ValueError(f"preprocess: expected Resize(shortest edge) + CenterCrop, got {preprocess}")
    resample = {
        InterpolationMode.BICUBIC: PILImageResampling.BICUBIC,
        InterpolationMode.BILINEAR: PILImageResampling.BILINEAR,
    }
    images = CLIPImageProcessor(
        size={"shortest_edge": resize.size},
        crop_size={"height": crop.size[0], "width": crop.size[1]},
        resample=resample[resize.interpolation],
        image_mean=list(norm.mean),
        image_std=list(norm.std),
    )
    vocab, merges = bpe_files(tokenizer)
    pairs: Any = [tuple(m.split()) for m in merges]  # (left, right) pairs, as tokenizers' BPE takes them
    text = CLIPTokenizer(vocab=vocab, merges=pairs, model_max_length=context_length)
    return CLIPProcessor(image_processor=images, tokenizer=text)


def convert(open_clip_dir: str | Path, out: str | Path) -> Path:
    """Write the HF folder for the open_clip model qspace loads from ``open_clip_dir``; returns ``out``."""
    from transformers import CLIPModel

    model, preprocess, tokenizer = load_clip(str(open_clip_dir), None, torch.device("cpu"), torch.float32)
    _check_plain_clip(model)
    config = hf_config(model)
    hf = CLIPModel(config).eval()
    missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]  # buffers, not weights
    if missing or unexpected:
        raise ValueError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    out = Path(out)
    hf.save_pretrained(out)
    processor = hf_processor(preprocess, tokenizer, int(model.positional_embedding.shape[0]))
    processor.save_pretrained(out)
    # Also the classic vocab.json / merges.txt (tokenizer.json above is what transformers 5 reads).
    vocab, merges = bpe_files(tokenizer)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return out


@torch.inference_mode()
def check(open_clip_dir: str | Path, hf_dir: str | Path, texts: Sequence[str], images: Sequence[Any]) -> dict[str, Any]:
    """Max |difference| of unit image / text embeddings (open_clip vs HF, on the same pixel tensors and token
    ids), and how many texts the two tokenizers encode differently (ids, after both truncate to the context)."""
    from transformers import CLIPModel, CLIPTokenizer

    model, preprocess, tokenizer = load_clip(str(open_clip_dir), None, torch.device("cpu"), torch.float32)
    hf = CLIPModel.from_pretrained(hf_dir).eval()
    hf_tok = CLIPTokenizer.from_pretrained(hf_dir)
    ctx = int(hf.config.text_config.max_position_embeddings)
    oc_ids = tokenizer(list(texts))
    hf_ids = hf_tok(list(texts), padding="max_length", truncation=True, max_length=ctx, return_tensors="pt")
    ids = hf_ids["input_ids"]
    ends = ids.eq(hf_tok.eos_token_id).int().argmax(-1)
    oc_rows = [r[: int(r.argmax()) + 1].tolist() for r in oc_ids]  # up to and with the end token
    hf_rows = [r[: int(e) + 1].tolist() for r, e in zip(ids, ends, strict=True)]
    id_mismatch = sum(a != b for a, b in zip(oc_rows, hf_rows, strict=True))
    past_context = sum(len(tokenizer.encode(t)) + 2 > ctx for t in texts)  # both truncated: end token kept
    t_oc = F.normalize(model.encode_text(oc_ids), dim=-1)
    t_hf = F.normalize(
        hf.get_text_features(input_ids=ids, attention_mask=hf_ids["attention_mask"]).pooler_output, dim=-1
    )
    pixels = torch.stack([preprocess(im) for im in images])
    i_oc = F.normalize(model.encode_image(pixels), dim=-1)
    i_hf = F.normalize(hf.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    return {
        "texts": len(texts),
        "token_id_mismatches": id_mismatch,
        "texts_past_context": past_context,
        "context_length": {"open_clip": int(tokenizer.context_length), "hf": ctx},
        "text_embedding_max_abs_diff": float((t_oc - t_hf).abs().max()),
        "image_embedding_max_abs_diff": float((i_oc - i_hf).abs().max()),
        "logit_scale": {"open_clip": float(model.logit_scale), "hf": float(hf.logit_scale)},
    }


def _demo_inputs(n: int = 64) -> tuple[list[str], list[Any]]:
    from PIL import Image

    from workers.tiny_models import _corpus

    texts = _corpus(n)
    texts.append("Long " + "red car near the tree " * 30)  # past the context: both truncate, end token kept
    images = [Image.effect_noise((40 + 7 * i, 32 + 5 * i), 60 + i).convert("RGB") for i in range(8)]
    return texts, images


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("open_clip_dir", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    convert(args.open_clip_dir, args.out)
    report = check(args.open_clip_dir, args.out, *_demo_inputs())
    print(json.dumps(report, indent=1))
    ok = (
        report["token_id_mismatches"] == 0
        and report["text_embedding_max_abs_diff"] <= 1e-5
        and report["image_embedding_max_abs_diff"] <= 1e-5
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
