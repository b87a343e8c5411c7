"""Eval suites: held-out items a trained model is scored on. Torch-free: the API validates suites with it.

File format (JSONL, UTF-8): one JSON object per line; blank lines are skipped. Fields of an item:

- ``id`` (string or integer, required, unique in the file): names the item in per-item outcomes.
- ``image`` (string, optional): path of the image, relative to the suite file's folder or absolute; the file must
  exist. Absent or null = a text-only item.
- ``question`` (string, required, not blank): the human turn (the image goes before it, as in LLaVA).
- ``options`` (list of >= 2 distinct, non-blank strings) with ``answer`` (integer index of the correct option):
  a multiple-choice item. The model picks the option with the highest total log-likelihood given the image and
  the question (the way lmms-eval scores its "loglikelihood" tasks) -> metric ``accuracy``.
- ``references`` (list of >= 1 non-blank strings): reference answers -> metric ``answer_loss``, the mean
  negative log-likelihood per answer token (nats) of the references given the image and the question.
- ``type`` (string, optional): the item's kind (e.g. ``colour``, ``shape``, ``count``) for per-type figures.

An item has ``options`` + ``answer``, or ``references``, or both. Any other field is refused (a typo such as
``option`` would otherwise silently drop the item's metric). Example::

    {"id": "q1", "image": "images/0001.png", "question": "What colour is the square?",
     "options": ["red", "blue", "green", "yellow"], "answer": 0, "type": "colour"}
    {"id": "q2", "image": "images/0002.png", "question": "Describe the image.",
     "references": ["Two blue circles beside a red square."]}

:func:`load_eval_suite` refuses a malformed file with :class:`EvalSuiteError` (a ValueError) naming the file,
the line and the field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ACCURACY",
    "ANSWER_LOSS",
    "EvalItem",
    "EvalSuite",
    "EvalSuiteError",
    "load_eval_suite",
]

ACCURACY = "accuracy"
ANSWER_LOSS = "answer_loss"
FIELDS = ("id", "image", "question", "options", "answer", "references", "type")
MAX_LINE_CHARS = 1_000_000  # a line longer than this is not an eval item; refuse before parsing it


class EvalSuiteError(ValueError):
    """A malformed suite: ``str(e)`` reads ``FILE:LINE: FIELD: why`` (``line`` 0 = the file as a whole)."""

    def __init__(self, path: str | Path, line: int, field: str, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


@dataclass(frozen=True)
class EvalItem:
    """One held-out item, its image path resolved."""

    id: str
    question: str
    image: str | None = None  # absolute path; None = text-only
    options: tuple[str, ...] | None = None
    answer: int | None = None  # index into options
    references: tuple[str, ...] | None = None
    type: str | None = None
    line: int = 0  # where it was read (for messages)


@dataclass(frozen=True)
class EvalSuite:
    """A loaded suite: its items, and the metrics they yield."""

    name: str
    path: str  # absolute
    items: tuple[EvalItem, ...]
    digest: str  # "sha256:..." of the file's bytes (a manifest cites the exact suite)

    @property
    def metrics(self) -> list[str]:
        """``accuracy`` when some item has options, ``answer_loss`` when some has references."""
        out = []
        if any(it.options is not None for it in self.items):
            out.append(ACCURACY)
        if any(it.references is not None for it in self.items):
            out.append(ANSWER_LOSS)
        return out

    def n_items(self, metric: str) -> int:
        if metric == ACCURACY:
            return sum(it.options is not None for it in self.items)
        if metric == ANSWER_LOSS:
            return sum(it.references is not None for it in self.items)
        raise ValueError(f"metric: unknown {metric!r} (known: {ACCURACY}, {ANSWER_LOSS})")

    def describe(self) -> dict[str, Any]:
        """What ``GET /api/eval_suites`` lists: name, path, n_items, metrics (plus the digest)."""
        return {"name": self.name, "path": self.path, "n_items": len(self.items), "metrics": self.metrics,
                "digest": self.digest}


def _text(value: Any, err: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise err(field, "must be a non-blank string")
    return value


def _texts(value: Any, err: Any, field: str, least: int) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) < least:
        raise err(field, f"must be a list of at least {least} strings")
    for k, v in enumerate(value):
        _text(v, err, f"{field}[{k}]")
    return tuple(value)


def _parse_item(raw: Any, base: Path, path: Path, line: int) -> EvalItem:
    def err(field: str, message: str) -> EvalSuiteError:
        return EvalSuiteError(path, line, field, message)

    if not isinstance(raw, dict):
        raise err("", f"expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise err(unknown[0], f"unknown field (known: {', '.join(FIELDS)})")
    if "id" not in raw:
        raise err("id", "missing")
    item_id = raw["id"]
    if isinstance(item_id, bool) or not isinstance(item_id, (str, int)) or (isinstance(item_id, str) and not item_id):
        raise err("id", "must be a non-empty string or an integer")
    if "question" not in raw:
        raise err("question", "missing")
    question = _text(raw["question"], err, "question")

    image: str | None = None
    if raw.get("image") is not None:
        rel = _text(raw["image"], err, "image")
        p = Path(rel).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise err("image", f"file not found: {p}")
        image = str(p.resolve())

    options: tuple[str, ...] | None = None
    answer: int | None = None
    if raw.get("options") is not None:
        options = _texts(raw["options"], err, "options", 2)
        if len(set(options)) != len(options):
            raise err("options", "must be distinct")
        if raw.get("answer") is None:
            raise err("answer", "missing (the index of the correct option)")
        answer = raw["answer"]
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(options):
            raise err("answer", f"must be an integer index in [0, {len(options) - 1}]")
    elif raw.get("answer") is not None:
        raise err("options", "missing (an answer needs the options it indexes)")

    references: tuple[str, ...] | None = None
    if raw.get("references") is not None:
        references = _texts(raw["references"], err, "references", 1)
    if options is None and references is None:
        raise err("options", "an item needs options with an answer, or references, or both")

    kind = raw.get("type")
    if kind is not None:
        kind = _text(kind, err, "type")
    return EvalItem(str(item_id), question, image, options, answer, references, kind, line)


def load_eval_suite(path: str | Path, name: str | None = None) -> EvalSuite:
    """Read and validate a suite file; ``name`` defaults to the file's stem.

    Raises :class:`EvalSuiteError` naming file, line and field for the first problem found.
    """
    p = Path(path).expanduser().resolve()
    try:
        data = p.read_bytes()
    except OSError as e:
        raise EvalSuiteError(p, 0, "", f"cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EvalSuiteError(p, data[: e.start].count(b"\n") + 1, "", "not UTF-8") from None
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            raise EvalSuiteError(p, lineno, "", f"line longer than {MAX_LINE_CHARS:,} characters")
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalSuiteError(p, lineno, "", f"not JSON ({e.msg} at column {e.colno})") from None
        item = _parse_item(raw, p.parent, p, lineno)
        if item.id in seen:
            raise EvalSuiteError(p, lineno, "id", f"duplicate {item.id!r} (first on line {seen[item.id]})")
        seen[item.id] = lineno
        items.append(item)
    if not items:
        raise EvalSuiteError(p, 0, "", "no items")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return EvalSuite(name or p.stem, str(p), tuple(items), digest)
