"""Synthetic data: an SVIT-like dataset with rendered images, and a LLaVA-665K-shaped file.

`make_svit_like` writes a small dataset for the demo and tests: real images (coloured shapes and a
word), the paper's four task types as one JSON file each (as SVIT ships them), and labelled defects.
`make_llava665k_like` streams a ~1 GB LLaVA-665K-shaped JSON (or JSONL) file for the ingest benchmark.
Pillow and orjson only: the back end never imports torch.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from PIL import Image, ImageDraw, ImageFont

# ---------------------------------------------------------------------------------------------------
# Scene vocabulary. Colours are well apart in RGB so a 64 px CLIP can tell them apart; no object is
# black because the word is drawn in near-black; background names share no word with object colours.

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 38, 38),
    "orange": (245, 135, 20),
    "yellow": (240, 200, 15),
    "green": (40, 160, 60),
    "blue": (35, 85, 220),
    "purple": (130, 55, 180),
    "pink": (240, 110, 175),
    "brown": (125, 75, 35),
    "teal": (0, 140, 140),
    "gray": (125, 125, 125),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "heart")
# Fractional centres; the four corners stay free for the word.
POSITIONS: dict[str, tuple[float, float]] = {
    "top": (0.5, 0.2),
    "left": (0.2, 0.5),
    "center": (0.5, 0.5),
    "right": (0.8, 0.5),
    "bottom": (0.5, 0.8),
}
# Radii (fractions of the side): two large shapes side by side plus jitter still do not touch.
SIZES: dict[str, float] = {"small": 0.065, "medium": 0.09, "large": 0.12}
CORNERS = ("top left", "top right", "bottom left", "bottom right")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "cream": (250, 241, 218),
    "light beige": (236, 228, 210),
}
WORD_KINDS: dict[str, tuple[str, ...]] = {
    "animal": ("CAT", "DOG", "BIRD", "FISH", "FROG", "BEAR", "DUCK", "LION"),
    "nature": ("SUN", "MOON", "TREE", "RAIN", "SNOW", "WIND", "LEAF", "SEA"),
    "object": ("BOOK", "CAKE", "LAMP", "CUP", "KEY", "MAP", "BALL", "KITE", "HAT", "BELL"),
    "vehicle": ("BUS", "CAR", "SHIP", "BIKE", "VAN"),
    "sign": ("STOP", "OPEN", "EXIT", "SALE", "GO", "HELP"),
}
WORDS = tuple(w for ws in WORD_KINDS.values() for w in ws)
WORD_KIND = {w: k for k, ws in WORD_KINDS.items() for w in ws}

TASK_TYPES = ("conversation", "complex_reasoning", "detail_description", "referring_qa")
DEFECTS = ("swapped_image", "shuffled", "wrong_fact", "truncated", "filler")
CLEAN = "none"

TASK_TYPE_PROMPTS: dict[str, str] = {
    "conversation": (
        "You are an AI visual assistant, and you are seeing a single image. What you see are provided "
        "with object annotations: each object's category, colour, size and bounding box, and any text "
        "written in the image. Design a conversation between you and a person asking about this image. "
        "The answers should be in a tone that a visual AI assistant is seeing the image and answering "
        "the question. Ask diverse questions and give corresponding answers: the object types, counting "
        "the objects, object colours, object positions and the text in the image. Only include questions "
        "that have definite answers: the content can be seen in the image and answered confidently."
    ),
    "complex_reasoning": (
        "You are an AI visual assistant that can analyze a single image. You receive object annotations "
        "(category, colour, size, bounding box) and the text written in the image. Create multi-turn "
        "questions that require reasoning about the image: comparing objects, counting after a change, "
        "spatial relationships, grouping by attributes, or the purpose of the text. Each answer should "
        "reason step by step from what is visible and give a clear conclusion. Do not ask about anything "
        "that cannot be answered confidently from the image."
    ),
    "detail_description": (
        "You are an AI visual assistant that can analyze a single image. Using the object annotations "
        "(category, colour, size, position) and the text written in the image, describe the image in "
        "one detailed paragraph. Mention every object with its colour, shape, size and position, how "
        "many objects there are, the background, and the text. Describe it as if you are seeing the "
        "image; do not mention the annotations."
    ),
    "referring_qa": (
        "You are an AI visual assistant looking at a single image with annotated objects (category, "
        "colour, size and bounding box in normalized coordinates [x1, y1, x2, y2]) and the text in the "
        "image. Ask one short question that refers to a single object, by its position, its attributes "
        "or its bounding box, and give a short, exact answer about that object."
    ),
}

DETAIL_PROMPTS = (
    "Describe the following image in detail.",
    "Provide a detailed description of the given image.",
    "Give an elaborate explanation of the image you see.",
    "Share a comprehensive rundown of the presented image.",
    "Offer a thorough analysis of the image.",
    "Explain the various aspects of the image before you.",
    "Clarify the contents of the displayed image with great detail.",
    "Characterize the image using a well-detailed description.",
    "Break down the elements of the image in a detailed manner.",
    "Walk through the important details of the image.",
    "Portray the image with a rich, descriptive narrative.",
    "Write an exhaustive depiction of the given image.",
)

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

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"),
    "medium": ("medium-sized", "mid-sized"),
    "large": ("large", "big"),
}
POSITION_WORDS: dict[str, tuple[str, ...]] = {
    "top": ("at the top", "near the top", "in the upper part of the image"),
    "left": ("on the left", "on the left side", "toward the left edge"),
    "center": ("in the center", "in the middle", "at the center of the image"),
    "right": ("on the right", "on the right side", "toward the right edge"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part of the image"),
}
SIDE = {"top": "top", "left": "left side", "center": "center", "right": "right side", "bottom": "bottom"}
WARM = {"red", "orange", "yellow", "pink", "brown"}
COOL = {"green", "blue", "purple", "teal"}


@dataclass(frozen=True)
class Obj:
    """One drawn shape; cx, cy, r are fractions of the image side."""

    shape: str
    color: str
    size: str
    position: str
    cx: float
    cy: float
    r: float

    def bbox(self) -> list[float]:
        """Normalised [x1, y1, x2, y2], as SVIT's and LLaVA's referring data write them."""
        return [
            round(self.cx - self.r, 2),
            round(self.cy - self.r, 2),
            round(self.cx + self.r, 2),
            round(self.cy + self.r, 2),
        ]


@dataclass(frozen=True)
class Scene:
    """What an image shows. `claimed_count` is set only in the false scene behind wrong_fact answers."""

    objects: tuple[Obj, ...]
    word: str
    corner: str
    background: str
    claimed_count: int | None = None

    @property
    def count(self) -> int:
        return len(self.objects) if self.claimed_count is None else self.claimed_count

    def to_json(self) -> dict[str, Any]:
        return {
            "objects": [asdict(o) for o in self.objects],
            "word": self.word,
            "corner": self.corner,
            "background": self.background,
        }


def _random_scene(r: random.Random) -> Scene:
    k = r.choices((1, 2, 3, 4), weights=(0.15, 0.3, 0.3, 0.25))[0]
    colors = r.sample(list(COLORS), k)
    positions = r.sample(list(POSITIONS), k)
    objs = []
    for color, pos in zip(colors, positions, strict=True):
        size = r.choice(list(SIZES))
        px, py = POSITIONS[pos]
        objs.append(
            Obj(
                shape=r.choice(SHAPES),  # repeats allowed, so "how many circles" has real answers
                color=color,
                size=size,
                position=pos,
                cx=round(px + r.uniform(-0.015, 0.015), 3),
                cy=round(py + r.uniform(-0.015, 0.015), 3),
                r=round(SIZES[size] * r.uniform(0.95, 1.05), 3),
            )
        )
    order = list(POSITIONS)  # reading order: top, left, center, right, bottom
    objs.sort(key=lambda o: order.index(o.position))
    return Scene(tuple(objs), r.choice(WORDS), r.choice(CORNERS), r.choice(list(BACKGROUNDS)))


def _false_scene(s: Scene, r: random.Random) -> Scene:
    """The scene with every colour, shape, the word and the count replaced by ones the image lacks.

    The maps are bijective, so the structure that drives template choices (which shapes repeat, sizes,
    positions) is unchanged and the same per-turn RNG picks the same questions.
    """
    present_c = list(dict.fromkeys(o.color for o in s.objects))
    absent_c = [c for c in COLORS if c not in present_c]
    r.shuffle(absent_c)
    cmap = dict(zip(present_c, absent_c, strict=False))
    present_s = list(dict.fromkeys(o.shape for o in s.objects))
    absent_s = [x for x in SHAPES if x not in present_s]
    r.shuffle(absent_s)
    smap = dict(zip(present_s, absent_s, strict=False))
    objs = tuple(replace(o, color=cmap[o.color], shape=smap[o.shape]) for o in s.objects)
    word = r.choice([w for w in WORDS if w != s.word])
    count = r.choice([k for k in range(1, 6) if k != len(s.objects)])
    return replace(s, objects=objs, word=word, claimed_count=count)


# ---------------------------------------------------------------------------------------------------
# Rendering


def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """Outline on a unit radius, y down."""

    def ring(k: int, radii: Sequence[float], dy: float = 0.0) -> list[tuple[float, float]]:
        out = []
        for i in range(k):
            a = math.pi / 2 + 2 * math.pi * i / k
            rad = radii[i % len(radii)]
            out.append((rad * math.cos(a), -rad * math.sin(a) + dy))
        return out

    if shape == "square":
        h = 0.85
        return [(-h, -h), (h, -h), (h, h), (-h, h)]
    if shape == "triangle":
        return ring(3, [1.0], 0.15)
    if shape == "star":
        return ring(10, [1.0, 0.45], 0.05)
    if shape == "diamond":
        return [(0.0, -1.0), (0.75, 0.0), (0.0, 1.0), (-0.75, 0.0)]
    if shape == "hexagon":
        return [(math.cos(math.pi * i / 3), math.sin(math.pi * i / 3)) for i in range(6)]
    if shape == "cross":
        w, e = 0.32, 0.95
        return [
            (-w, -e),
            (w, -e),
            (w, -w),
            (e, -w),
            (e, w),
            (w, w),
            (w, e),
            (-w, e),
            (-w, w),
            (-e, w),
            (-e, -w),
            (-w, -w),
        ]
    if shape == "heart":
        pts = []
        for i in range(60):
            a = 2 * math.pi * i / 60
            x = 16 * math.sin(a) ** 3
            y = -(13 * math.cos(a) - 5 * math.cos(2 * a) - 2 * math.cos(3 * a) - math.cos(4 * a))
            pts.append((x / 16.5, (y + 2.5) / 16.5))
        return pts
    raise ValueError(f"unknown shape {shape!r}")


UNIT = {s: _unit_polygon(s) for s in SHAPES if s != "circle"}


@lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


def render_scene(scene: Scene, size: int = 128) -> Image.Image:
    """The scene drawn at `size` px: drawn at 2x and halved, for clean anti-aliased edges."""
    big = size * 2
    im = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    d = ImageDraw.Draw(im)
    for o in scene.objects:
        cx, cy, r = o.cx * big, o.cy * big, o.r * big
        fill = COLORS[o.color]
        if o.shape == "circle":
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            d.polygon([(cx + x * r, cy + y * r) for x, y in UNIT[o.shape]], fill=fill)
    font = _font(max(8, round(0.12 * big)))
    x0, y0, x1, y1 = d.textbbox((0, 0), scene.word, font=font, stroke_width=1)
    w, h = x1 - x0, y1 - y0
    m = round(0.04 * big)
    x = m if "left" in scene.corner else big - m - w
    y = m if "top" in scene.corner else big - m - h
    d.text((x - x0, y - y0), scene.word, fill=(25, 25, 25), font=font, stroke_width=1, stroke_fill=(25, 25, 25))
    return im.reduce(2)


# ---------------------------------------------------------------------------------------------------
# Text: each generator takes a scene and an RNG and returns (question, answer). Randomness must not
# depend on colour/shape names (only on structure) so wrong_fact can rerun it on the false scene.


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _plural(shape: str, n: int = 2) -> str:
    if n == 1:
        return shape
    return shape + ("es" if shape.endswith("s") else "s")


def _num(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fix_articles(text: str) -> str:
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)


def _name(o: Obj) -> str:
    return f"{o.color} {o.shape}"


def _f(o: Obj, r: random.Random) -> dict[str, str]:
    """Template fields of one object; draws the same RNG calls for every object."""
    return {
        "color": o.color,
        "shape": o.shape,
        "shapes": _plural(o.shape),
        "size": r.choice(SIZE_WORDS[o.size]),
        "pos": r.choice(POSITION_WORDS[o.position]),
        "box": "[" + ", ".join(f"{v:.2f}" for v in o.bbox()) + "]",
    }


def _list(objs: Sequence[Obj], with_pos: bool = False, r: random.Random | None = None) -> str:
    if with_pos and r is not None:
        return _join([f"a {_name(o)} {r.choice(POSITION_WORDS[o.position])}" for o in objs])
    return _join([f"a {_name(o)}" for o in objs])


def _largest(s: Scene) -> list[int]:
    rank = list(SIZES)
    top = max(rank.index(o.size) for o in s.objects)
    return [i for i, o in enumerate(s.objects) if rank.index(o.size) == top]


QA = Callable[[Scene, random.Random, int, int], tuple[str, str]]


def c_color(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    f = _f(s.objects[i], r)
    q = r.choice(
        (
            "What color is the {shape} {pos}?",
            "Which color does the {shape} {pos} have?",
            "Can you tell me the color of the {shape} {pos}?",
        )
    )
    a = r.choice(("The {shape} {pos} is {color}.", "It is {color}.", "The {shape} is {color}."))
    return q.format(**f), a.format(**f)


def c_count(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    q = r.choice(
        ("How many shapes are in the image?", "How many objects can you see?", "Count the shapes in the picture.")
    )
    lst = _list(s.objects)
    if s.count == 1:
        a = r.choice((f"There is only one shape: {lst}.", f"I can see a single shape, {lst}."))
    else:
        a = r.choice(
            (
                f"There are {_num(s.count)} shapes in the image: {lst}.",
                f"I can see {_num(s.count)} shapes, namely {lst}.",
                f"The image contains {_num(s.count)} shapes: {lst}.",
            )
        )
    return q, a


def c_word(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    q = r.choice(
        (
            "What word is written in the image?",
            "Is there any text in the image? What does it say?",
            "What does the text in the picture say?",
        )
    )
    a = r.choice(
        (
            f'The word "{s.word}" is written in the {s.corner} corner.',
            f'It says "{s.word}".',
            f'The text reads "{s.word}", in the {s.corner} corner of the image.',
        )
    )
    return q, a


def c_where(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    f = _f(s.objects[i], r)
    q = r.choice(
        (
            "Where is the {color} {shape}?",
            "Where can I find the {color} {shape}?",
            "In which part of the image is the {color} {shape}?",
        )
    )
    a = r.choice(
        (
            "The {color} {shape} is {pos}.",
            "You can see the {color} {shape} {pos}.",
            "The {size} {color} {shape} is located {pos}.",
        )
    )
    return q.format(**f), a.format(**f)


def c_shape(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    f = _f(s.objects[i], r)
    q = r.choice(
        (
            "What shape is the {color} object?",
            "Which shape is drawn in {color}?",
            "What kind of shape is the {color} one?",
        )
    )
    a = r.choice(("The {color} object is a {shape}.", "It is a {size} {shape}.", "The {color} one is a {shape} {pos}."))
    return q.format(**f), a.format(**f)


def c_exists(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    f = _f(s.objects[i], r)
    q = r.choice(
        (
            "Is there a {color} {shape} in the image?",
            "Do you see a {color} {shape}?",
            "Does the picture contain a {color} {shape}?",
        )
    )
    a = r.choice(
        (
            "Yes, there is a {size} {color} {shape} {pos}.",
            "Yes, a {color} {shape} can be seen {pos}.",
            "Yes. The {color} {shape} is {pos}, and it is {size}.",
        )
    )
    return q.format(**f), a.format(**f)


def c_shape_count(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    o = s.objects[i]
    same = [x for x in s.objects if x.shape == o.shape]
    q = r.choice((f"How many {_plural(o.shape)} are there?", f"How many {_plural(o.shape)} can you count?"))
    if len(same) == 1:
        a = r.choice(
            (
                f"There is one {o.shape}, and it is {o.color}.",
                f"Just one: a {o.color} {o.shape} {r.choice(POSITION_WORDS[o.position])}.",
            )
        )
    else:
        a = r.choice(
            (
                f"There are {_num(len(same))} {_plural(o.shape)}, colored {_join([x.color for x in same])}.",
                f"I count {_num(len(same))} {_plural(o.shape)}: {_join([f'a {x.color} one' for x in same])}.",
            )
        )
    return q, a


def c_colors(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    q = r.choice(
        ("What colors are the shapes?", "Which colors appear in the image?", "What colors can you see in the picture?")
    )
    cols = _join([o.color for o in s.objects])
    if len(s.objects) == 1:
        a = f"There is only one shape, a {_name(s.objects[0])}, so the only color is {s.objects[0].color}."
    else:
        a = r.choice(
            (f"The shapes are {cols}.", f"I can see {cols} shapes.", f"The colors are {cols}: {_list(s.objects)}.")
        )
    return q, a


def c_largest(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    q = r.choice(("Which shape is the biggest?", "What is the largest object in the picture?"))
    big = _largest(s)
    if len(s.objects) == 1:
        o = s.objects[0]
        a = f"There is only one shape, a {o.size} {_name(o)}."
    elif len(big) == 1:
        o = s.objects[big[0]]
        a = r.choice(
            (
                f"The {_name(o)} {r.choice(POSITION_WORDS[o.position])} is the largest.",
                f"The biggest one is the {_name(o)}.",
            )
        )
    elif len(big) == len(s.objects):
        a = f"They are all about the same size: {_list(s.objects)}."
    else:
        a = f"The {_join([_name(s.objects[k]) for k in big])} are the largest, about the same size."
    return q, a


CONVERSATION: tuple[QA, ...] = (
    c_color,
    c_count,
    c_word,
    c_where,
    c_shape,
    c_exists,
    c_shape_count,
    c_colors,
    c_largest,
)


def r_remove(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    o = s.objects[i]
    q = r.choice(
        (
            f"If the {_name(o)} were removed, what would be left in the image?",
            f"Imagine the {_name(o)} disappeared. How many shapes would remain, and which ones?",
            f"What would the picture look like without the {_name(o)}?",
        )
    )
    rest = [x for x in s.objects if x is not o]
    head = f"The image currently has {_num(s.count)} shape{'s' if s.count != 1 else ''}: {_list(s.objects, True, r)}. "
    if rest:
        n = max(s.count - 1, 0)
        a = (
            head
            + (f"Without the {_name(o)}, {_num(n)} shape{'s' if n != 1 else ''} would remain: {_list(rest)}. ")
            + r.choice(
                (
                    f'The word "{s.word}" in the {s.corner} corner would stay where it is.',
                    f"The {SIDE[o.position]} of the image would then be empty, so the picture would look lopsided.",
                )
            )
        )
    else:
        a = head + (
            f'Removing it would leave only the word "{s.word}" on the {s.background} background, '
            "with no shapes at all, so the picture would look almost empty."
        )
    return q, a


def r_arrangement(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    q = r.choice(
        (
            "How are the shapes arranged in the image?",
            "Describe the spatial relationship between the objects.",
            "Can you explain how the objects are positioned relative to each other?",
        )
    )
    if len(s.objects) == 1:
        o = s.objects[0]
        return q, (
            f"There is only one shape, a {o.size} {_name(o)}, placed {r.choice(POSITION_WORDS[o.position])}. "
            f'With nothing else around it, it is the focus of the image, while the word "{s.word}" sits '
            f"in the {s.corner} corner."
        )
    parts = [f"the {_name(o)} is {r.choice(POSITION_WORDS[o.position])}" for o in s.objects]
    by = {o.position: o for o in s.objects}
    rel = []
    if "left" in by and "right" in by:
        rel.append(f"The {_name(by['left'])} and the {_name(by['right'])} face each other across the image.")
    if "top" in by and "bottom" in by:
        rel.append(f"The {_name(by['top'])} is directly above the {_name(by['bottom'])}.")
    if "center" in by:
        rel.append(f"The {_name(by['center'])} sits in the middle, so the other shapes are arranged around it.")
    if not rel:
        rel.append("None of the shapes overlap, and they are spread out so each one is easy to see.")
    return q, _cap("; ".join(parts)) + ". " + " ".join(rel)


def r_standout(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    q = r.choice(
        ("Which object stands out the most, and why?", "What is the most eye-catching element of the image? Explain.")
    )
    big = _largest(s)
    o = s.objects[big[0]]
    a = (
        f"The {_name(o)} {r.choice(POSITION_WORDS[o.position])} stands out the most. "
        f"It is {'the largest shape' if len(big) == 1 else 'one of the largest shapes'} in the image, and its "
        f"{o.color} color contrasts with the {s.background} background."
    )
    rest = [x for x in s.objects if x is not o]
    if rest:
        a += f" The other shapes, {_list(rest)}, draw less attention."
    return q, a


def r_warmcool(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    q = r.choice(
        (
            "Which shapes use warm colors and which use cool colors?",
            "Can you group the shapes into warm and cool colors?",
        )
    )
    warm = [o for o in s.objects if o.color in WARM]
    cool = [o for o in s.objects if o.color in COOL]
    neutral = [o for o in s.objects if o.color not in WARM | COOL]
    out = []
    if warm:
        verb = "uses a warm color" if len(warm) == 1 else "use warm colors"
        out.append(f"The {_join([_name(o) for o in warm])} {verb}.")
    else:
        out.append("None of the shapes uses a warm color.")
    if cool:
        verb = "has a cool color" if len(cool) == 1 else "have cool colors"
        out.append(f"The {_join([_name(o) for o in cool])} {verb}.")
    else:
        out.append("None of the shapes has a cool color.")
    if neutral:
        out.append(f"The {_join([_name(o) for o in neutral])} is neutral, neither warm nor cool.")
    return q, " ".join(out) + r.choice(("", " Warm colors tend to feel closer to the viewer than cool ones."))


WORD_REASON = {
    "animal": "is the name of an animal, so the picture might be a flash card for learning words",
    "nature": "refers to something in nature, so it might be a label in a children's picture book",
    "object": "names an everyday object, so it could be a caption in a simple vocabulary exercise",
    "vehicle": "is a kind of vehicle, so it may be a label from a transport-themed worksheet",
    "sign": "is a word often printed on signs, so the image might be a simple sign or a button label",
}


def r_word(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    q = r.choice(
        (
            "What might the word in the image mean in this context?",
            "Why do you think there is text in the image, and what does it say?",
            "How does the text relate to the shapes?",
        )
    )
    a = (
        f'The image contains the word "{s.word}", written in dark letters in the {s.corner} corner. '
        f'"{s.word}" {WORD_REASON[WORD_KIND[s.word]]}. The shapes, {_list(s.objects)}, do not depict it, '
        "so the word is most likely a label rather than a description of the shapes."
    )
    return q, a


def r_same_shape(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    q = r.choice(("Do any of the shapes have the same form?", "Are there repeated shapes in the image?"))
    groups = Counter(o.shape for o in s.objects)
    rep = [sh for sh, k in groups.items() if k > 1]
    if not rep:
        return q, (
            f"No, every shape is different: {_list(s.objects)}. Each one also has its own color, "
            "so no two objects look alike."
        )
    out = []
    for sh in rep:
        same = [o for o in s.objects if o.shape == sh]
        out.append(
            f"There are {_num(len(same))} {_plural(sh)}: "
            + _join([f"a {o.color} one {r.choice(POSITION_WORDS[o.position])}" for o in same])
            + "."
        )
    single = [o for o in s.objects if groups[o.shape] == 1]
    if single:
        out.append(
            f"The {_join([_name(o) for o in single])} {'appears' if len(single) == 1 else 'each appear'} only once."
        )
    return q, "Yes. " + " ".join(out) + " Even the repeated shapes differ in color."


def r_compare(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    a_, b_ = s.objects[i], s.objects[j]
    q = r.choice(
        (
            f"Compare the {_name(a_)} and the {_name(b_)}.",
            f"What are the differences between the {_name(a_)} and the {_name(b_)}?",
        )
    )
    fa, fb = _f(a_, r), _f(b_, r)
    out = (
        f"The {_name(a_)} is {fa['size']} and placed {fa['pos']}, while the {_name(b_)} is {fb['size']} "
        f"and placed {fb['pos']}. "
    )
    out += (
        "They have the same shape but different colors. "
        if a_.shape == b_.shape
        else "They differ in shape as well as in color. "
    )
    rank = list(SIZES)
    da, db = rank.index(a_.size), rank.index(b_.size)
    if da == db:
        out += "In size they are about equal."
    else:
        bigger = a_ if da > db else b_
        out += f"The {_name(bigger)} is the bigger of the two."
    return q, out


REASONING: tuple[QA, ...] = (r_remove, r_arrangement, r_standout, r_warmcool, r_word, r_same_shape, r_compare)


def ref_color(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    f = _f(s.objects[i], r)
    q = r.choice(("What color is the {shape} {pos}?", "What is the color of the {size} {shape} {pos}?"))
    return q.format(**f), r.choice(("It is {color}.", "The {shape} is {color}.", "{Color}.")).format(
        Color=_cap(f["color"]), **f
    )


def ref_shape(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    f = _f(s.objects[i], r)
    q = r.choice(("What shape is the {color} object?", "What is the {color} object {pos}?"))
    return q.format(**f), r.choice(("It is a {shape}.", "A {color} {shape}.", "It is a {size} {shape}.")).format(**f)


def ref_where(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    f = _f(s.objects[i], r)
    q = r.choice(("Where is the {color} {shape}?", "Where is the {color} object located?"))
    return q.format(**f), r.choice(("The {color} {shape} is {pos}.", "The {shape} is {pos}.")).format(**f)


def ref_box(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    f = _f(s.objects[i], r)
    q = r.choice(
        (
            "What is the object in the region {box}?",
            "Briefly describe the object at {box}.",
            "What can be seen in the region {box}?",
        )
    )
    return q.format(**f), r.choice(("It is a {color} {shape}.", "A {size} {color} {shape}.")).format(**f)


def ref_text(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    q = r.choice(
        (f"What does the text in the {s.corner} corner say?", f"What word is written in the {s.corner} corner?")
    )
    return q, r.choice((f'It says "{s.word}".', f'The word is "{s.word}".'))


def ref_size(s: Scene, r: random.Random, i: int, j: int) -> tuple[str, str]:
    f = _f(s.objects[i], r)
    q = r.choice(("How big is the {color} {shape}?", "Is the {shape} {pos} large or small?"))
    return q.format(**f), r.choice(("The {color} {shape} is {size}.", "It is a {size} {color} {shape}.")).format(**f)


REFERRING: tuple[QA, ...] = (ref_color, ref_shape, ref_where, ref_box, ref_text, ref_size)
REFERRING_WEIGHTS = (3, 2, 2, 2, 1, 1)


def detail_description(s: Scene, r: random.Random) -> str:
    """One paragraph naming every object's colour, shape, size and position, the count and the word."""
    n = s.count
    objs = list(s.objects)
    bg = s.background
    shapes_word = "shape" if n == 1 else "shapes"
    intro = r.choice(
        (
            f"The image shows {_num(n)} simple {shapes_word} drawn on a plain {bg} background.",
            f"This is a clean, minimal illustration with a {bg} background and {_num(n)} colorful {shapes_word}.",
            f"In this picture, {_num(n)} flat geometric {shapes_word} {'is' if n == 1 else 'are'} arranged on a "
            f"{bg} background.",
        )
    )
    if r.random() < 0.3:
        r.shuffle(objs)
    sents = []
    for k, o in enumerate(objs):
        f = _f(o, r)
        f["Pos"] = _cap(f["pos"])
        t = r.choice(
            (
                "{Pos}, there is a {size} {color} {shape}.",
                "A {size} {color} {shape} sits {pos}.",
                "{Pos} you can see a {color} {shape}, which is {size}.",
                "The {color} {shape} {pos} is {size} and filled with solid {color}.",
            )
        )
        if k > 0 and r.random() < 0.4:
            rest = t.replace("{Pos}", "{pos}", 1) if t.startswith("{Pos}") else t[0].lower() + t[1:]
            t = r.choice(("In addition, ", "Besides that, ", "Also, ")) + rest
        sents.append(t.format(**f))
    groups = Counter(o.shape for o in s.objects)
    for sh, k in groups.items():
        if k > 1:
            sents.append(
                r.choice(
                    (
                        f"Note that {_num(k)} of the shapes are {_plural(sh)}, told apart only by their colors.",
                        f"There are {_num(k)} {_plural(sh)} in total, each in a different color.",
                        f"The {_plural(sh)} appear {'twice' if k == 2 else f'{_num(k)} times'}.",
                    )
                )
            )
    by = {o.position: o for o in s.objects}
    if "left" in by and "right" in by:
        sents.append(f"The {_name(by['left'])} and the {_name(by['right'])} mirror each other on opposite sides.")
    if "top" in by and "bottom" in by:
        sents.append(f"The {_name(by['top'])} sits directly above the {_name(by['bottom'])}.")
    if "center" in by and len(s.objects) > 1:
        sents.append(f"The {_name(by['center'])} in the middle is surrounded by the other shapes.")
    empty = _join([f"the {SIDE[p]}" for p in POSITIONS if p not in by])
    sents.append(
        r.choice(
            (
                f"{_cap(empty)} of the image {'is' if ' and ' not in empty else 'are'} left empty.",
                f"Nothing is drawn at {empty}, which leaves plenty of open space.",
            )
        )
    )
    text = r.choice(
        (
            f'In the {s.corner} corner, the word "{s.word}" is printed in dark capital letters.',
            f'The word "{s.word}" is written in black letters in the {s.corner} corner of the image.',
            f'A short word, "{s.word}", appears in the {s.corner} corner.',
        )
    )
    cols = _join([o.color for o in s.objects])
    if len(s.objects) == 1:
        close = (
            f"The {_name(s.objects[0])} is the only object, so it is clearly the focus of the picture; "
            "there are no other shapes, no shadows and no overlapping elements."
        )
    else:
        close = r.choice(
            (
                f"Altogether the picture contains {_num(n)} shapes in {_num(len(s.objects))} different colors: "
                f"{cols}. None of them overlap.",
                f"The shapes do not overlap, and each has its own color ({cols}), which makes the composition "
                "clean and easy to read.",
                f"The scene looks like a page from a children's book about shapes and colors, with {cols} shapes "
                "spread across the picture.",
            )
        )
    return " ".join([intro, *sents, text, close])


# ---------------------------------------------------------------------------------------------------
# Conversations per task type


def _plan_turns(task: str, s: Scene, r: random.Random) -> list[tuple[QA, int, int]]:
    """Which generators and objects each turn uses; depends on structure only."""
    k = len(s.objects)

    def pick() -> tuple[int, int]:
        i = r.randrange(k)
        j = r.choice([x for x in range(k) if x != i]) if k > 1 else i
        return i, j

    if task == "conversation":
        gens = r.sample(CONVERSATION, r.choice((2, 2, 3)))
    elif task == "complex_reasoning":
        pool = [g for g in REASONING if k > 1 or g is not r_compare]
        gens = r.sample(pool, r.choice((2, 3, 3, 4)))
    else:
        gens = r.choices(REFERRING, weights=REFERRING_WEIGHTS)
    return [(g, *pick()) for g in gens]


def _qa_pairs(task: str, s: Scene, seed: int) -> list[tuple[str, str]]:
    """(question, answer) turns for a task type, fully determined by (scene structure, seed)."""
    if task == "detail_description":
        r = random.Random(seed)
        pairs = [(r.choice(DETAIL_PROMPTS), detail_description(s, random.Random(seed + 1)))]
    else:
        plan = _plan_turns(task, s, random.Random(seed))
        # A fresh RNG per turn: a branch that depends on names cannot shift later turns.
        pairs = [g(s, random.Random(seed * 8 + t + 1), i, j) for t, (g, i, j) in enumerate(plan)]
    return [(_fix_articles(q), _fix_articles(a)) for q, a in pairs]


def _shuffle_words(text: str, r: random.Random) -> str:
    words = text.split()
    if len(words) < 2:
        return text
    out = words[:]
    for _ in range(10):
        r.shuffle(out)
        if out != words:
            break
    return " ".join(out)


def _truncate(text: str, r: random.Random) -> str:
    words = text.split()
    if len(words) < 2:
        return text.rstrip(".!?")
    lo = max(1, int(len(words) * 0.3))
    hi = max(lo, min(len(words) - 1, int(len(words) * 0.7)))
    return " ".join(words[: r.randint(lo, hi)]).rstrip('.,;:!?"')


def _filler(text: str, r: random.Random) -> str:
    k = 1 if len(text.split()) <= 15 else max(2, min(len(FILLER), round(len(text.split()) / 14)))
    return " ".join(r.sample(FILLER, k))


@dataclass
class _Sample:
    index: int
    task: str
    scene: Scene
    defect: str = CLEAN
    image_index: int = -1


def _donor(i: int, scenes: Sequence[Scene], r: random.Random) -> int:
    """Another sample whose image shows none of i's colours, shapes, word or count; relaxed if none."""
    s = scenes[i]
    cols = {o.color for o in s.objects}
    shps = {o.shape for o in s.objects}

    def ok(t: Scene, strict: int) -> bool:
        if any(o.color in cols for o in t.objects) or t.word == s.word:
            return False
        if strict >= 1 and len(t.objects) == len(s.objects):
            return False
        return not (strict >= 2 and any(o.shape in shps for o in t.objects))

    for strict in (2, 1, 0):
        for _ in range(400):
            c = r.randrange(len(scenes))
            if c != i and ok(scenes[c], strict):
                return c
    raise RuntimeError("no donor image found")  # pragma: no cover - colours alone always leave one


def _conversation(task: str, defect: str, scene: Scene, seed: int) -> list[tuple[str, str]]:
    pairs = _qa_pairs(task, scene, seed)
    r = random.Random(seed ^ 0x5EED)
    if defect == "wrong_fact":
        false = _qa_pairs(task, _false_scene(scene, r), seed)
        pairs = [(q, a) for (q, _), (_, a) in zip(pairs, false, strict=True)]
    elif defect == "shuffled":
        pairs = [(q, _shuffle_words(a, r)) for q, a in pairs]
    elif defect == "truncated":
        pairs = [(q, _truncate(a, r)) for q, a in pairs]
    elif defect == "filler":
        pairs = [(q, _filler(a, r)) for q, a in pairs]
    return pairs


def _record(sample: _Sample, seed: int) -> dict[str, Any]:
    pairs = _conversation(sample.task, sample.defect, sample.scene, seed)
    conv = []
    for t, (q, a) in enumerate(pairs):
        conv.append({"from": "human", "value": ("<image>\n" + q) if t == 0 else q})
        conv.append({"from": "gpt", "value": a})
    rec: dict[str, Any] = {
        "id": f"svit_{sample.index:06d}",
        "image": _image_name(sample.image_index),
        "conversations": conv,
        "defect": sample.defect,
    }
    if sample.defect == "swapped_image":
        rec["original_image"] = _image_name(sample.index)
    return rec


def svit_task_files(out_dir: Path) -> list[Path]:
    """The four per-task-type JSON files `make_svit_like` writes (the other JSON files are not records)."""
    return [Path(out_dir) / f"{t}.json" for t in TASK_TYPES]


def _image_name(i: int) -> str:
    return f"images/{i:06d}.jpg"


def make_svit_like(
    out_dir: Path,
    n: int = 3000,
    seed: int = 0,
    image_size: int = 128,
    defect_rate: float = 0.2,
) -> Path:
    """Write an SVIT-like dataset in LLaVA format under `out_dir`; return `out_dir`.

    Files: `images/NNNNNN.jpg` (one per sample), one JSON list per task type (`conversation.json`,
    `complex_reasoning.json`, `detail_description.json`, `referring_qa.json`), `task_type_prompts.json`
    and `scenes.json` (ground truth: what each image shows). Each record carries a `defect` label;
    swapped-image records also name their `original_image`. Answer defects (shuffled, wrong_fact, truncated,
    filler) corrupt every answer of a sample and leave the questions intact. Deterministic for a seed.
    """
    out_dir = Path(out_dir)
    if n < 8:
        raise ValueError("n must be at least 8")
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError("defect_rate must be within [0, 1]")
    r = random.Random(seed)
    scenes = [_random_scene(r) for _ in range(n)]
    # Exact counts: task types in equal shares, defects spread evenly over types and kinds.
    tasks = [TASK_TYPES[k % len(TASK_TYPES)] for k in range(n)]
    r.shuffle(tasks)
    samples = [_Sample(i, tasks[i], scenes[i], image_index=i) for i in range(n)]
    n_bad = round(defect_rate * n)
    by_task = {t: [s for s in samples if s.task == t] for t in TASK_TYPES}
    for lst in by_task.values():
        r.shuffle(lst)
    bad: list[_Sample] = []
    for k in range(n):  # round-robin over types so each gets its share
        lst = by_task[TASK_TYPES[k % len(TASK_TYPES)]]
        if len(bad) == n_bad:
            break
        if lst:
            bad.append(lst.pop())
    kinds = [DEFECTS[k % len(DEFECTS)] for k in range(len(bad))]
    r.shuffle(kinds)
    for smp, kind in zip(bad, kinds, strict=True):
        smp.defect = kind
        if kind == "swapped_image":
            smp.image_index = _donor(smp.index, scenes, r)

    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(scenes):  # ~1 ms per image: one process is enough
        render_scene(scene, image_size).save(img_dir / f"{i:06d}.jpg", "JPEG", quality=90)

    files: dict[str, list[dict[str, Any]]] = {t: [] for t in TASK_TYPES}
    for smp in samples:
        files[smp.task].append(_record(smp, seed * 1_000_003 + smp.index * 16))
    for t, recs in files.items():
        (out_dir / f"{t}.json").write_bytes(orjson.dumps(recs, option=orjson.OPT_INDENT_2))
    (out_dir / "task_type_prompts.json").write_bytes(orjson.dumps(TASK_TYPE_PROMPTS, option=orjson.OPT_INDENT_2))
    (out_dir / "scenes.json").write_bytes(orjson.dumps({_image_name(i): s.to_json() for i, s in enumerate(scenes)}))
    return out_dir


# ---------------------------------------------------------------------------------------------------
# LLaVA-665K-shaped file (ingest benchmark). Text is drawn from pools of pre-built sentences and QA
# pairs so that ~1 GB streams out in well under a minute; no image files are written.

PROMPT_SHORT = "Answer the question using a single word or phrase."
PROMPT_MC = "Answer with the option's letter from the given choices directly."
PROMPT_CAPTION = "Provide a one-sentence caption for the provided image."
PROMPT_BOX = "Please provide the bounding box coordinate of the region this sentence describes: "
PROMPT_REGION = "Please provide a short description for this region: "

# Records per 1,000, after LLaVA-1.5's mix (Liu et al. 2023, Table 7), with text-only ShareGPT at 5%.
MIX665K: dict[str, int] = {
    "llava_instruct": 237,
    "sharegpt": 50,
    "vqav2": 125,
    "gqa": 108,
    "okvqa": 14,
    "ocrvqa": 120,
    "aokvqa": 100,
    "textcaps": 33,
    "refcoco": 72,
    "vg": 141,
}
BLOCK = sum(MIX665K.values())

_NOUNS = (
    "man",
    "woman",
    "dog",
    "cat",
    "car",
    "bus",
    "table",
    "chair",
    "street",
    "building",
    "tree",
    "window",
    "train",
    "plate",
    "pizza",
    "bicycle",
    "horse",
    "boat",
    "sign",
    "umbrella",
    "laptop",
    "phone",
    "bed",
    "sofa",
    "clock",
    "bench",
    "girl",
    "boy",
    "giraffe",
    "elephant",
    "zebra",
    "bird",
    "kite",
    "surfboard",
    "skateboard",
    "sandwich",
    "cake",
    "bowl",
    "cup",
    "vase",
    "book",
    "shelf",
    "mirror",
    "truck",
    "motorcycle",
    "airplane",
    "fence",
    "lamp",
    "television",
    "refrigerator",
    "oven",
    "sink",
    "toilet",
    "traffic light",
    "fire hydrant",
    "tennis racket",
    "frisbee",
    "suitcase",
    "backpack",
    "sheep",
    "cow",
    "banana",
    "orange",
    "broccoli",
    "donut",
    "teddy bear",
    "computer",
    "keyboard",
    "player",
    "child",
)
_ADJS = (
    "large",
    "small",
    "old",
    "young",
    "wooden",
    "metal",
    "busy",
    "empty",
    "tall",
    "short",
    "bright",
    "dark",
    "open",
    "crowded",
    "colorful",
    "striped",
    "clean",
    "modern",
    "rustic",
    "white",
    "black",
    "red",
    "blue",
    "green",
    "shiny",
    "wet",
    "parked",
    "standing",
    "narrow",
    "wide",
)
_COLORS_NAT = ("red", "blue", "white", "black", "green", "yellow", "brown", "gray", "orange", "pink", "silver")
_VERBS = (
    "standing",
    "sitting",
    "walking",
    "riding",
    "holding a phone",
    "looking at the camera",
    "playing",
    "waiting",
    "eating",
    "talking",
    "resting",
    "crossing the street",
)
_PREPS = ("next to", "in front of", "behind", "on top of", "near", "under", "beside", "across from", "inside", "along")
_PLACES = (
    "kitchen",
    "street",
    "park",
    "beach",
    "living room",
    "office",
    "field",
    "restaurant",
    "airport",
    "train station",
    "bathroom",
    "city square",
    "market",
    "farm",
    "ski slope",
    "tennis court",
)
_CLAUSES = (
    "the area is used frequently by people",
    "it is a sunny day",
    "the owner is nearby",
    "the scene takes place in a busy city",
    "someone has recently left",
    "the weather is cold",
    "people are preparing a meal",
    "the event is about to begin",
    "the vehicle is waiting for passengers",
    "the animals are used to humans",
    "the room has been recently cleaned",
    "the photo was taken at dusk",
)
_LLAVA_SENT = (
    "The {adj} {noun} is {verb} {prep} the {noun2}.",
    "In the image, a {noun} can be seen {prep} a {adj} {noun2}, which suggests that {clause}.",
    "There are several {nouns} in the scene, including a {adj} {noun2} and a {noun3}.",
    "This indicates that the {noun} may be {verb} {prep} the {noun2}, possibly because {clause}.",
    "The presence of the {adj} {noun} adds to the overall atmosphere of the {place}.",
    "Overall, the image captures a {adj} moment in a {place}, with a {noun} {verb} {prep} a {noun2}.",
    "The {noun} appears to be {adj}, and it is positioned {prep} the {noun2} in the {place}.",
    "One possible reason for this is that {clause}, which is common in a {place}.",
    "Additionally, a {color} {noun} is visible in the background, {prep} a {noun2}.",
    "It is important to be cautious in such situations, as {clause}.",
)
_LLAVA_Q = {
    "conv": (
        "What is the {noun} doing in the image?",
        "What color is the {noun}?",
        "Where is the {noun} located?",
        "How many {nouns} are there in the image?",
        "What is the purpose of the {noun} in this setting?",
        "Is the {noun} {adj}?",
        "What can you infer about the {place} from the image?",
        "What might be the reason for the {noun} being {prep} the {noun2}?",
    ),
    "complex": (
        "What challenges might the {noun} face in this situation?",
        "Why might the {noun} be {verb} {prep} the {noun2}?",
        "What can be inferred about the {place} based on the image?",
        "What precautions should be taken in this kind of {place}?",
        "What could be the significance of the {adj} {noun} in this scene?",
    ),
    "detail": (
        *DETAIL_PROMPTS,
        "What do you see happening in this image?",
        "Can you describe the main features of this image for me?",
        "What do you think is going on in this snapshot?",
        "Can you elaborate on the elements of the picture provided?",
        "Describe the following image.",
        "What's happening in the scene?",
    ),
}
_TASKS = (
    "write a function that sorts a list",
    "parse a CSV file",
    "set up a web server",
    "improve my resume",
    "plan a trip to Japan",
    "fix this error",
    "write a cover letter",
    "learn a new language",
    "build a REST API",
    "train a machine learning model",
    "optimize a SQL query",
    "design a logo",
    "cache the results",
    "write unit tests",
    "deploy the app to the cloud",
    "read a large file",
)
_TOPICS = (
    "climate change",
    "the history of Rome",
    "quantum computing",
    "healthy eating",
    "remote work",
    "machine learning",
    "the stock market",
    "renewable energy",
    "social media marketing",
    "time management",
    "space exploration",
    "blockchain",
    "the French revolution",
    "photography",
)
_LANGS = ("Python", "JavaScript", "Java", "C++", "Go", "Rust", "SQL", "TypeScript")
_HUMAN_SENT = (
    "Can you help me {task}?",
    "Write a short essay about {topic}.",
    "What is the difference between {topic} and {topic2}?",
    "Explain {topic} in simple terms.",
    "How do I {task} in {lang}?",
    "Give me five ideas for a blog post about {topic}.",
    "I am working on a project and need to {task}.",
    "Thanks! Can you make it shorter?",
    "Continue.",
    "Please rewrite the previous answer in a more formal tone.",
    "What are the pros and cons of {topic}?",
)
_GPT_SENT = (
    "Sure, here is an overview of {topic}.",
    "First, you need to {task}.",
    "This approach works well because it keeps the code simple and easy to test.",
    "Keep in mind that the details depend on your specific situation.",
    "In {lang}, you can do this with a few lines of code.",
    "Another option is to {task}, which is often simpler.",
    "{Topic} has become increasingly important in recent years.",
    "Here are some key points to consider:",
    "1. Start small and measure the results before changing anything else.",
    "2. Make sure you understand how {topic} affects the people involved.",
    "3. Review the outcome regularly and adjust your plan as needed.",
    "Let me know if you have any other questions!",
    "I hope this helps.",
    "Many experts agree that {topic} will shape the next decade.",
    "To {task}, break the problem into smaller steps and handle each one separately.",
)
_CODE = (
    "```{lang}\ndef {fname}(items):\n    result = []\n    for item in items:\n        if item is not None:\n"
    "            result.append(item)\n    return sorted(result)\n```",
    "```{lang}\nimport csv\n\nwith open('{fname}.csv') as f:\n    for row in csv.reader(f):\n        print(row)\n```",
)
_GQA_Q = (
    ("Is the {noun} to the left or to the right of the {noun2}?", ("left", "right")),
    ("What is the {adj} {noun} on?", _NOUNS),
    ("Are there both {nouns} and {nouns2} in this picture?", ("yes", "no")),
    ("Which color is the {noun} that is {prep} the {noun2}?", _COLORS_NAT),
    ("Who is wearing the shirt?", ("man", "woman", "boy", "girl", "player")),
    ("What kind of furniture is {prep} the {noun}?", ("table", "chair", "sofa", "shelf", "bed", "desk")),
    ("Is the {noun} made of wood or metal?", ("wood", "metal")),
    ("Do you see any {nouns} or {nouns2} there?", ("yes", "no")),
    ("What is the name of the {adj} object {prep} the {noun}?", _NOUNS),
)
_VQA_Q = (
    ("What color is the {noun}?", tuple(c.capitalize() for c in _COLORS_NAT)),
    ("How many {nouns} are there?", tuple(str(k) for k in range(10))),
    ("Is the {noun} {adj}?", ("Yes", "No")),
    ("What is the {noun} doing?", tuple(v.capitalize() for v in _VERBS)),
    ("Where is the {noun}?", tuple(p.capitalize() for p in _PLACES)),
    ("What is on the {noun}?", tuple(x.capitalize() for x in _NOUNS)),
    ("Is this a {place}?", ("Yes", "No")),
    ("What sport is being played?", ("Tennis", "Baseball", "Soccer", "Skiing", "Surfing", "Frisbee")),
    ("What time of day is it?", ("Morning", "Afternoon", "Night", "Evening")),
    ("Are there any {nouns} in the picture?", ("Yes", "No")),
)
_OKVQA_Q = (
    ("What is the name of the famous brand that makes this {noun}?", ("Nike", "Apple", "Sony", "Toyota", "Ikea")),
    ("What country is this {place} most likely in?", ("France", "Japan", "USA", "Italy", "India")),
    ("What material is the {noun} made of?", ("Wood", "Plastic", "Steel", "Glass", "Cotton")),
)
_GENRES = (
    "Travel",
    "Cookbooks, Food & Wine",
    "Children's Books",
    "Science Fiction & Fantasy",
    "History",
    "Business & Money",
    "Health, Fitness & Dieting",
    "Literature & Fiction",
    "Religion & Spirituality",
    "Computers & Technology",
    "Humor & Entertainment",
    "Arts & Photography",
)
_FIRST = ("James", "Mary", "John", "Linda", "Robert", "Susan", "David", "Karen", "Emma", "Oliver", "Ava", "Noah")
_LAST = ("Smith", "Johnson", "Brown", "Taylor", "Anderson", "Thomas", "Moore", "Martin", "Clark", "Lewis")
_TITLE_NOUNS = ("Garden", "River", "Kitchen", "Journey", "Secret", "Mountain", "City", "House", "Dream", "Ocean")


_SLOT_VALUES: dict[str, Sequence[str]] = {
    "noun": _NOUNS,
    "noun2": _NOUNS,
    "noun3": _NOUNS,
    "adj": _ADJS,
    "verb": _VERBS,
    "prep": _PREPS,
    "place": _PLACES,
    "clause": _CLAUSES,
    "color": _COLORS_NAT,
    "task": _TASKS,
    "topic": _TOPICS,
    "topic2": _TOPICS,
    "lang": _LANGS,
    "fname": ("clean", "load_rows", "process", "main"),
}


_IRREGULAR = {"man": "men", "woman": "women", "child": "children", "sheep": "sheep", "teddy bear": "teddy bears"}


def _noun_plural(noun: str) -> str:
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    return noun + ("es" if noun.endswith(("s", "ch", "sh")) else "s")


class _Slots(dict[str, str]):
    """Template slots drawn on first use, so a template costs only the draws it needs."""

    def __init__(self, r: random.Random) -> None:
        super().__init__()
        self.r = r

    def __missing__(self, key: str) -> str:
        if key == "Topic":
            v = _cap(self["topic"])
        elif key.startswith("nouns"):
            v = _noun_plural(self.r.choice(_NOUNS))
        else:
            v = self.r.choice(_SLOT_VALUES[key])
        self[key] = v
        return v


class _Pools:
    """Pre-built sentences and QA pairs; per-record work is picking from these."""

    def __init__(self, seed: int, size: int = 4000) -> None:
        r = random.Random(seed)
        self.r = r

        def slots() -> _Slots:
            return _Slots(r)

        def fill(templates: Sequence[str]) -> list[str]:
            return [_fix_articles(r.choice(templates).format_map(slots())) for _ in range(size)]

        def qa(templates: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[str, str]]:
            out = []
            for _ in range(size):
                q, answers = r.choice(templates)
                out.append((_fix_articles(q.format_map(slots())), r.choice(answers)))
            return out

        self.llava_sent = fill(_LLAVA_SENT)
        self.llava_q = {k: fill(v) for k, v in _LLAVA_Q.items()}
        self.human = fill(_HUMAN_SENT)
        self.gpt = fill(_GPT_SENT)
        self.code = [c.format(lang=r.choice(_LANGS).lower(), fname=r.choice(("clean", "rows", "data"))) for c in _CODE]
        self.vqa = qa(_VQA_Q)
        self.gqa = qa(_GQA_Q)
        self.okvqa = qa(_OKVQA_Q)
        self.ocr = self._ocr(size)
        self.mc = self._mc(size)
        self.caps = self._caps(size)
        self.phrases = [
            _fix_articles(
                r.choice(
                    (
                        "{adj} {noun} on the left",
                        "{noun} {prep} the {noun2}",
                        "{color} {noun}",
                        "the {noun} in the middle",
                        "{adj} {noun} on the right",
                        "a {noun} {verb}",
                    )
                ).format_map(slots())
            )
            for _ in range(size)
        ]
        self.boxes = []
        for _ in range(size):
            x1, y1 = r.random() * 0.7, r.random() * 0.7
            x2, y2 = x1 + 0.05 + r.random() * (0.95 - x1), y1 + 0.05 + r.random() * (0.95 - y1)
            self.boxes.append(f"[{x1:.2f}, {y1:.2f}, {min(x2, 1.0):.2f}, {min(y2, 1.0):.2f}]")

    def _ocr(self, size: int) -> list[tuple[str, str]]:
        r = self.r
        out = []
        for _ in range(size):
            k = r.randrange(6)
            genre = r.choice(_GENRES)
            if k == 0:
                out.append(("Who wrote this book?", f"{r.choice(_FIRST)} {r.choice(_LAST)}"))
            elif k == 1:
                title = (
                    f"The {r.choice(_ADJS).capitalize()} {r.choice(_TITLE_NOUNS)}: A {r.choice(_TOPICS).title()} Guide"
                )
                out.append(("What is the title of this book?", title))
            elif k == 2:
                out.append(("What type of book is this?", genre))
            elif k == 3:
                out.append((f"Is this a {r.choice(_GENRES).lower()} book?", r.choice(("Yes", "No"))))
            elif k == 4:
                out.append((f"Is this book related to {r.choice(_GENRES)}?", r.choice(("Yes", "No"))))
            else:
                out.append(("What is the genre of this book?", genre))
        return out

    def _mc(self, size: int) -> list[tuple[str, str]]:
        r = self.r
        out = []
        for _ in range(size):
            q = r.choice(
                (
                    "What is the {noun} used for?",
                    "Why is the {noun} {verb}?",
                    "What will the {noun} do next?",
                    "What is the {adj} object {prep} the {noun} called?",
                )
            ).format(noun=r.choice(_NOUNS), verb=r.choice(_VERBS), adj=r.choice(_ADJS), prep=r.choice(_PREPS))
            opts = r.sample(_NOUNS, 4)
            body = "\n".join(f"{'ABCD'[k]}. {o}" for k, o in enumerate(opts))
            out.append((f"{q}\n{body}\n{PROMPT_MC}", "ABCD"[r.randrange(4)]))
        return out

    def _caps(self, size: int) -> list[tuple[str, str]]:
        r = self.r
        out = []
        for _ in range(size):
            toks = [r.choice(WORDS) for _ in range(r.randint(1, 4))]
            q = PROMPT_CAPTION + (f"\nReference OCR token: {', '.join(toks)}" if r.random() < 0.6 else "")
            cap = _fix_articles(
                r.choice(
                    (
                        "A {adj} {noun} with the word {tok} written on it.",
                        "A sign that says {tok} next to a {noun}.",
                        "The {noun} has a label reading {tok} in large letters.",
                        "A {color} {noun} in a {place} displays {tok}.",
                    )
                ).format(
                    adj=r.choice(_ADJS),
                    noun=r.choice(_NOUNS),
                    tok=toks[0],
                    color=r.choice(_COLORS_NAT),
                    place=r.choice(_PLACES),
                )
            )
            out.append((q, cap))
        return out


def _convo(pairs: Sequence[tuple[str, str]], image_first: bool = True) -> list[dict[str, str]]:
    conv: list[dict[str, str]] = []
    for t, (q, a) in enumerate(pairs):
        if t == 0:
            q = ("<image>\n" + q) if image_first else (q + "\n<image>")
        conv.append({"from": "human", "value": q})
        conv.append({"from": "gpt", "value": a})
    return conv


def _id_number(i: int) -> int:
    """A bijection of the record index onto [0, 10**8): unique, random-looking ids."""
    return (i * 48_271_337 + 7_654_321) % 100_000_000


class _Llava665k:
    def __init__(self, seed: int) -> None:
        self.p = _Pools(seed)

    def record(self, source: str, i: int, r: random.Random) -> dict[str, Any]:
        p, num = self.p, _id_number(i)
        coco = f"coco/train2017/{num:012d}.jpg"
        if source == "llava_instruct":
            kind = r.choices(("conv", "complex", "detail"), weights=(37, 49, 14))[0]
            if kind == "conv":
                pairs = [
                    (r.choice(p.llava_q["conv"]), " ".join(r.choices(p.llava_sent, k=r.randint(3, 7))))
                    for _ in range(r.randint(2, 7))
                ]
            else:
                pairs = [(r.choice(p.llava_q[kind]), " ".join(r.choices(p.llava_sent, k=r.randint(7, 15))))]
            return {"id": f"{num:012d}", "image": coco, "conversations": _convo(pairs, r.random() < 0.5)}
        if source == "sharegpt":
            conv = []
            for _ in range(r.randint(1, 9)):
                conv.append({"from": "human", "value": " ".join(r.choices(p.human, k=r.randint(1, 3)))})
                body = " ".join(r.choices(p.gpt, k=r.randint(8, 30)))
                if r.random() < 0.4:
                    body += "\n\n" + r.choice(p.code) + "\n\n" + r.choice(p.gpt)
                conv.append({"from": "gpt", "value": body})
            return {"id": f"{_base62(num)}_{r.randrange(4)}", "conversations": conv}
        if source in ("vqav2", "gqa", "okvqa"):
            pool = {"vqav2": p.vqa, "gqa": p.gqa, "okvqa": p.okvqa}[source]
            m = {"vqav2": r.randint(1, 10), "gqa": r.randint(3, 22), "okvqa": r.randint(1, 2)}[source]
            pairs = [(q + "\n" + PROMPT_SHORT, a) for q, a in r.choices(pool, k=m)]
            if source == "gqa":
                return {"id": str(num), "image": f"gqa/images/{num}.jpg", "conversations": _convo(pairs)}
            return {"id": f"{num:012d}", "image": coco, "conversations": _convo(pairs)}
        if source == "ocrvqa":
            pairs = [(q + "\n" + PROMPT_SHORT, a) for q, a in r.choices(p.ocr, k=r.randint(1, 9))]
            isbn = str(num + 1_000_000_000)
            return {"id": isbn, "image": f"ocr_vqa/images/{isbn}.jpg", "conversations": _convo(pairs)}
        if source == "aokvqa":
            return {"id": f"{num:012d}", "image": coco, "conversations": _convo(r.choices(p.mc, k=r.randint(1, 3)))}
        if source == "textcaps":
            hid = f"{(num * 0x9E3779B97F4A7C15) % (1 << 64):016x}"
            return {"id": hid, "image": f"textvqa/train_images/{hid}.jpg", "conversations": _convo([r.choice(p.caps)])}
        # refcoco / vg: grounding and region-description turns, as LLaVA-1.5 mixes them
        m = r.randint(2, 8) if source == "refcoco" else r.randint(4, 14)
        pairs = []
        for _ in range(m):
            phrase, box = r.choice(p.phrases), r.choice(p.boxes)
            if r.random() < 0.5:
                pairs.append((PROMPT_BOX + phrase + ".", box))
            else:
                pairs.append((PROMPT_REGION + box, _cap(phrase) + "."))
        if source == "refcoco":
            return {"id": f"{num:012d}", "image": coco, "conversations": _convo(pairs)}
        folder = "VG_100K" if num % 3 else "VG_100K_2"
        return {"id": str(num), "image": f"vg/{folder}/{num}.jpg", "conversations": _convo(pairs)}


_B62 = string.digits + string.ascii_letters


def _base62(x: int) -> str:
    out = []
    for _ in range(7):
        x, d = divmod(x, 62)
        out.append(_B62[d])
    return "".join(out)


def _llava665k_records(n: int, seed: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """(source, record) in file order; each block of 1,000 has the mix's exact counts."""
    gen = _Llava665k(seed)
    for b, start in enumerate(range(0, n, BLOCK)):
        r = random.Random(seed * 1_000_003 + b)
        schedule = [s for s, k in MIX665K.items() for _ in range(k)]
        r.shuffle(schedule)
        for k, source in enumerate(schedule[: n - start]):
            yield source, gen.record(source, start + k, r)


def make_llava665k_like(path: Path, n: int = 665_000, seed: int = 0) -> dict[str, Any]:
    """Stream a LLaVA-665K-shaped file (a JSON list, or JSONL if `path` ends in .jsonl); return counts.

    Sources and response-format prompts follow LLaVA-1.5's mix; 5% of records are text-only (no `image`
    key). Memory stays bounded (records are written one by one); ~1.5 KB per record, ~1 GB at 665k.
    """
    path = Path(path)
    if n < 0:
        raise ValueError("n must be >= 0")
    jsonl = path.suffix == ".jsonl"
    t0 = time.perf_counter()
    by_source: Counter[str] = Counter()
    turns = text_only = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb", buffering=1 << 22) as f:
        if not jsonl:
            f.write(b"[\n")
        buf: list[bytes] = []
        first = True
        for source, rec in _llava665k_records(n, seed):
            by_source[source] += 1
            turns += len(rec["conversations"]) // 2
            text_only += "image" not in rec
            buf.append(orjson.dumps(rec))
            if len(buf) >= 2000:
                first = _flush(f, buf, jsonl, first)
        _flush(f, buf, jsonl, first)
        if not jsonl:
            f.write(b"\n]\n")
    return {
        "path": str(path),
        "n": n,
        "bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 2),
        "text_only": text_only,
        "turns": turns,
        "by_source": dict(by_source),
    }


def _flush(f: Any, buf: list[bytes], jsonl: bool, first: bool) -> bool:
    if not buf:
        return first
    if jsonl:
        f.write(b"\n".join(buf) + b"\n")
    else:
        f.write((b"" if first else b",\n") + b",\n".join(buf))
    buf.clear()
    return False


# ---------------------------------------------------------------------------------------------------
# CLI: python -m backend.synthetic svit OUT --n N --seed S | llava665k OUT.json --n N


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.synthetic", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("svit", help="SVIT-like dataset with rendered images and labelled defects")
    a.add_argument("out", type=Path)
    a.add_argument("--n", type=int, default=3000)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--image-size", type=int, default=128)
    a.add_argument("--defect-rate", type=float, default=0.2)
    b = sub.add_parser("llava665k", help="LLaVA-665K-shaped JSON/JSONL file (no images)")
    b.add_argument("out", type=Path)
    b.add_argument("--n", type=int, default=665_000)
    b.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.cmd == "svit":
        out = make_svit_like(args.out, args.n, args.seed, args.image_size, args.defect_rate)
        print(f"wrote {args.n} samples to {out} in {time.perf_counter() - t0:.1f} s")
    else:
        summary = make_llava665k_like(args.out, args.n, args.seed)
        print(orjson.dumps(summary).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
