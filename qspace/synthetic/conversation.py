"""Conversation turns: short questions about one object, the count, the colours or the word, with answers.

Each asker is an `Asker` (see phrasing): it reads the scene and draws from `rng` in an order that depends on
the scene's structure only.
"""

from __future__ import annotations

import random

from qspace.synthetic.phrasing import (
    POSITION_WORDS,
    Asker,
    QuestionAnswer,
    join_with_and,
    list_objects,
    number_word,
    object_fields,
    object_name,
    plural_shape,
)
from qspace.synthetic.scenes import Scene, SceneObject, largest_indices


def ask_colour(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    f = object_fields(obj, rng)
    q = rng.choice(
        (
            "What color is the {shape} {pos}?",
            "Which color does the {shape} {pos} have?",
            "Can you tell me the color of the {shape} {pos}?",
        )
    )
    a = rng.choice(("The {shape} {pos} is {color}.", "It is {color}.", "The {shape} is {color}."))
    return q.format(**f), a.format(**f)


def ask_count(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    q = rng.choice(
        ("How many shapes are in the image?", "How many objects can you see?", "Count the shapes in the picture.")
    )
    lst = list_objects(scene.objects)
    if scene.count == 1:
        a = rng.choice((f"There is only one shape: {lst}.", f"I can see a single shape, {lst}."))
    else:
        a = rng.choice(
            (
                f"There are {number_word(scene.count)} shapes in the image: {lst}.",
                f"I can see {number_word(scene.count)} shapes, namely {lst}.",
                f"The image contains {number_word(scene.count)} shapes: {lst}.",
            )
        )
    return q, a


def ask_word(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    q = rng.choice(
        (
            "What word is written in the image?",
            "Is there any text in the image? What does it say?",
            "What does the text in the picture say?",
        )
    )
    a = rng.choice(
        (
            f'The word "{scene.word}" is written in the {scene.corner} corner.',
            f'It says "{scene.word}".',
            f'The text reads "{scene.word}", in the {scene.corner} corner of the image.',
        )
    )
    return q, a


def ask_where(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    f = object_fields(obj, rng)
    q = rng.choice(
        (
            "Where is the {color} {shape}?",
            "Where can I find the {color} {shape}?",
            "In which part of the image is the {color} {shape}?",
        )
    )
    a = rng.choice(
        (
            "The {color} {shape} is {pos}.",
            "You can see the {color} {shape} {pos}.",
            "The {size} {color} {shape} is located {pos}.",
        )
    )
    return q.format(**f), a.format(**f)


def ask_shape(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    f = object_fields(obj, rng)
    q = rng.choice(
        (
            "What shape is the {color} object?",
            "Which shape is drawn in {color}?",
            "What kind of shape is the {color} one?",
        )
    )
    a = rng.choice(
        ("The {color} object is a {shape}.", "It is a {size} {shape}.", "The {color} one is a {shape} {pos}.")
    )
    return q.format(**f), a.format(**f)


def ask_exists(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    f = object_fields(obj, rng)
    q = rng.choice(
        (
            "Is there a {color} {shape} in the image?",
            "Do you see a {color} {shape}?",
            "Does the picture contain a {color} {shape}?",
        )
    )
    a = rng.choice(
        (
            "Yes, there is a {size} {color} {shape} {pos}.",
            "Yes, a {color} {shape} can be seen {pos}.",
            "Yes. The {color} {shape} is {pos}, and it is {size}.",
        )
    )
    return q.format(**f), a.format(**f)


def ask_shape_count(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    same = [x for x in scene.objects if x.shape == obj.shape]
    q = rng.choice(
        (f"How many {plural_shape(obj.shape)} are there?", f"How many {plural_shape(obj.shape)} can you count?")
    )
    if len(same) == 1:
        a = rng.choice(
            (
                f"There is one {obj.shape}, and it is {obj.color}.",
                f"Just one: a {obj.color} {obj.shape} {rng.choice(POSITION_WORDS[obj.position])}.",
            )
        )
    else:
        n, shapes = number_word(len(same)), plural_shape(obj.shape)
        a = rng.choice(
            (
                f"There are {n} {shapes}, colored {join_with_and([x.color for x in same])}.",
                f"I count {n} {shapes}: {join_with_and([f'a {x.color} one' for x in same])}.",
            )
        )
    return q, a


def ask_colours(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    q = rng.choice(
        ("What colors are the shapes?", "Which colors appear in the image?", "What colors can you see in the picture?")
    )
    cols = join_with_and([o.color for o in scene.objects])
    if len(scene.objects) == 1:
        only = scene.objects[0]
        a = f"There is only one shape, a {object_name(only)}, so the only color is {only.color}."
    else:
        a = rng.choice(
            (
                f"The shapes are {cols}.",
                f"I can see {cols} shapes.",
                f"The colors are {cols}: {list_objects(scene.objects)}.",
            )
        )
    return q, a


def ask_largest(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    q = rng.choice(("Which shape is the biggest?", "What is the largest object in the picture?"))
    big = largest_indices(scene)
    if len(scene.objects) == 1:
        o = scene.objects[0]
        a = f"There is only one shape, a {o.size} {object_name(o)}."
    elif len(big) == 1:
        o = scene.objects[big[0]]
        a = rng.choice(
            (
                f"The {object_name(o)} {rng.choice(POSITION_WORDS[o.position])} is the largest.",
                f"The biggest one is the {object_name(o)}.",
            )
        )
    elif len(big) == len(scene.objects):
        a = f"They are all about the same size: {list_objects(scene.objects)}."
    else:
        tied = join_with_and([object_name(scene.objects[k]) for k in big])
        a = f"The {tied} are the largest, about the same size."
    return q, a


CONVERSATION_QUESTIONS: tuple[Asker, ...] = (
    ask_colour,
    ask_count,
    ask_word,
    ask_where,
    ask_shape,
    ask_exists,
    ask_shape_count,
    ask_colours,
    ask_largest,
)
