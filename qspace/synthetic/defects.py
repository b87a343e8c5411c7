"""Labelled defects: what makes a sample bad, and how each kind corrupts a clean one.

`swapped_image` pairs the text with another sample's image that shows none of its content; the answer
defects (shuffled, wrong_fact, truncated, filler) corrupt every answer of a sample and leave the questions
intact, so a scorer has to read the answers (or the image) to find them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from qspace.synthetic.phrasing import QuestionAnswer
from qspace.synthetic.scenes import COLORS, SHAPES, WORDS, Scene
from qspace.synthetic.tasks import task_turns

DEFECTS = ("swapped_image", "shuffled", "wrong_fact", "truncated", "filler")
CLEAN = "none"

FILLER = (
    "This is a very interesting image with many things.",
    "The picture shows some objects that are nice to look at.",
    "There are several things in this image that can be seen clearly.",
    "Overall, it is a good image with a lot going on.",
    "The image contains various elements arranged in a certain way.",
    "It is hard to say exactly, but the image looks quite nice.",
    "Many details in this picture make it worth a closer look.",
    "Everything in the image is placed in a way that looks good.",
    "This image can be described in many different ways.",
    "The scene is simple, but it has some interesting parts.",
    "As you can see, there is a lot to notice here.",
    "It is an image that people may find appealing.",
)


def false_scene(scene: Scene, rng: random.Random) -> Scene:
    """The scene with every colour, shape, the word and the count replaced by ones the image lacks.

    The maps are bijective, so the structure that drives template choices (which shapes repeat, sizes,
    positions) is unchanged and the same per-turn RNG picks the same questions.
    """
    present_colors = list(dict.fromkeys(o.color for o in scene.objects))
    absent_colors = [c for c in COLORS if c not in present_colors]
    rng.shuffle(absent_colors)
    color_map = dict(zip(present_colors, absent_colors, strict=False))
    present_shapes = list(dict.fromkeys(o.shape for o in scene.objects))
    absent_shapes = [x for x in SHAPES if x not in present_shapes]
    rng.shuffle(absent_shapes)
    shape_map = dict(zip(present_shapes, absent_shapes, strict=False))
    objects = tuple(replace(o, color=color_map[o.color], shape=shape_map[o.shape]) for o in scene.objects)
    word = rng.choice([w for w in WORDS if w != scene.word])
    count = rng.choice([k for k in range(1, 6) if k != len(scene.objects)])
    return replace(scene, objects=objects, word=word, claimed_count=count)


def shuffle_words(text: str, rng: random.Random) -> str:
    """The same words in another order (a few tries: a short text may shuffle back to itself)."""
    words = text.split()
    if len(words) < 2:
        return text
    out = words[:]
    for _ in range(10):
        rng.shuffle(out)
        if out != words:
            break
    return " ".join(out)


def truncate_answer(text: str, rng: random.Random) -> str:
    """The first 30-70% of the words, with no closing punctuation: cut off mid-thought."""
    words = text.split()
    if len(words) < 2:
        return text.rstrip(".!?")
    lo = max(1, int(len(words) * 0.3))
    hi = max(lo, min(len(words) - 1, int(len(words) * 0.7)))
    return " ".join(words[: rng.randint(lo, hi)]).rstrip('.,;:!?"')


def filler_answer(text: str, rng: random.Random) -> str:
    """Generic sentences about as long as the answer they replace, saying nothing about the image."""
    k = 1 if len(text.split()) <= 15 else max(2, min(len(FILLER), round(len(text.split()) / 14)))
    return " ".join(rng.sample(FILLER, k))


def pick_donor_image(i: int, scenes: Sequence[Scene], rng: random.Random) -> int:
    """Another sample whose image shows none of i's colours, shapes, word or count; relaxed if none."""
    scene = scenes[i]
    colors = {o.color for o in scene.objects}
    shapes = {o.shape for o in scene.objects}

    def unlike(candidate: Scene, strictness: int) -> bool:
        # Colours and the word must always differ; then the count (strictness 1), then every shape (2).
        if any(o.color in colors for o in candidate.objects) or candidate.word == scene.word:
            return False
        if strictness >= 1 and len(candidate.objects) == len(scene.objects):
            return False
        return not (strictness >= 2 and any(o.shape in shapes for o in candidate.objects))

    for strictness in (2, 1, 0):
        for _ in range(400):
            c = rng.randrange(len(scenes))
            if c != i and unlike(scenes[c], strictness):
                return c
    raise RuntimeError("no donor image found")  # pragma: no cover - colours alone always leave one


def turns_with_defect(task: str, defect: str, scene: Scene, seed: int) -> list[QuestionAnswer]:
    """The sample's turns with `defect` applied to its answers (swapped_image changes the image, not the text)."""
    pairs = task_turns(task, scene, seed)
    rng = random.Random(seed ^ 0x5EED)
    if defect == "wrong_fact":
        # Same seed, so the false scene gets the same templates: questions stay true, answers name what is absent.
        false = task_turns(task, false_scene(scene, rng), seed)
        pairs = [(q, a) for (q, _), (_, a) in zip(pairs, false, strict=True)]
    elif defect == "shuffled":
        pairs = [(q, shuffle_words(a, rng)) for q, a in pairs]
    elif defect == "truncated":
        pairs = [(q, truncate_answer(a, rng)) for q, a in pairs]
    elif defect == "filler":
        pairs = [(q, filler_answer(a, rng)) for q, a in pairs]
    return pairs
