"""Eval-suite files: the documented format loads, paths resolve, metrics follow the fields, and every malformed
file is refused with its file, line and field named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backend.eval_specs import ACCURACY, ANSWER_LOSS, EvalSuiteError, load_eval_suite


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "images" / name).write_bytes(b"not decoded at load time")
    return tmp_path


def _write(folder: Path, rows: list[Any], name: str = "suite.jsonl") -> Path:
    path = folder / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {"id": "q1", "image": "images/a.png", "question": "What colour?", "options": ["red", "blue"], "answer": 1}


def test_loads_the_documented_format(folder: Path) -> None:
    path = _write(folder, [
        {**GOOD, "type": "colour"},
        "",  # blank lines are skipped
        {"id": 2, "image": str(folder / "images" / "b.png"), "question": "Describe it.", "references": ["A dot."]},
        {"id": "q3", "question": "Text only?", "options": ["yes", "no", "maybe"], "answer": 0, "references": ["Yes."]},
    ])
    suite = load_eval_suite(path)
    assert suite.name == "suite" and suite.path == str(path.resolve())
    a, b, c = suite.items
    assert a.image == str((folder / "images" / "a.png").resolve()) and a.options == ("red", "blue") and a.answer == 1
    assert a.type == "colour" and a.line == 1
    assert b.id == "2" and b.references == ("A dot.",) and b.options is None and b.line == 3
    assert c.image is None
    assert suite.metrics == [ACCURACY, ANSWER_LOSS]
    assert suite.n_items(ACCURACY) == 2 and suite.n_items(ANSWER_LOSS) == 2
    assert suite.digest.startswith("sha256:") and load_eval_suite(path, name="x").digest == suite.digest
    assert suite.describe() == {"name": "suite", "path": suite.path, "n_items": 3, "metrics": [ACCURACY, ANSWER_LOSS],
                                "digest": suite.digest}
    only_refs = load_eval_suite(_write(folder, [{"id": 1, "question": "Q?", "references": ["R."]}], "refs.jsonl"))
    assert only_refs.metrics == [ANSWER_LOSS]


@pytest.mark.parametrize(
    ("row", "field", "says"),
    [
        ("{not json", "", "not JSON"),
        ("[1, 2]", "", "expected a JSON object"),
        ({**GOOD, "option": ["a", "b"]}, "option", "unknown field"),
        ({k: v for k, v in GOOD.items() if k != "id"}, "id", "missing"),
        ({**GOOD, "id": ""}, "id", "non-empty"),
        ({**GOOD, "id": True}, "id", "non-empty"),
        ({k: v for k, v in GOOD.items() if k != "question"}, "question", "missing"),
        ({**GOOD, "question": "  "}, "question", "non-blank"),
        ({**GOOD, "image": "images/nope.png"}, "image", "file not found"),
        ({**GOOD, "image": 3}, "image", "non-blank string"),
        ({**GOOD, "options": ["only one"]}, "options", "at least 2"),
        ({**GOOD, "options": ["a", "a"]}, "options", "distinct"),
        ({**GOOD, "options": ["a", ""]}, "options[1]", "non-blank"),
        ({**GOOD, "options": "ab"}, "options", "list"),
        ({k: v for k, v in GOOD.items() if k != "answer"}, "answer", "missing"),
        ({**GOOD, "answer": 2}, "answer", "index in [0, 1]"),
        ({**GOOD, "answer": -1}, "answer", "index"),
        ({**GOOD, "answer": True}, "answer", "index"),
        ({**GOOD, "answer": "0"}, "answer", "index"),
        ({"id": 1, "question": "Q?", "answer": 0}, "options", "an answer needs the options"),
        ({"id": 1, "question": "Q?"}, "options", "options with an answer, or references"),
        ({"id": 1, "question": "Q?", "references": []}, "references", "at least 1"),
        ({"id": 1, "question": "Q?", "references": ["ok", 5]}, "references[1]", "non-blank"),
        ({**GOOD, "type": 7}, "type", "non-blank"),
    ],
)
def test_malformed_items_name_file_line_and_field(folder: Path, row: Any, field: str, says: str) -> None:
    path = _write(folder, [{**GOOD, "id": "first"}, row])
    with pytest.raises(EvalSuiteError) as e:
        load_eval_suite(path)
    assert (e.value.line, e.value.field) == (2, field)
    assert e.value.path == str(path.resolve())
    assert str(e.value).startswith(f"{path.resolve()}:2: ")
    assert says in str(e.value)
    assert isinstance(e.value, ValueError)


def test_malformed_files(folder: Path) -> None:
    with pytest.raises(EvalSuiteError, match="duplicate 'q1' \\(first on line 1\\)") as e:
        load_eval_suite(_write(folder, [GOOD, "", GOOD]))
    assert (e.value.line, e.value.field) == (3, "id")
    with pytest.raises(EvalSuiteError, match="no items"):
        load_eval_suite(_write(folder, ["", "  "]))
    with pytest.raises(EvalSuiteError, match="cannot read"):
        load_eval_suite(folder / "absent.jsonl")
    bad = folder / "latin1.jsonl"
    bad.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"id": "\xe9"}\n')
    with pytest.raises(EvalSuiteError, match="not UTF-8") as e:
        load_eval_suite(bad)
    assert e.value.line == 2
