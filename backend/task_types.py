"""Task-type rules: a record's task type from a field, prompt rules, or its file name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True)
class Rule:
    """A task type recognised by a regular expression searched in the human turns."""

    task_type: str
    pattern: re.Pattern[str]
    prompt: str | None = None


def _rule(task_type: str, pattern: str, prompt: str) -> Rule:
    return Rule(task_type, re.compile(pattern, re.IGNORECASE), prompt)


# LLaVA-1.5's response-format prompts (Liu et al. 2023, "Improved Baselines", Table 7).
BUILTIN_RULES: tuple[Rule, ...] = (
    _rule(
        "short_answer",
        r"Answer the question using a single word or phrase",
        "Answer the question using a single word or phrase.",
    ),
    _rule(
        "multiple_choice",
        r"Answer with the option's letter from the given choices directly",
        "Answer with the option's letter from the given choices directly.",
    ),
    _rule(
        "caption",
        r"Provide a one-sentence caption for the provided image",
        "Provide a one-sentence caption for the provided image.",
    ),
    _rule(
        "region_description",
        r"provide a short description for this region",
        "Please provide a short description for this region: [x1, y1, x2, y2]",
    ),
    _rule(
        "grounding",
        r"provide the bounding box coordinate of the region this sentence describes",
        "Please provide the bounding box coordinate of the region this sentence describes: <expression>",
    ),
)

_REGEX_SYNTAX = frozenset(".^$*+?{}[]\\|()")


def _ascii_literal(pattern: re.Pattern[str]) -> str | None:
    """The lower-cased text of a case-insensitive pattern that is plain ASCII text, else None.

    On ASCII input, `literal in text.lower()` finds exactly what the regex would, several times faster: the
    built-in rules run on every record of an ingest (~1 s per 100k records as regexes)."""
    source = pattern.pattern
    plain = source.isascii() and not _REGEX_SYNTAX.intersection(source)
    # Exactly IGNORECASE (str patterns always carry UNICODE): VERBOSE, say, would make spaces insignificant.
    return source.lower() if plain and pattern.flags & ~re.UNICODE == re.IGNORECASE else None


TEXT_ONLY = "text_only"
UNKNOWN = "unknown"


def load_rules(source: str | Path | Sequence[Any] | dict[str, Any]) -> list[Rule]:
    """Rules from a file path or parsed JSON.

    Accepted shapes: `{"task type": "regex", ...}` or
    `[{"task_type": ..., "pattern": ..., "prompt"?: ...}, ...]`.
    """
    where = "task-type rules"
    data: Any = source
    if isinstance(source, str | Path):
        where = str(source)
        try:
            data = orjson.loads(Path(source).read_bytes())
        except OSError as exc:
            raise ValueError(f"{where}: cannot read: {exc.strerror}") from exc
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON: {exc}") from exc
    items: list[dict[str, Any]]
    if isinstance(data, dict):
        items = [{"task_type": k, "pattern": v} for k, v in data.items()]
    elif isinstance(data, list):
        items = data
    else:
        raise ValueError(f"{where}: expected an object or a list of rules, got {type(data).__name__}")
    rules: list[Rule] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{where}: rule {i} is not an object")
        task_type, pattern = item.get("task_type"), item.get("pattern")
        if not isinstance(task_type, str) or not task_type:
            raise ValueError(f"{where}: rule {i}: field 'task_type' must be a non-empty string")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"{where}: rule {i}: field 'pattern' must be a non-empty string")
        try:
            compiled = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"{where}: rule {i}: field 'pattern' is not a valid regex: {exc}") from exc
        prompt = item.get("prompt")
        rules.append(Rule(task_type, compiled, prompt if isinstance(prompt, str) else None))
    return rules


def load_prompts(source: str | Path | dict[str, Any]) -> dict[str, str]:
    """A `{task type: prompt text}` mapping from a file path or parsed JSON."""
    where = "task-type prompts"
    data: Any = source
    if isinstance(source, str | Path):
        where = str(source)
        try:
            data = orjson.loads(Path(source).read_bytes())
        except OSError as exc:
            raise ValueError(f"{where}: cannot read: {exc.strerror}") from exc
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{where}: expected an object mapping task type to prompt text")
    return {str(k): v for k, v in data.items()}


class TaskTyper:
    """Decides a record's task type; remembers the prompt text of each type it matched."""

    def __init__(
        self,
        field: str | None = None,
        rules: Sequence[Rule] = (),
        use_builtin: bool = True,
        file_names: bool = False,
    ) -> None:
        self.field = field
        self.rules = [*rules, *(BUILTIN_RULES if use_builtin else ())]
        self._literals = [_ascii_literal(rule.pattern) for rule in self.rules]
        self.file_names = file_names
        self.prompts: dict[str, str] = {}

    def __call__(self, record: dict[str, Any], human_text: str, has_image: bool, file_stem: str) -> str:
        if self.field:
            value = record.get(self.field)
            if isinstance(value, str) and value:
                return value
        # Non-ASCII text goes to the regexes: case folding beyond ASCII (the Kelvin sign, a long s) is theirs.
        lowered = human_text.lower() if human_text.isascii() else None
        for rule, literal in zip(self.rules, self._literals, strict=True):
            hit = literal in lowered if literal is not None and lowered is not None else rule.pattern.search(human_text)
            if hit:
                if rule.prompt and rule.task_type not in self.prompts:
                    self.prompts[rule.task_type] = rule.prompt
                return rule.task_type
        if self.file_names:
            return file_stem
        if not has_image:
            return TEXT_ONLY
        return UNKNOWN
