"""Tiny, random, offline checkpoints that load through the same code as the real models.

``write_tiny_models(DIR)`` writes, deterministically and in a few seconds:

- ``DIR/clip``: an open_clip model config JSON (``qspace-tiny-clip.json``) and its weights
  (``open_clip_model.safetensors``). Loaded by ``open_clip.add_model_config`` and
  ``create_model_and_transforms(name, pretrained=<file>)``, the function that loads
  ``ViT-L-14-336`` + ``openai``; the text side uses open_clip's own CLIP tokenizer.
- ``DIR/llava``: a ``LlavaForConditionalGeneration`` (tiny CLIP vision tower + tiny Llama) with a
  ``LlavaProcessor`` (CLIP image processor, byte-level BPE tokenizer with ``<image>``, and
  llava-hf's LLaVA-1.5 chat template), loadable with ``AutoModelForImageTextToText`` + ``AutoProcessor``
  like ``llava-hf/llava-1.5-7b-hf``.
- ``DIR/lm``: a GPT-2-style causal LM and tokenizer without a chat template, loadable with
  ``AutoModelForCausalLM`` + ``AutoTokenizer`` like ``gpt2``.

The weights are random: the models score nothing meaningful, but they exercise every code path.
"""

from __future__ import annotations

import json
import logging
import random
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

import torch  # noqa: E402

CLIP_NAME = "qspace-tiny-clip"
CLIP_WEIGHTS = "open_clip_model.safetensors"
IMAGE_TOKEN = "<image>"

# llava-hf/llava-1.5-7b-hf's chat template (structured content: images first, then text).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

_VOCABULARY = (
    "the a an is are was of in on at with to and or but this that what where which who how why "
    "image picture photo man woman child dog cat bird car bus train boat table chair street "
    "room kitchen beach field sky tree building window door person people group two three four "
    "red blue green yellow white black brown purple orange gray large small tall short old young "
    "sitting standing walking running holding wearing looking eating playing riding parked "
    "describe detail question answer color count many there shown visible left right top bottom "
    "front behind near next background foreground scene appears seems likely because yes no"
)
_WORDS = _VOCABULARY.split()


def _corpus(n: int = 1500, seed: int = 0) -> list[str]:
    """Deterministic synthetic sentences in the shape of LLaVA conversations."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 24))]
        text = " ".join(words).capitalize() + rng.choice([".", "?", "!", ","])
        if i % 3 == 0:
            text = f"USER: {IMAGE_TOKEN}\n{text} ASSISTANT: {text.lower()}"
        lines.append(text)
    return lines


def train_bpe(texts: Iterable[str], vocab_size: int, specials: list[str], bos: str | None) -> Any:
    """A byte-level BPE trained offline on ``texts`` (deterministic); with ``bos``, it adds BOS itself (Llama)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    post: list[Any] = [processors.ByteLevel(trim_offsets=False)]
    if bos is not None:
        post.append(
            processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
            )
        )
    tok.post_processor = processors.Sequence(post)
    return tok


def _train_bpe(vocab_size: int, specials: list[str], bos: str | None) -> Any:
    """A byte-level BPE trained on the synthetic corpus."""
    return train_bpe(_corpus(), vocab_size, specials, bos)


def _write_clip(out: Path, layers: int) -> None:
    import open_clip
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": layers, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": layers},
    }
    cfg_path = out / f"{CLIP_NAME}.json"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(0)
    logging.disable(logging.WARNING)  # open_clip warns that a model without weights is random: it's meant to be
    try:
        model = open_clip.create_model(CLIP_NAME, pretrained=None)
    finally:
        logging.disable(logging.NOTSET)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / CLIP_WEIGHTS))


def llava_tokenizer(model_max_length: int = 512) -> Any:
    """Llama-style byte-level BPE (~1k tokens; adds ``<s>``; ``<image>`` is one special token)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(1024, ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN], bos="<s>"),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=model_max_length,
        padding_side="right",
    )


def llava_processor(image_size: int = 32, patch_size: int = 8, model_max_length: int = 512) -> Any:
    """A ``LlavaProcessor`` as llava-1.5's: CLIP image processor, the BPE above, llava-hf's template."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=llava_tokenizer(model_max_length),
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )


def llava_config(processor: Any, vision: Any, text: Any) -> Any:
    """A ``LlavaConfig`` wiring ``vision`` (CLIPVisionConfig) and ``text`` (LlamaConfig) to ``processor``,
    LLaVA-1.5's way: penultimate vision layer, CLS dropped."""
    from transformers import LlavaConfig

    tok = processor.tokenizer
    text.bos_token_id, text.eos_token_id, text.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=int(tok.convert_tokens_to_ids(IMAGE_TOKEN)),
        image_seq_length=(vision.image_size // vision.patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )


def _write_llava(out: Path, layers: int) -> None:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaForConditionalGeneration

    processor = llava_processor()
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(processor.tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(llava_config(processor, vision, text)).eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _write_lm(out: Path, layers: int) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    eot = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(1024, [eot], bos=None),
        bos_token=eot,
        eos_token=eot,
        unk_token=eot,
        model_max_length=512,
    )
    eot_id = int(tokenizer.convert_tokens_to_ids(eot))  # type: ignore[arg-type]
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=512,
        n_embd=64,
        n_layer=layers,
        n_head=4,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def write_tiny_models(directory: str | Path, layers: int = 2) -> dict[str, Path]:
    """Write ``clip``, ``llava`` and ``lm`` under ``directory``; returns their paths.

    ``layers`` sets the depth of every tower (2 for tests; the CPU benchmark uses 12, the depth of
    CLIP's towers, so that one-sample model calls cost what they cost at scale: many small ops).
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = Path(directory)
    paths = {"clip": root / "clip", "llava": root / "llava", "lm": root / "lm"}
    _write_clip(paths["clip"], layers)
    _write_llava(paths["llava"], layers)
    _write_lm(paths["lm"], layers)
    return paths


def tiny_models_command(directory: str | Path) -> int:
    """CLI entry (``qspace tiny-models DIR``): write the models and print how to use them."""
    paths = write_tiny_models(directory)
    for kind, model in (("clip", paths["clip"]), ("mllm_loss", paths["llava"]), ("lm_loss", paths["lm"])):
        print(f"{kind:10s} --model {model.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(tiny_models_command(sys.argv[1] if len(sys.argv) > 1 else "tiny-models"))
