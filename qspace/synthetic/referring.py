"""Referring turns: one short question that singles out an object (by position, attributes or bounding box)
and a short, exact answer. Each asker is an `Asker` (see phrasing).
"""

from __future__ import annotations

import random

from qspace.synthetic.phrasing import Asker, QuestionAnswer, capitalise, object_fields
from qspace.synthetic.scenes import Scene, SceneObject


def refer_colour(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    f = object_fields(obj, rng)
    q = rng.choice(("What color is the {shape} {pos}?", "What is the color of the {size} {shape} {pos}?"))
    return q.format(**f), rng.choice(("It is {color}.", "The {shape} is {color}.", "{Color}.")).format(
        Color=capitalise(f["color"]), **f
    )


def refer_shape(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    f = object_fields(obj, rng)
    q = rng.choice(("What shape is the {color} object?", "What is the {color} object {pos}?"))
    return q.format(**f), rng.choice(("It is a {shape}.", "A {color} {shape}.", "It is a {size} {shape}.")).format(**f)


def refer_where(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    f = object_fields(obj, rng)
    q = rng.choice(("Where is the {color} {shape}?", "Where is the {color} object located?"))
    return q.format(**f), rng.choice(("The {color} {shape} is {pos}.", "The {shape} is {pos}.")).format(**f)


def refer_box(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    f = object_fields(obj, rng)
    q = rng.choice(
        (
            "What is the object in the region {box}?",
            "Briefly describe the object at {box}.",
            "What can be seen in the region {box}?",
        )
    )
    return q.format(**f), rng.choice(("It is a {color} {shape}.", "A {size} {color} {shape}.")).format(**f)


def refer_text(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    q = rng.choice(
        (f"What does the text in the {scene.corner} corner say?", f"What word is written in the {scene.corner} corner?")
    )
    return q, rng.choice((f'It says "{scene.word}".', f'The word is "{scene.word}".'))


def refer_size(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    f = object_fields(obj, rng)
    q = rng.choice(("How big is the {color} {shape}?", "Is the {shape} {pos} large or small?"))
    return q.format(**f), rng.choice(("The {color} {shape} is {size}.", "It is a {size} {color} {shape}.")).format(**f)


REFERRING_QUESTIONS: tuple[Asker, ...] = (refer_colour, refer_shape, refer_where, refer_box, refer_text, refer_size)
REFERRING_WEIGHTS = (3, 2, 2, 2, 1, 1)
