"""Complex-reasoning turns: what-if, arrangement, contrast, grouping and comparison questions, answered step by
step from what the image shows. Each asker is an `Asker` (see phrasing).
"""

from __future__ import annotations

import random
from collections import Counter

from qspace.synthetic.phrasing import (
    POSITION_WORDS,
    SIDE,
    Asker,
    QuestionAnswer,
    capitalise,
    join_with_and,
    list_objects,
    number_word,
    object_fields,
    object_name,
    plural_shape,
)
from qspace.synthetic.scenes import SIZES, WORD_KIND, Scene, SceneObject, largest_indices

# Gray is neither: it lands in the "neutral" group.
WARM = {"red", "orange", "yellow", "pink", "brown"}
COOL = {"green", "blue", "purple", "teal"}


def reason_removal(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    q = rng.choice(
        (
            f"If the {object_name(obj)} were removed, what would be left in the image?",
            f"Imagine the {object_name(obj)} disappeared. How many shapes would remain, and which ones?",
            f"What would the picture look like without the {object_name(obj)}?",
        )
    )
    rest = [x for x in scene.objects if x is not obj]
    listed = list_objects(scene.objects, True, rng)
    head = f"The image currently has {number_word(scene.count)} shape{'s' if scene.count != 1 else ''}: {listed}. "
    if rest:
        n = max(scene.count - 1, 0)
        remaining = f"{number_word(n)} shape{'s' if n != 1 else ''} would remain: {list_objects(rest)}. "
        a = (
            head
            + f"Without the {object_name(obj)}, {remaining}"
            + rng.choice(
                (
                    f'The word "{scene.word}" in the {scene.corner} corner would stay where it is.',
                    f"The {SIDE[obj.position]} of the image would then be empty, so the picture would look lopsided.",
                )
            )
        )
    else:
        a = head + (
            f'Removing it would leave only the word "{scene.word}" on the {scene.background} background, '
            "with no shapes at all, so the picture would look almost empty."
        )
    return q, a


def reason_arrangement(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    q = rng.choice(
        (
            "How are the shapes arranged in the image?",
            "Describe the spatial relationship between the objects.",
            "Can you explain how the objects are positioned relative to each other?",
        )
    )
    if len(scene.objects) == 1:
        o = scene.objects[0]
        return q, (
            f"There is only one shape, a {o.size} {object_name(o)}, placed {rng.choice(POSITION_WORDS[o.position])}. "
            f'With nothing else around it, it is the focus of the image, while the word "{scene.word}" sits '
            f"in the {scene.corner} corner."
        )
    parts = [f"the {object_name(o)} is {rng.choice(POSITION_WORDS[o.position])}" for o in scene.objects]
    by = {o.position: o for o in scene.objects}
    rel = []
    if "left" in by and "right" in by:
        rel.append(
            f"The {object_name(by['left'])} and the {object_name(by['right'])} face each other across the image."
        )
    if "top" in by and "bottom" in by:
        rel.append(f"The {object_name(by['top'])} is directly above the {object_name(by['bottom'])}.")
    if "center" in by:
        rel.append(f"The {object_name(by['center'])} sits in the middle, so the other shapes are arranged around it.")
    if not rel:
        rel.append("None of the shapes overlap, and they are spread out so each one is easy to see.")
    return q, capitalise("; ".join(parts)) + ". " + " ".join(rel)


def reason_standout(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    q = rng.choice(
        ("Which object stands out the most, and why?", "What is the most eye-catching element of the image? Explain.")
    )
    big = largest_indices(scene)
    o = scene.objects[big[0]]
    a = (
        f"The {object_name(o)} {rng.choice(POSITION_WORDS[o.position])} stands out the most. "
        f"It is {'the largest shape' if len(big) == 1 else 'one of the largest shapes'} in the image, and its "
        f"{o.color} color contrasts with the {scene.background} background."
    )
    rest = [x for x in scene.objects if x is not o]
    if rest:
        a += f" The other shapes, {list_objects(rest)}, draw less attention."
    return q, a


def reason_warm_cool(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    q = rng.choice(
        (
            "Which shapes use warm colors and which use cool colors?",
            "Can you group the shapes into warm and cool colors?",
        )
    )
    warm = [o for o in scene.objects if o.color in WARM]
    cool = [o for o in scene.objects if o.color in COOL]
    neutral = [o for o in scene.objects if o.color not in WARM | COOL]
    out = []
    if warm:
        verb = "uses a warm color" if len(warm) == 1 else "use warm colors"
        out.append(f"The {join_with_and([object_name(o) for o in warm])} {verb}.")
    else:
        out.append("None of the shapes uses a warm color.")
    if cool:
        verb = "has a cool color" if len(cool) == 1 else "have cool colors"
        out.append(f"The {join_with_and([object_name(o) for o in cool])} {verb}.")
    else:
        out.append("None of the shapes has a cool color.")
    if neutral:
        out.append(f"The {join_with_and([object_name(o) for o in neutral])} is neutral, neither warm nor cool.")
    return q, " ".join(out) + rng.choice(("", " Warm colors tend to feel closer to the viewer than cool ones."))


WORD_KIND_REASONS = {
    "animal": "is the name of an animal, so the picture might be a flash card for learning words",
    "nature": "refers to something in nature, so it might be a label in a children's picture book",
    "object": "names an everyday object, so it could be a caption in a simple vocabulary exercise",
    "vehicle": "is a kind of vehicle, so it may be a label from a transport-themed worksheet",
    "sign": "is a word often printed on signs, so the image might be a simple sign or a button label",
}


def reason_word(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    q = rng.choice(
        (
            "What might the word in the image mean in this context?",
            "Why do you think there is text in the image, and what does it say?",
            "How does the text relate to the shapes?",
        )
    )
    a = (
        f'The image contains the word "{scene.word}", written in dark letters in the {scene.corner} corner. '
        f'"{scene.word}" {WORD_KIND_REASONS[WORD_KIND[scene.word]]}. '
        f"The shapes, {list_objects(scene.objects)}, do not depict it, "
        "so the word is most likely a label rather than a description of the shapes."
    )
    return q, a


def reason_same_shape(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    q = rng.choice(("Do any of the shapes have the same form?", "Are there repeated shapes in the image?"))
    groups = Counter(o.shape for o in scene.objects)
    rep = [sh for sh, k in groups.items() if k > 1]
    if not rep:
        return q, (
            f"No, every shape is different: {list_objects(scene.objects)}. Each one also has its own color, "
            "so no two objects look alike."
        )
    out = []
    for sh in rep:
        same = [o for o in scene.objects if o.shape == sh]
        out.append(
            f"There are {number_word(len(same))} {plural_shape(sh)}: "
            + join_with_and([f"a {o.color} one {rng.choice(POSITION_WORDS[o.position])}" for o in same])
            + "."
        )
    single = [o for o in scene.objects if groups[o.shape] == 1]
    if single:
        verb = "appears" if len(single) == 1 else "each appear"
        out.append(f"The {join_with_and([object_name(o) for o in single])} {verb} only once.")
    return q, "Yes. " + " ".join(out) + " Even the repeated shapes differ in color."


def reason_comparison(scene: Scene, rng: random.Random, obj: SceneObject, other: SceneObject) -> QuestionAnswer:
    q = rng.choice(
        (
            f"Compare the {object_name(obj)} and the {object_name(other)}.",
            f"What are the differences between the {object_name(obj)} and the {object_name(other)}?",
        )
    )
    fa, fb = object_fields(obj, rng), object_fields(other, rng)
    out = (
        f"The {object_name(obj)} is {fa['size']} and placed {fa['pos']}, "
        f"while the {object_name(other)} is {fb['size']} and placed {fb['pos']}. "
    )
    out += (
        "They have the same shape but different colors. "
        if obj.shape == other.shape
        else "They differ in shape as well as in color. "
    )
    rank = list(SIZES)
    da, db = rank.index(obj.size), rank.index(other.size)
    if da == db:
        out += "In size they are about equal."
    else:
        bigger = obj if da > db else other
        out += f"The {object_name(bigger)} is the bigger of the two."
    return q, out


REASONING_QUESTIONS: tuple[Asker, ...] = (
    reason_removal,
    reason_arrangement,
    reason_standout,
    reason_warm_cool,
    reason_word,
    reason_same_shape,
    reason_comparison,
)
