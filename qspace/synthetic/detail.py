"""Detail-description turns: one of LLaVA's describe-the-image prompts, answered by one paragraph."""

from __future__ import annotations

import random
from collections import Counter

from qspace.synthetic.phrasing import (
    SIDE,
    capitalise,
    join_with_and,
    number_word,
    object_fields,
    object_name,
    plural_shape,
)
from qspace.synthetic.scenes import POSITIONS, Scene

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


def describe_in_detail(scene: Scene, rng: random.Random) -> str:
    """One paragraph naming every object's colour, shape, size and position, the count and the word."""
    n = scene.count
    objs = list(scene.objects)
    bg = scene.background
    shapes_word = "shape" if n == 1 else "shapes"
    count = number_word(n)
    intro = rng.choice(
        (
            f"The image shows {count} simple {shapes_word} drawn on a plain {bg} background.",
            f"This is a clean, minimal illustration with a {bg} background and {count} colorful {shapes_word}.",
            f"In this picture, {count} flat geometric {shapes_word} {'is' if n == 1 else 'are'} arranged on a "
            f"{bg} background.",
        )
    )
    if rng.random() < 0.3:  # not always in reading order, as a person would not always describe it so
        rng.shuffle(objs)
    sents = []
    for k, o in enumerate(objs):
        f = object_fields(o, rng)
        f["Pos"] = capitalise(f["pos"])
        t = rng.choice(
            (
                "{Pos}, there is a {size} {color} {shape}.",
                "A {size} {color} {shape} sits {pos}.",
                "{Pos} you can see a {color} {shape}, which is {size}.",
                "The {color} {shape} {pos} is {size} and filled with solid {color}.",
            )
        )
        if k > 0 and rng.random() < 0.4:  # a connective now and then, so sentences do not read as a list
            rest = t.replace("{Pos}", "{pos}", 1) if t.startswith("{Pos}") else t[0].lower() + t[1:]
            t = rng.choice(("In addition, ", "Besides that, ", "Also, ")) + rest
        sents.append(t.format(**f))
    groups = Counter(o.shape for o in scene.objects)
    for shape, repeats in groups.items():
        if repeats > 1:
            times, shapes = number_word(repeats), plural_shape(shape)
            sents.append(
                rng.choice(
                    (
                        f"Note that {times} of the shapes are {shapes}, told apart only by their colors.",
                        f"There are {times} {shapes} in total, each in a different color.",
                        f"The {shapes} appear {'twice' if repeats == 2 else f'{times} times'}.",
                    )
                )
            )
    by = {o.position: o for o in scene.objects}
    if "left" in by and "right" in by:
        sents.append(
            f"The {object_name(by['left'])} and the {object_name(by['right'])} mirror each other on opposite sides."
        )
    if "top" in by and "bottom" in by:
        sents.append(f"The {object_name(by['top'])} sits directly above the {object_name(by['bottom'])}.")
    if "center" in by and len(scene.objects) > 1:
        sents.append(f"The {object_name(by['center'])} in the middle is surrounded by the other shapes.")
    empty = join_with_and([f"the {SIDE[p]}" for p in POSITIONS if p not in by])
    sents.append(
        rng.choice(
            (
                f"{capitalise(empty)} of the image {'is' if ' and ' not in empty else 'are'} left empty.",
                f"Nothing is drawn at {empty}, which leaves plenty of open space.",
            )
        )
    )
    text = rng.choice(
        (
            f'In the {scene.corner} corner, the word "{scene.word}" is printed in dark capital letters.',
            f'The word "{scene.word}" is written in black letters in the {scene.corner} corner of the image.',
            f'A short word, "{scene.word}", appears in the {scene.corner} corner.',
        )
    )
    cols = join_with_and([o.color for o in scene.objects])
    if len(scene.objects) == 1:
        close = (
            f"The {object_name(scene.objects[0])} is the only object, so it is clearly the focus of the picture; "
            "there are no other shapes, no shadows and no overlapping elements."
        )
    else:
        close = rng.choice(
            (
                f"Altogether the picture contains {count} shapes in {number_word(len(scene.objects))} "
                f"different colors: {cols}. None of them overlap.",
                f"The shapes do not overlap, and each has its own color ({cols}), which makes the composition "
                "clean and easy to read.",
                f"The scene looks like a page from a children's book about shapes and colors, with {cols} shapes "
                "spread across the picture.",
            )
        )
    return " ".join([intro, *sents, text, close])
