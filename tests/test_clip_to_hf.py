"""bench/peers/clip_to_hf.py: the tiny open_clip model, converted to HF ``CLIPModel``, embeds as open_clip does."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_tiny_clip_converts_to_hf_with_equal_embeddings(tmp_path: Path) -> None:
    from bench.peers.clip_to_hf import _demo_inputs, check, convert
    from workers.tiny_models import _write_clip

    _write_clip(tmp_path / "clip", layers=2)
    convert(tmp_path / "clip", tmp_path / "hf")
    texts, images = _demo_inputs(32)
    got = check(tmp_path / "clip", tmp_path / "hf", texts, images)
    assert got["token_id_mismatches"] == 0  # including a text past the 77-token context
    assert got["context_length"] == {"open_clip": 77, "hf": 77}
    assert got["text_embedding_max_abs_diff"] <= 1e-5
    assert got["image_embedding_max_abs_diff"] <= 1e-5
    assert got["logit_scale"]["hf"] == pytest.approx(got["logit_scale"]["open_clip"])
