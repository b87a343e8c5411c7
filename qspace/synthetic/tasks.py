"""The paper's four task types: the prompt SVIT's authors gave GPT-4 for each, and how a sample's turns are
chosen and written."""

from __future__ import annotations

import random

from qspace.synthetic.conversation import CONVERSATION_QUESTIONS
from qspace.synthetic.detail import DETAIL_PROMPTS, describe_in_detail
from qspace.synthetic.phrasing import Asker, QuestionAnswer, fix_articles
from qspace.synthetic.reasoning import REASONING_QUESTIONS, reason_comparison
from qspace.synthetic.referring import REFERRING_QUESTIONS, REFERRING_WEIGHTS
from qspace.synthetic.scenes import Scene, SceneObject

TASK_TYPES = ("conversation", "complex_reasoning", "detail_description", "referring_qa")

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


def plan_turns(task: str, scene: Scene, rng: random.Random) -> list[tuple[Asker, SceneObject, SceneObject]]:
    """Which asker each turn uses and which objects it is about; depends on the scene's structure only."""
    k = len(scene.objects)

    def pick() -> tuple[SceneObject, SceneObject]:
        i = rng.randrange(k)
        j = rng.choice([x for x in range(k) if x != i]) if k > 1 else i
        return scene.objects[i], scene.objects[j]

    if task == "conversation":
        askers = rng.sample(CONVERSATION_QUESTIONS, rng.choice((2, 2, 3)))
    elif task == "complex_reasoning":
        pool = [g for g in REASONING_QUESTIONS if k > 1 or g is not reason_comparison]  # comparing needs two
        askers = rng.sample(pool, rng.choice((2, 3, 3, 4)))
    else:
        askers = rng.choices(REFERRING_QUESTIONS, weights=REFERRING_WEIGHTS)  # one turn
    return [(ask, *pick()) for ask in askers]


def task_turns(task: str, scene: Scene, seed: int) -> list[QuestionAnswer]:
    """(question, answer) turns for a task type, fully determined by (scene structure, seed)."""
    if task == "detail_description":
        rng = random.Random(seed)
        pairs = [(rng.choice(DETAIL_PROMPTS), describe_in_detail(scene, random.Random(seed + 1)))]
    else:
        plan = plan_turns(task, scene, random.Random(seed))
        # A fresh RNG per turn: a branch that depends on names cannot shift later turns.
        pairs = [ask(scene, random.Random(seed * 8 + t + 1), obj, other) for t, (ask, obj, other) in enumerate(plan)]
    return [(fix_articles(q), fix_articles(a)) for q, a in pairs]
