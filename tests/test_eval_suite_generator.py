"""The held-out multiple-choice eval suite for the synthetic SVIT-like data (qspace.synthetic.eval_suite)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from backend.eval_specs import load_eval_suite
from qspace.synthetic import COLORS, SHAPES, WORDS, make_svit_like, random_scene
from qspace.synthetic.eval_suite import EVAL_ITEM_TYPES, eval_seed, eval_suite_items, make_eval_suite


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_suite(tmp_path: Path) -> None:
    a = make_eval_suite(tmp_path / "a", n=25, seed=3)
    b = make_eval_suite(tmp_path / "b", n=25, seed=3)
    c = make_eval_suite(tmp_path / "c", n=25, seed=4)
    assert tree_bytes(a.parent) == tree_bytes(b.parent)
    assert a.read_bytes() != c.read_bytes()
    assert len(tree_bytes(a.parent)) == 26  # 25 images + the JSONL


def test_loads_as_an_eval_suite_with_relative_images(tmp_path: Path) -> None:
    path = make_eval_suite(tmp_path / "suite", n=40, seed=0)
    suite = load_eval_suite(path)
    assert suite.metrics == ["accuracy"]
    assert suite.n_items("accuracy") == 40
    assert [it.id for it in suite.items] == [f"mc_{i:06d}" for i in range(40)]
    for line in path.read_text().splitlines():
        assert not Path(json.loads(line)["image"]).is_absolute()  # the suite folder can move
    for it in suite.items:
        assert it.image is not None and Path(it.image).parent == (tmp_path / "suite" / "images").resolve()
        assert it.options is not None and len(it.options) == 4 and it.answer is not None
    with Image.open(suite.items[0].image or "") as im:
        assert im.size == (128, 128) and im.mode == "RGB"  # as make_svit_like renders its images


def test_kinds_in_equal_shares_and_answers_spread(tmp_path: Path) -> None:
    _, items = eval_suite_items(n=500, seed=0)
    assert Counter(it["type"] for it in items) == {t: 100 for t in EVAL_ITEM_TYPES}
    slots = Counter(it["answer"] for it in items)
    assert set(slots) == {0, 1, 2, 3} and min(slots.values()) > 90  # the right option's place carries no signal


def test_types_restricts_the_kinds() -> None:
    _, items = eval_suite_items(n=10, seed=0, types=("colour", "count"))
    assert [it["type"] for it in items] == ["colour", "count"] * 5
    with pytest.raises(ValueError, match="types"):
        eval_suite_items(n=10, types=("color",))
    with pytest.raises(ValueError, match="n must be"):
        eval_suite_items(n=0)


def test_the_right_option_is_what_the_image_shows() -> None:
    scenes, items = eval_suite_items(n=200, seed=1)
    for scene, it in zip(scenes, items, strict=True):
        options, right = it["options"], it["options"][it["answer"]]
        assert len(set(options)) == 4
        kind = it["type"]
        if kind == "colour":
            said = [c for c in COLORS if f"It is {c}." == right]
            shape_asked = [o for o in scene.objects if it["question"].startswith(f"What color is the {o.shape} ")]
            assert said and any(o.color == said[0] for o in shape_asked)
            assert all(o.removeprefix("It is ").removesuffix(".") in COLORS for o in options)
        elif kind == "shape":
            obj = next(o for o in scene.objects if it["question"] == f"What shape is the {o.color} object?")
            assert right == f"It is a {obj.shape}."
            assert all(o.removeprefix("It is a ").removeprefix("It is an ").removesuffix(".") in SHAPES for o in options)
        elif kind == "count":
            n = len(scene.objects)
            assert (right == "There is one shape.") if n == 1 else right.startswith(
                ("There are two ", "There are three ", "There are four ")[n - 2]
            )
        elif kind == "position":
            obj = next(o for o in scene.objects if it["question"] == f"Where is the {o.color} {o.shape}?")
            expected = {"top": "at the top", "left": "on the left", "center": "in the center",
                        "right": "on the right", "bottom": "at the bottom"}[obj.position]
            assert right == f"The {obj.color} {obj.shape} is {expected}."
        else:
            assert right == f'It says "{scene.word}".'
            assert all(o.removeprefix('It says "').removesuffix('".') in WORDS for o in options)


def test_options_of_an_item_differ_only_in_the_answering_words() -> None:
    _, items = eval_suite_items(n=100, seed=2)
    for it in items:
        heads = {o.split()[0] for o in it["options"]}
        assert len(heads) == 1, it  # one wording per kind: no option wins on phrasing


def test_held_out_from_the_dataset_seeds(tmp_path: Path) -> None:
    """The suite's stream is its own: no integer seed of make_svit_like (demo datasets, the demo's training
    corpus at seed + 7,919,000) draws the same scenes."""
    scenes, _ = eval_suite_items(n=20, seed=0)
    assert isinstance(eval_seed(0), str)
    for dataset_seed in (0, 1, 7_919_000, 7_919_001):
        rng = random.Random(dataset_seed)
        assert [random_scene(rng) for _ in range(20)] != scenes
    ds = make_svit_like(tmp_path / "ds", n=20, seed=0, defect_rate=0.0)
    suite_dir = make_eval_suite(tmp_path / "suite", n=20, seed=0).parent
    dataset_images = {p.read_bytes() for p in (ds / "images").iterdir()}
    assert not dataset_images & {p.read_bytes() for p in (suite_dir / "images").iterdir()}
