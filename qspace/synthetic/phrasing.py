"""English helpers shared by the question generators (and the 665K streamer's templates).

Every question generator takes a scene, an RNG and two of the scene's objects, and returns (question,
answer). Their randomness must depend only on the scene's structure (how many objects, which shapes
repeat, sizes, positions), never on colour or shape names: wrong_fact answers rerun the same generators,
with the same seeds, on a false scene whose names are swapped, and must pick the same templates.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from qspace.synthetic.scenes import Scene, SceneObject

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
# "the ... of the image": the region a position names.
SIDE = {"top": "top", "left": "left side", "center": "center", "right": "right side", "bottom": "bottom"}

QuestionAnswer = tuple[str, str]
# ask(scene, rng, obj, other): `obj` is the object the turn is about, `other` a second, different one
# where the scene has two (the same object otherwise); most generators use one or neither.
Asker = Callable[[Scene, random.Random, SceneObject, SceneObject], QuestionAnswer]


def plural_shape(shape: str, n: int = 2) -> str:
    if n == 1:
        return shape
    return shape + ("es" if shape.endswith("s") else "s")


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def join_with_and(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def capitalise(text: str) -> str:
    """First letter upper case, the rest untouched (str.capitalize would also lower 'Rome' or 'CAT')."""
    return text[:1].upper() + text[1:]


def fix_articles(text: str) -> str:
    """'a' before a vowel becomes 'an': templates write 'a {color}' and the colour may be 'orange'."""
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)


def object_name(o: SceneObject) -> str:
    return f"{o.color} {o.shape}"


def object_fields(o: SceneObject, rng: random.Random) -> dict[str, str]:
    """Template fields of one object; draws the same RNG calls for every object."""
    return {
        "color": o.color,
        "shape": o.shape,
        "shapes": plural_shape(o.shape),
        "size": rng.choice(SIZE_WORDS[o.size]),
        "pos": rng.choice(POSITION_WORDS[o.position]),
        "box": "[" + ", ".join(f"{v:.2f}" for v in o.bbox()) + "]",
    }


def list_objects(objects: Sequence[SceneObject], with_position: bool = False, rng: random.Random | None = None) -> str:
    """'a red circle, a blue star and ...', optionally with where each one is (one RNG draw per object)."""
    if with_position and rng is not None:
        return join_with_and([f"a {object_name(o)} {rng.choice(POSITION_WORDS[o.position])}" for o in objects])
    return join_with_and([f"a {object_name(o)}" for o in objects])
