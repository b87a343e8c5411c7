"""Tiny checkpoints: written fast and deterministically, loaded exactly as the real model names load."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from workers.tiny_models import CLIP_NAME, CLIP_WEIGHTS, IMAGE_TOKEN, tiny_models_command, write_tiny_models


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_written_fast_and_deterministic(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    t0 = time.perf_counter()
    again = write_tiny_models(tmp_path)
    assert time.perf_counter() - t0 < 10
    for kind in ("clip", "llava", "lm"):
        assert _digest(again[kind]) == _digest(tiny_models[kind]), kind


def test_clip_loads_through_open_clip_like_a_builtin_name(tiny_models: dict[str, Path]) -> None:
    import open_clip
    import torch

    open_clip.add_model_config(tiny_models["clip"] / f"{CLIP_NAME}.json")
    model, _, preprocess = open_clip.create_model_and_transforms(
        CLIP_NAME, pretrained=str(tiny_models["clip"] / CLIP_WEIGHTS)
    )
    tokenizer = open_clip.get_tokenizer(CLIP_NAME)
    assert isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer)  # CLIP's own BPE, 77 tokens
    from PIL import Image

    image = preprocess(Image.new("RGB", (50, 40), "red"))
    assert image.shape == (3, 32, 32)
    with torch.no_grad():
        assert model.encode_text(tokenizer(["a red square"])).shape == (1, 32)
        assert model.encode_image(image[None]).shape == (1, 32)


def test_llava_loads_like_llava_1_5(tiny_models: dict[str, Path]) -> None:
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(tiny_models["llava"])
    model = AutoModelForImageTextToText.from_pretrained(tiny_models["llava"])
    assert isinstance(model, LlavaForConditionalGeneration)
    tok = processor.tokenizer
    assert 500 <= len(tok) <= 1100
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) == model.config.image_token_id
    ids = tok(f"a {IMAGE_TOKEN} b", add_special_tokens=False)["input_ids"]
    assert ids.count(model.config.image_token_id) == 1  # never split
    conv = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]},
    ]
    prompt = processor.apply_chat_template(conv, tokenize=False)
    assert prompt.startswith(f"USER: {IMAGE_TOKEN}\nWhat is it? ASSISTANT: A red square.")
    inputs = processor(text=[prompt], images=[Image.new("RGB", (50, 40), "red")], return_tensors="pt")
    n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image == model.config.image_seq_length == 16
    out = model(**inputs)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], len(tok))


def test_lm_loads_like_gpt2(tiny_models: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["lm"])
    model = AutoModelForCausalLM.from_pretrained(tiny_models["lm"])
    assert model.config.model_type == "gpt2"
    assert tok.chat_template is None and tok.eos_token == "<|endoftext|>"
    ids = tok("The dog is on the street.", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape[-1] == len(tok)


def test_command_prints_model_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tiny_models_command(tmp_path) == 0
    out = capsys.readouterr().out
    assert str((tmp_path / "llava").resolve()) in out and "mllm_loss" in out
