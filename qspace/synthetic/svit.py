"""The SVIT-like dataset writer: rendered images, one LLaVA-format JSON file per task type, labelled defects."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from qspace.synthetic.defects import CLEAN, DEFECTS, pick_donor_image, turns_with_defect
from qspace.synthetic.rendering import render_scene
from qspace.synthetic.scenes import Scene, random_scene
from qspace.synthetic.tasks import TASK_TYPE_PROMPTS, TASK_TYPES


@dataclass
class Sample:
    """One record to write: its task type, what its image shows, its defect, and which image it points at."""

    index: int
    task: str
    scene: Scene
    defect: str = CLEAN
    image_index: int = -1  # its own image, or a donor's for swapped_image


def image_name(i: int) -> str:
    return f"images/{i:06d}.jpg"


def llava_record(sample: Sample, seed: int) -> dict[str, Any]:
    """The sample as a LLaVA record (id, image, conversations), plus its defect label."""
    pairs = turns_with_defect(sample.task, sample.defect, sample.scene, seed)
    conv = []
    for t, (q, a) in enumerate(pairs):
        conv.append({"from": "human", "value": ("<image>\n" + q) if t == 0 else q})
        conv.append({"from": "gpt", "value": a})
    rec: dict[str, Any] = {
        "id": f"svit_{sample.index:06d}",
        "image": image_name(sample.image_index),
        "conversations": conv,
        "defect": sample.defect,
    }
    if sample.defect == "swapped_image":
        rec["original_image"] = image_name(sample.index)
    return rec


def svit_task_files(out_dir: Path) -> list[Path]:
    """The four per-task-type JSON files `make_svit_like` writes (the other JSON files are not records)."""
    return [Path(out_dir) / f"{t}.json" for t in TASK_TYPES]


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
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(n)]
    # Exact counts: task types in equal shares, defects spread evenly over types and kinds.
    tasks = [TASK_TYPES[k % len(TASK_TYPES)] for k in range(n)]
    rng.shuffle(tasks)
    samples = [Sample(i, tasks[i], scenes[i], image_index=i) for i in range(n)]
    n_bad = round(defect_rate * n)
    by_task = {t: [s for s in samples if s.task == t] for t in TASK_TYPES}
    for lst in by_task.values():
        rng.shuffle(lst)
    bad: list[Sample] = []
    for k in range(n):  # round-robin over types so each gets its share
        lst = by_task[TASK_TYPES[k % len(TASK_TYPES)]]
        if len(bad) == n_bad:
            break
        if lst:
            bad.append(lst.pop())
    kinds = [DEFECTS[k % len(DEFECTS)] for k in range(len(bad))]
    rng.shuffle(kinds)
    for smp, kind in zip(bad, kinds, strict=True):
        smp.defect = kind
        if kind == "swapped_image":
            smp.image_index = pick_donor_image(smp.index, scenes, rng)

    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(scenes):  # ~1 ms per image: one process is enough
        render_scene(scene, image_size).save(img_dir / f"{i:06d}.jpg", "JPEG", quality=90)

    files: dict[str, list[dict[str, Any]]] = {t: [] for t in TASK_TYPES}
    for smp in samples:
        # Its own seed per sample: a sample's text does not depend on any other sample's.
        files[smp.task].append(llava_record(smp, seed * 1_000_003 + smp.index * 16))
    for t, recs in files.items():
        (out_dir / f"{t}.json").write_bytes(orjson.dumps(recs, option=orjson.OPT_INDENT_2))
    (out_dir / "task_type_prompts.json").write_bytes(orjson.dumps(TASK_TYPE_PROMPTS, option=orjson.OPT_INDENT_2))
    (out_dir / "scenes.json").write_bytes(orjson.dumps({image_name(i): s.to_json() for i, s in enumerate(scenes)}))
    return out_dir
