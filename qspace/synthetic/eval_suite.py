"""A held-out, clean multiple-choice eval suite for the SVIT-like data: what a model trained on a selection is
scored on (issue 15, 2(c)).

`make_eval_suite` renders `n` new scenes exactly as `make_svit_like` renders its images (same scene sampler,
same size, JPEG quality) and asks one question per image with four options: the right answer and three
distractors of the same kind. Item kinds (the item's ``type``), in equal shares (``types`` picks a subset):

- ``colour``: "What color is the {shape} {position}?" -> "It is {colour}." (position is unique in a scene);
- ``shape``: "What shape is the {colour} object?" -> "It is a {shape}." (colour is unique in a scene);
- ``count``: "How many shapes are in the image?" -> "There are {n} shapes." / "There is one shape." (1 to 4:
  the distractors are the three other counts);
- ``position``: "Where is the {colour} {shape}?" -> "The {colour} {shape} is {where}.";
- ``word``: "What word is written in the image?" -> 'It says "{WORD}".'

Question and answer wordings are the dataset's own (conversation and referring-QA templates), one fixed wording
per kind, so the options of an item differ only in what answers it (and "There is one shape." for a count of
one). Every item is clean: no defect touches the suite. The demo's tiny LLaVA rises above chance on ``colour``
and ``count`` only (bench/loop_power.py); the other kinds are there for real models.

Held out by its seed stream: the RNG is seeded with the string ``"qspace-eval-suite/{seed}"`` (Python hashes a
string seed with SHA-512), a stream that no integer seed of `make_svit_like` (the demo's datasets, its training
corpus at ``seed + 7_919_000``) can produce. Deterministic for a seed, byte for byte.

The file is the eval-suite JSONL of :mod:`backend.eval_specs`; image paths are relative to its folder.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from qspace.synthetic.phrasing import POSITION_WORDS, fix_articles, number_word
from qspace.synthetic.rendering import render_scene
from qspace.synthetic.scenes import COLORS, POSITIONS, SHAPES, WORDS, Scene, random_scene

__all__ = ["EVAL_ITEM_TYPES", "EVAL_SUITE_FILE", "eval_seed", "eval_suite_items", "make_eval_suite"]

EVAL_ITEM_TYPES = ("colour", "shape", "count", "position", "word")
EVAL_SUITE_FILE = "eval_suite.jsonl"
N_OPTIONS = 4
MAX_COUNT = 4  # random_scene draws one to four objects


def eval_seed(seed: int) -> str:
    """The suite's RNG seed: a string, so no integer dataset seed shares its stream."""
    return f"qspace-eval-suite/{seed}"


Question = tuple[str, list[str], str]  # (question, every possible answer of its kind, the right one)


def _colour(scene: Scene, rng: random.Random) -> Question:
    o = scene.objects[rng.randrange(len(scene.objects))]
    where = POSITION_WORDS[o.position][0]
    return f"What color is the {o.shape} {where}?", [f"It is {c}." for c in COLORS], f"It is {o.color}."


def _shape(scene: Scene, rng: random.Random) -> Question:
    o = scene.objects[rng.randrange(len(scene.objects))]
    return f"What shape is the {o.color} object?", [f"It is a {s}." for s in SHAPES], f"It is a {o.shape}."


def _count_answer(n: int) -> str:
    return "There is one shape." if n == 1 else f"There are {number_word(n)} shapes."


def _count(scene: Scene, rng: random.Random) -> Question:
    answers = [_count_answer(n) for n in range(1, MAX_COUNT + 1)]
    return "How many shapes are in the image?", answers, _count_answer(len(scene.objects))


def _position(scene: Scene, rng: random.Random) -> Question:
    o = scene.objects[rng.randrange(len(scene.objects))]
    name = f"{o.color} {o.shape}"
    answers = [f"The {name} is {POSITION_WORDS[p][0]}." for p in POSITIONS]
    return f"Where is the {name}?", answers, f"The {name} is {POSITION_WORDS[o.position][0]}."


def _word(scene: Scene, rng: random.Random) -> Question:
    return "What word is written in the image?", [f'It says "{w}".' for w in WORDS], f'It says "{scene.word}".'


ASKERS: dict[str, Callable[[Scene, random.Random], Question]] = {
    "colour": _colour,
    "shape": _shape,
    "count": _count,
    "position": _position,
    "word": _word,
}


def _item(index: int, kind: str, scene: Scene, rng: random.Random) -> dict[str, Any]:
    question, answers, right = ASKERS[kind](scene, rng)
    distractors = rng.sample([a for a in answers if a != right], N_OPTIONS - 1)
    slot = rng.randrange(N_OPTIONS)  # where the right answer sits: uniform, so option order carries no signal
    options = [*distractors[:slot], right, *distractors[slot:]]
    return {
        "id": f"mc_{index:06d}",
        "image": image_name(index),
        "question": fix_articles(question),
        "options": [fix_articles(o) for o in options],
        "answer": slot,
        "type": kind,
    }


def image_name(i: int) -> str:
    return f"images/{i:06d}.jpg"


def eval_suite_items(
    n: int = 500, seed: int = 0, types: Sequence[str] = EVAL_ITEM_TYPES
) -> tuple[list[Scene], list[dict[str, Any]]]:
    """(scenes, items) of the suite of `seed`, without writing anything. Kinds come round-robin in `types`
    order (equal shares); each item's image is its own scene."""
    if n < 1:
        raise ValueError("n must be at least 1")
    unknown = [t for t in types if t not in ASKERS]
    if unknown or not types:
        raise ValueError(f"types: {unknown or 'none given'} (known: {', '.join(EVAL_ITEM_TYPES)})")
    rng = random.Random(eval_seed(seed))
    scenes = [random_scene(rng) for _ in range(n)]
    items = [_item(i, types[i % len(types)], s, rng) for i, s in enumerate(scenes)]
    return scenes, items


def make_eval_suite(
    out_dir: Path,
    n: int = 500,
    seed: int = 0,
    image_size: int = 128,
    types: Sequence[str] = EVAL_ITEM_TYPES,
    file_name: str = EVAL_SUITE_FILE,
) -> Path:
    """Write a held-out clean multiple-choice suite of `n` items under `out_dir`; return the JSONL file's path.

    `types`: the item kinds, in equal shares (default all five). Files: `images/NNNNNN.jpg` (one per item,
    rendered as `make_svit_like` renders its images) and `file_name`, one item per line in the format of
    :mod:`backend.eval_specs` (image paths relative to `out_dir`).
    Deterministic for a seed, byte for byte; a seed's suite shares no RNG stream with any `make_svit_like` seed.
    """
    out_dir = Path(out_dir)
    scenes, items = eval_suite_items(n, seed, types)
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(scenes):
        render_scene(scene, image_size).save(out_dir / image_name(i), "JPEG", quality=90)
    path = out_dir / file_name
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
    return path
