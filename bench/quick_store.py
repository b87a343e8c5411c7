"""A PostgreSQL store of N LLaVA-shaped samples and finished synthetic runs, written with COPY in minutes: for
measuring the API and the UI at 10M without the hour that generating, ingesting and scoring 10M samples takes
(`bench/scale.py --quick`). The rows have the shape ingest writes; the values are synthetic."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np

TASK_TYPES = ("conversation", "complex_reasoning", "detail_description", "referring_qa", "ocr", "text_only")
SOURCES = ("coco", "gqa", "ocr_vqa", "textvqa", "vg")
BLOCK = 200_000


def write_dataset(engine: Any, name: str, n: int, seed: int = 0) -> int:
    """A dataset of `n` samples (ids, positions, images, two-turn conversations, task types, metadata)."""
    rng = np.random.default_rng(seed)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(
            "INSERT INTO datasets (name, image_root, sources, task_type_prompts, n_samples, created_at)"
            " VALUES (%s, '/tmp', '[]', '{}', %s, now()) RETURNING id",
            (name, n),
        )
        ds = int(cur.fetchone()[0])
        counts = np.zeros(len(TASK_TYPES), dtype=np.int64)
        columns = "dataset_id, position, external_id, image, conversations, task_type, n_turns, question_chars,"
        columns += " answer_chars, metadata"
        with cur.copy(f"COPY samples ({columns}) FROM STDIN") as copy:
            for start in range(0, n, BLOCK):
                stop = min(n, start + BLOCK)
                tasks = rng.integers(0, len(TASK_TYPES), stop - start)
                counts += np.bincount(tasks, minlength=len(TASK_TYPES))
                sources = rng.integers(0, len(SOURCES), stop - start)
                words = rng.integers(3, 60, stop - start)
                out = io.StringIO()
                for k, t, s, w in zip(
                    range(start, stop), tasks.tolist(), sources.tolist(), words.tolist(), strict=True
                ):
                    question = f"<image> What is in picture {k}?"
                    answer = " ".join(["word"] * w)
                    conv = f'[{{"from": "human", "value": "{question}"}}, {{"from": "gpt", "value": "{answer}"}}]'
                    out.write(
                        f'{ds}\t{k}\t{k:012d}\t"{SOURCES[s]}/{k:012d}.jpg"\t{conv}\t{TASK_TYPES[t]}\t1\t'
                        f'{len(question)}\t{len(answer)}\t{{"source": "{SOURCES[s]}"}}\n'
                    )
                copy.write(out.getvalue())
        kept = dict(zip(TASK_TYPES, counts.tolist(), strict=True))
        cur.execute("UPDATE datasets SET task_type_counts = %s WHERE id = %s", (json.dumps(kept), ds))  # as ingest
        cur.execute("ANALYZE samples")  # as ingest does: the planner must know the table is big
        raw.commit()
    finally:
        raw.close()
    return ds


def write_run(engine: Any, ds: int, kind: str, metrics: Callable[[np.random.Generator, int], dict[str, Any]]) -> int:
    """A finished run of `kind` with a score row per sample; `metrics` makes a block's values, per metric name."""
    rng = np.random.default_rng(len(kind))
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SELECT count(*) FROM samples WHERE dataset_id = %s", (ds,))
        n = int(cur.fetchone()[0])
        cur.execute(
            "INSERT INTO runs (dataset_id, kind, params, scorer_key, status, total, done, errors,"
            " created_at, updated_at, finished_at) VALUES (%s, %s, '{}', %s, 'done',"
            " %s, %s, 0, now(), now(), now()) RETURNING id",
            (ds, kind, f"synthetic-{kind}", n, n),
        )
        run = int(cur.fetchone()[0])
        cur.execute("SELECT min(id) FROM samples WHERE dataset_id = %s", (ds,))
        first = int(cur.fetchone()[0])  # COPY gave the dataset's samples consecutive ids
        with cur.copy("COPY scores (run_id, sample_id, metrics) FROM STDIN") as copy:
            for start in range(0, n, BLOCK):
                size = min(n, start + BLOCK) - start
                cols = {name: values.tolist() for name, values in metrics(rng, size).items()}
                out = io.StringIO()
                for j in range(size):
                    body = ", ".join(f'"{name}": {values[j]!r}' for name, values in cols.items())
                    out.write(f"{run}\t{first + start + j}\t{{{body}}}\n")
                copy.write(out.getvalue())
        cur.execute("ANALYZE scores")  # what autovacuum would do a minute later: the gallery's lookups use indexes
        raw.commit()
    finally:
        raw.close()
    return run


def length_metrics(rng: np.random.Generator, n: int) -> dict[str, Any]:
    """The `length` scorer's six metrics, consistent with each other (tokens = question + answer tokens)."""
    question = rng.integers(8, 40, n).astype(np.float64)
    answer = np.floor(rng.gamma(2.0, 60.0, n)) + 1
    return length_from_tokens(question, answer)


def length_from_tokens(question: np.ndarray, answer: np.ndarray) -> dict[str, Any]:
    """The six `length` metrics from question and answer token counts."""
    return {
        "tokens": question + answer,
        "question_tokens": question,
        "answer_tokens": answer,
        "words": np.floor(0.75 * (question + answer)),
        "question_words": np.floor(0.75 * question),
        "answer_words": np.floor(0.75 * answer),
    }


def clip_metrics(rng: np.random.Generator, n: int) -> dict[str, Any]:
    return {"similarity": rng.normal(0.25, 0.05, n)}
