"""What an SVIT-like image shows: the scene vocabulary, the scene model, and drawing a random scene.

Colours are well apart in RGB so a 64 px CLIP can tell them apart; no object is black because the word is
drawn in near-black; background names share no word with object colours.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

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
# Fractional centres; the four corners stay free for the word. Dict order is reading order.
POSITIONS: dict[str, tuple[float, float]] = {
    "top": (0.5, 0.2),
    "left": (0.2, 0.5),
    "center": (0.5, 0.5),
    "right": (0.8, 0.5),
    "bottom": (0.5, 0.8),
}
# Radii (fractions of the side): two large shapes side by side plus jitter still do not touch.
# Dict order is size order, smallest first.
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


@dataclass(frozen=True)
class SceneObject:
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

    objects: tuple[SceneObject, ...]
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


def random_scene(rng: random.Random) -> Scene:
    """One to four objects, each with its own colour and position, a word in a corner, a background."""
    k = rng.choices((1, 2, 3, 4), weights=(0.15, 0.3, 0.3, 0.25))[0]
    colors = rng.sample(list(COLORS), k)
    positions = rng.sample(list(POSITIONS), k)
    objects = []
    for color, position in zip(colors, positions, strict=True):
        size = rng.choice(list(SIZES))
        px, py = POSITIONS[position]
        objects.append(
            SceneObject(
                shape=rng.choice(SHAPES),  # repeats allowed, so "how many circles" has real answers
                color=color,
                size=size,
                position=position,
                cx=round(px + rng.uniform(-0.015, 0.015), 3),
                cy=round(py + rng.uniform(-0.015, 0.015), 3),
                r=round(SIZES[size] * rng.uniform(0.95, 1.05), 3),
            )
        )
    reading_order = list(POSITIONS)  # top, left, center, right, bottom
    objects.sort(key=lambda o: reading_order.index(o.position))
    return Scene(tuple(objects), rng.choice(WORDS), rng.choice(CORNERS), rng.choice(list(BACKGROUNDS)))


def largest_indices(scene: Scene) -> list[int]:
    """Indices of the objects of the largest size class present (ties share it)."""
    rank = list(SIZES)
    top = max(rank.index(o.size) for o in scene.objects)
    return [i for i, o in enumerate(scene.objects) if rank.index(o.size) == top]
