"""The demo's tiny models, trained offline on this machine: a CLIP (open_clip) and a LLaVA (transformers).

``ensure_demo_models(models_root, corpus_dir, seed)`` returns ``models_root/demo-v{CODE_VERSION}-seed{S}-{recipe
hash}/{clip,llava}``, training them first when that folder does not exist yet (a second call returns at once;
``cached_models(models_root, seed)`` looks without training, so a caller writes the corpus only when needed).
Both are saved in the formats the ``clip`` and ``mllm_loss`` scorers load (the layouts of
:mod:`workers.tiny_models`), so the demo scores through the same code as ``ViT-L-14-336`` and
``llava-hf/llava-1.5-7b-hf``.

Both train on a corpus directory that the caller writes: a dataset folder in the layout ``qspace ingest`` reads,
one LLaVA-format JSON list per task type (``{task type}.json``, image paths relative to the folder) and
``task_type_prompts.json``, whose keys name the task types in corpus order. The demo (``qspace.demo.models``) writes
it with its synthetic generator: the same generator as the scored dataset, another seed, no defects, so neither
model ever sees a sample it scores and nothing about the demo's defects can be memorised (training on the scored
samples let a CLIP memorise its swapped pairs; DESIGN.md, "Demo feasibility"). This module knows nothing of the
generator: the cache assumes that a seed always comes with the same corpus.

- CLIP: 64 px images, patch 8, open_clip's own tokenizer; CLIP's contrastive (InfoNCE) loss on the text the
  ``clip`` scorer reads (all answers; sometimes one answer alone, so short texts align too). Only the
  token-embedding rows the corpus uses are trained (a few hundred of 49,408).
- LLaVA: the CLIP's image tower converted to transformers' ``CLIPVisionModel``, frozen, penultimate-layer patch
  features (as LLaVA-1.5); a two-layer MLP projector; a small Llama; a byte-level BPE trained on the corpus. It
  learns the answer tokens (and the ``</s>`` ending each answer) of clean conversations in LLaVA-1.5's format,
  encoded by the ``mllm_loss`` scorer's own :class:`ConversationEncoder`, so training and scoring see the same
  tokens. All short-answer samples (conversation, referring QA: few tokens, each tied to the image) and half of
  the long ones (detail description, complex reasoning) are used: grounding per CPU second is what limits it.

The pieces live in :mod:`workers.demo_models` (recipe, corpus, clip, llava); this module trains both models and
keeps them in the cache. Deterministic for a seed and a corpus (epochs, not time budgets), on 2 torch threads:
about 2.5 minutes on 2 cores. ``python -m workers.demo_train CORPUS OUT [--seed S] [--set FIELD=VALUE]`` trains
outside the demo; ``python -m qspace.demo.evaluate`` also writes the corpus and measures the models.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

import torch  # noqa: E402

from workers.demo_models.clip import clip_steps, train_clip  # noqa: E402
from workers.demo_models.corpus import load_corpus, split_corpus  # noqa: E402
from workers.demo_models.llava import llava_steps, train_llava  # noqa: E402
from workers.demo_models.recipe import (  # noqa: E402
    CODE_VERSION,
    THREADS,
    Log,
    Progress,
    Recipe,
    parse_overrides,
    quiet,
    torch_threads,
)


@dataclass(frozen=True)
class DemoModels:
    root: Path
    clip: Path
    llava: Path
    manifest: dict[str, Any]


def cache_dir(models_root: Path, seed: int, recipe: Recipe | None = None) -> Path:
    """Where the models of (seed, recipe, code version) live."""
    return Path(models_root) / f"demo-v{CODE_VERSION}-seed{seed}-{(recipe or Recipe()).digest()}"


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not (folder / "clip").is_dir() or not (folder / "llava").is_dir():
        return None
    return data


def cached_models(models_root: Path, seed: int = 0, recipe: Recipe | None = None) -> DemoModels | None:
    """The trained models of (seed, recipe) if the cache holds them, else None (nothing is trained)."""
    folder = cache_dir(models_root, seed, recipe)
    manifest = _read_manifest(folder)
    if manifest is None:
        return None
    return DemoModels(folder, folder / "clip", folder / "llava", manifest)


def ensure_demo_models(
    models_root: Path,
    corpus_dir: Path,
    seed: int = 0,
    recipe: Recipe | None = None,
    log: Log | None = None,
    progress: Progress | None = None,
) -> DemoModels:
    """The demo's CLIP and LLaVA for (seed, recipe): from the cache, or trained now on the corpus in `corpus_dir`
    (about 2.5 minutes on 2 cores). `progress` hears (steps done, steps in all) after each optimizer step; an
    exception it raises stops the training (nothing is cached).

    Training writes into a temporary sibling folder that is renamed into place when complete, so an
    interrupted run leaves no half-written cache entry.
    """
    recipe = recipe or Recipe()
    found = cached_models(models_root, seed, recipe)
    if found is not None:
        return found
    say = log or _print
    folder = cache_dir(models_root, seed, recipe)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = train_demo_models(corpus_dir, tmp, seed, recipe, say, progress)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            os.replace(tmp, folder)
        except OSError:  # a concurrent run finished first: its models are the same
            if _read_manifest(folder) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found = cached_models(models_root, seed, recipe)
    assert found is not None
    return found


def train_demo_models(
    corpus_dir: Path, out: Path, seed: int, recipe: Recipe, log: Log, progress: Progress | None = None
) -> dict[str, Any]:
    """Train both models on the corpus in `corpus_dir` into ``out/clip`` and ``out/llava``; returns the manifest
    (recipe, timings, losses). `progress` hears (steps done, steps in all) after each optimizer step."""
    t_start = time.perf_counter()
    with torch_threads(THREADS), quiet():
        corpus = load_corpus(corpus_dir)
        clip_part, llava_part = split_corpus(corpus, seed, recipe)
        steps = _StepCounter(clip_steps(len(clip_part), recipe) + llava_steps(len(llava_part), recipe), progress)
        steps.report()
        t0 = time.perf_counter()
        log(f"demo models: training the CLIP on {len(clip_part):,} image-text pairs")
        clip_stats = train_clip(clip_part, out / "clip", seed, recipe, log, steps.step)
        t_clip = time.perf_counter() - t0
        t0 = time.perf_counter()
        log(f"demo models: training the LLaVA on {len(llava_part):,} conversations (image tower frozen)")
        llava_stats = train_llava(llava_part, out / "clip", out / "llava", seed, recipe, log, steps.step)
        t_llava = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    log(f"demo models: trained in {total:.0f} s (CLIP {t_clip:.0f} s, LLaVA {t_llava:.0f} s)")
    return {
        "code_version": CODE_VERSION,
        "seed": seed,
        "recipe": recipe.to_json(),
        "clip": clip_stats,
        "llava": llava_stats,
        "seconds": {"total": round(total, 1), "clip": round(t_clip, 1), "llava": round(t_llava, 1)},
        "torch": torch.__version__,
    }


class _StepCounter:
    """Counts the optimizer steps of both models and tells `progress` after each."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = total
        self.done = 0
        self.progress = progress

    def step(self) -> None:
        self.done += 1
        self.report()

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total)


def _print(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.demo_train", description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path, help="the training corpus directory (see the module's doc)")
    ap.add_argument("out", type=Path, help="models root (the cache folder is made under it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a recipe field")
    args = ap.parse_args(argv)
    models = ensure_demo_models(args.out, args.corpus, args.seed, replace(Recipe(), **parse_overrides(args.set)))
    print(json.dumps(models.manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
