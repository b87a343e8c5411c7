"""Synthetic data for the demo, the tests and the benchmarks: an SVIT-like dataset with rendered images, and
a LLaVA-665K-shaped file.

`make_svit_like` writes a small dataset: real images (coloured shapes and a word), the paper's four task types
as one JSON file each (as SVIT ships them), and labelled defects. `make_llava665k_like` streams a ~1 GB
LLaVA-665K-shaped JSON (or JSONL) file for the ingest benchmark. Pillow and orjson only: no torch.

Modules, in the order data flows: scenes (vocabulary, scene model, sampling) -> rendering (images);
phrasing (English helpers) -> conversation, reasoning, referring, detail (one per task type) -> tasks (task
prompts, turn planning) -> defects -> svit (the dataset writer). words (pools, pure data) -> pools (pre-built
text) -> llava665k (the 665K streamer). cli: `python -m qspace.synthetic`.

Both generators are deterministic for a seed, byte for byte: keep every random draw in its order.
"""

from qspace.synthetic.cli import main
from qspace.synthetic.defects import CLEAN, DEFECTS, FILLER
from qspace.synthetic.detail import DETAIL_PROMPTS
from qspace.synthetic.eval_suite import make_eval_suite
from qspace.synthetic.llava665k import MIX665K, make_llava665k_like
from qspace.synthetic.rendering import render_scene
from qspace.synthetic.scenes import (
    BACKGROUNDS,
    COLORS,
    CORNERS,
    POSITIONS,
    SHAPES,
    SIZES,
    WORDS,
    Scene,
    SceneObject,
    random_scene,
)
from qspace.synthetic.svit import make_svit_like, svit_task_files
from qspace.synthetic.tasks import TASK_TYPE_PROMPTS, TASK_TYPES
from qspace.synthetic.words import PROMPT_BOX, PROMPT_CAPTION, PROMPT_MC, PROMPT_REGION, PROMPT_SHORT

__all__ = [
    "BACKGROUNDS",
    "CLEAN",
    "COLORS",
    "CORNERS",
    "DEFECTS",
    "DETAIL_PROMPTS",
    "FILLER",
    "MIX665K",
    "POSITIONS",
    "PROMPT_BOX",
    "PROMPT_CAPTION",
    "PROMPT_MC",
    "PROMPT_REGION",
    "PROMPT_SHORT",
    "SHAPES",
    "SIZES",
    "TASK_TYPES",
    "TASK_TYPE_PROMPTS",
    "WORDS",
    "Scene",
    "SceneObject",
    "main",
    "make_eval_suite",
    "make_llava665k_like",
    "make_svit_like",
    "random_scene",
    "render_scene",
    "svit_task_files",
]
