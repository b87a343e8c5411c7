"""Fixtures for the scorer tests: tiny offline checkpoints (built once) and a few dozen varied samples."""

from __future__ import annotations

import io
import math
import random
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from PIL import Image

from backend.scorer_specs import ScoreItem
from workers.tiny_models import _WORDS, write_tiny_models

REL = 1e-4

# Tiny models are faster single-threaded, and on a busy shared CPU two spinning threads per op get slow.
torch.set_num_threads(1)


def assert_close(got: Mapping[str, float], want: Mapping[str, float], rel: float = REL) -> None:
    """Every metric of ``want`` matches ``got`` within ``rel`` relative (absolute near zero)."""
    assert set(got) == set(want), (got, want)
    for k, v in want.items():
        assert math.isclose(got[k], v, rel_tol=rel, abs_tol=rel * 1e-2), (k, got[k], v)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small images of varied size, mode and format, plus a truncated JPEG and a non-image file."""
    d = tmp_path_factory.mktemp("images")
    rng = random.Random(0)
    for i in range(8):
        w, h = rng.randint(20, 80), rng.randint(20, 80)
        im = Image.new("RGB", (w, h), tuple(rng.randint(0, 255) for _ in range(3)))
        for _ in range(20):  # a few blocks so the images differ in content, not only colour
            x, y = rng.randrange(w), rng.randrange(h)
            im.paste(tuple(rng.randint(0, 255) for _ in range(3)), (x, y, min(w, x + 8), min(h, y + 8)))
        if i % 4 == 3:
            im.convert("L").save(d / f"img{i}.png")  # grey PNG: must come out RGB
        else:
            im.save(d / f"img{i}.jpg", quality=90)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, format="JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "notanimage.jpg").write_bytes(b"this is not an image\n" * 10)
    return d


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


@pytest.fixture(scope="session")
def samples(image_dir: Path) -> list[ScoreItem]:
    """34 samples: single- and multi-turn, short and long (> 77 CLIP tokens), multi-image, text-only,
    <image> before or after the question; then the defects: missing, truncated and non-image files,
    an empty answer."""
    rng = random.Random(1)
    imgs = sorted(str(p) for p in image_dir.glob("img*"))
    out: list[ScoreItem] = []

    def add(conv: list[dict[str, str]], images: list[str]) -> None:
        out.append(ScoreItem(sample_id=100 + len(out), conversations=conv, images=images))

    for i in range(14):  # single turn, lengths from a few words to well past CLIP's 77 tokens
        q = _sentence(rng, 3, 12)
        a = _sentence(rng, 2, 6) if i % 3 == 0 else _sentence(rng, 10, 120)
        q = f"<image>\n{q}" if i % 2 == 0 else f"{q}\n<image>"
        if i == 1:
            a = "Wow! Red! " + a  # "!" is token 0 of CLIP's BPE, the same id as its padding
        add([{"from": "human", "value": q}, {"from": "gpt", "value": a}], [rng.choice(imgs)])
    for _ in range(8):  # multi-turn
        conv = [{"from": "human", "value": "<image>\n" + _sentence(rng, 3, 10)}]
        conv.append({"from": "gpt", "value": _sentence(rng, 2, 30)})
        for _ in range(rng.randint(1, 3)):
            conv += [
                {"from": "human", "value": _sentence(rng, 2, 10)},
                {"from": "gpt", "value": _sentence(rng, 1, 40)},
            ]
        add(conv, [rng.choice(imgs)])
    for k, tokens in ((2, 2), (3, 3), (2, 1)):  # multi-image; the last has one <image> for two images
        q = "<image>\n" * tokens + _sentence(rng, 3, 10)
        add([{"from": "human", "value": q}, {"from": "gpt", "value": _sentence(rng, 3, 30)}], rng.sample(imgs, k))
    for _ in range(5):  # text-only
        conv = [{"from": "human", "value": _sentence(rng, 3, 10)}, {"from": "gpt", "value": _sentence(rng, 3, 30)}]
        add(conv, [])
    for bad in ("missing.jpg", "truncated.jpg", "notanimage.jpg"):
        conv = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A red square."}]
        add(conv, [str(image_dir / bad)])
    add([{"from": "human", "value": "<image>\nAnything?"}, {"from": "gpt", "value": "  "}], [imgs[0]])
    return out


def by_error(results: Mapping[int, object]) -> dict[int, str | None]:
    return {k: getattr(r, "error", None) for k, r in results.items()}
