from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.ingest import IngestError, IngestOptions, check_relative_path, ingest
from backend.models import Dataset, Sample
from backend.task_types import load_prompts, load_rules


def conv(q: str = "<image>\nWhat is it?", a: str = "A cat.") -> list[dict[str, str]]:
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


def write(path: Path, records: Any, jsonl: bool = False) -> Path:
    if jsonl:
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    else:
        path.write_text(json.dumps(records))
    return path


def run(session: Session, paths: list[Path], **kw: Any) -> Any:
    report = ingest(session, IngestOptions(name=kw.pop("name", "ds"), paths=paths, **kw))
    session.commit()
    return report


def samples(session: Session) -> list[Sample]:
    return list(session.scalars(select(Sample).order_by(Sample.position)))


def counts(session: Session) -> tuple[int, int]:
    return (
        session.scalar(select(func.count()).select_from(Dataset)) or 0,
        session.scalar(select(func.count()).select_from(Sample)) or 0,
    )


def test_json_list_with_single_multi_and_no_image(session: Session, tmp_path: Path) -> None:
    records = [
        {"id": "a", "image": "coco/1.jpg", "conversations": conv(), "source": "coco", "defect": "none"},
        {
            "id": "b",
            "image": ["x/1.jpg", "./x/2.jpg"],
            "conversations": conv("<image>\n<image>\nSame?", "No."),
        },
        {
            "id": "c",
            "conversations": [{"from": "user", "value": "Hi"}, {"from": "assistant", "value": "Hello"}],
        },
    ]
    report = run(session, [write(tmp_path / "d.json", records)])
    assert report.n_samples == 3
    rows = samples(session)
    assert [s.external_id for s in rows] == ["a", "b", "c"]
    assert rows[0].image == "coco/1.jpg"
    assert rows[1].image == ["x/1.jpg", "x/2.jpg"]
    assert rows[2].image is None
    assert rows[2].conversations == [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]
    assert rows[0].meta == {"source": "coco", "defect": "none"}
    assert rows[0].n_turns == 1 and rows[0].answer_chars == len("A cat.")
    assert rows[2].task_type == "text_only"
    ds = session.get(Dataset, report.dataset_id)
    assert ds is not None and ds.n_samples == 3 and ds.image_root == str(tmp_path.resolve())


def test_jsonl_and_several_files_take_task_type_from_file_name(session: Session, tmp_path: Path) -> None:
    a = write(
        tmp_path / "detail_description.jsonl",
        [{"id": f"d{i}", "image": "i.jpg", "conversations": conv()} for i in range(3)],
        jsonl=True,
    )
    b = write(tmp_path / "referring_qa.json", [{"id": "r0", "image": "i.jpg", "conversations": conv()}])
    prompts = {"detail_description": "Describe the image in detail.", "other": "unused"}
    report = run(session, [a, b], task_type_prompts=prompts)
    assert report.task_types == {"detail_description": 3, "referring_qa": 1}
    ds = session.get(Dataset, report.dataset_id)
    assert ds is not None and ds.task_type_prompts == {"detail_description": "Describe the image in detail."}
    assert [s.position for s in samples(session)] == [0, 1, 2, 3]


def test_task_type_from_field_rules_and_builtin_prompts(session: Session, tmp_path: Path) -> None:
    records = [
        {"id": "1", "image": "i.jpg", "kind": "vqa", "conversations": conv()},
        {
            "id": "2",
            "image": "i.jpg",
            "conversations": conv(
                "<image>\nWhat colour? Answer the question using a single word or phrase.", "Red"
            ),
        },
        {
            "id": "3",
            "image": "i.jpg",
            "conversations": conv(
                "<image>\nA. cat B. dog\nAnswer with the option's letter from the given choices directly.",
                "A",
            ),
        },
        {"id": "4", "image": "i.jpg", "conversations": conv("<image>\nHow many zebras are there?", "Two.")},
        {"id": "5", "image": "i.jpg", "conversations": conv("<image>\nWhat is it?", "A cat.")},
    ]
    rules = load_rules({"counting": r"how many"})
    report = run(
        session, [write(tmp_path / "mix.json", records)], task_type_field="kind", task_type_rules=rules
    )
    assert [s.task_type for s in samples(session)] == [
        "vqa",
        "short_answer",
        "multiple_choice",
        "counting",
        "unknown",
    ]
    ds = session.get(Dataset, report.dataset_id)
    assert ds is not None
    assert ds.task_type_prompts["short_answer"] == "Answer the question using a single word or phrase."
    assert "multiple_choice" in ds.task_type_prompts


def test_missing_ids_are_generated_and_dedupe_keeps_first(session: Session, tmp_path: Path) -> None:
    records = [
        {"conversations": conv()},
        {"id": "x", "conversations": conv(a="first")},
        {"id": "x", "conversations": conv(a="second")},
    ]
    report = run(session, [write(tmp_path / "f.json", records)], dedupe=True)
    assert report.duplicates_dropped == 1
    rows = samples(session)
    assert [s.external_id for s in rows] == ["f:0", "x"]
    assert rows[1].conversations[1]["value"] == "first"


def test_shipped_sample_dataset_ingests(session: Session) -> None:
    sample_dir = Path(__file__).parent / "data" / "sample"
    report = run(session, [sample_dir / "llava_sample.json"], image_root=sample_dir)
    assert report.n_samples == 19
    assert report.task_types["short_answer"] == 8


BAD_CASES: list[tuple[str, str, list[str]]] = [
    # (name, file content, fragments the message must contain)
    (
        "truncated",
        '[{"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}, '
        '{"id": "b", "conv',
        ["record 1", "truncated"],
    ),
    ("top_object", '{"data": [1, 2]}\n', ["top level is an object"]),
    ("top_scalar", '"hello"', ["top level is not a list"]),
    (
        "not_object",
        '[{"id": "a", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, 7]',
        ["record 1", "not an object"],
    ),
    (
        "no_conversations",
        '[{"id": "a", "image": "x.jpg"}]',
        ["record 0", "id 'a'", "'conversations'", "missing"],
    ),
    ("empty_conversations", '[{"id": "a", "conversations": []}]', ["record 0", "'conversations'", "empty"]),
    (
        "no_value",
        '[{"id": "a", "conversations": [{"from": "human"}]}]',
        ["record 0", "conversations[0].value", "missing"],
    ),
    (
        "bad_role",
        '[{"id": "a", "conversations": [{"from": "bot", "value": "x"}]}]',
        ["conversations[0].from", "unknown role 'bot'"],
    ),
    (
        "absolute_image",
        '[{"id": "a", "image": "/etc/passwd", "conversations": [{"from": "human", "value": "x"}]}]',
        ["field 'image'", "absolute"],
    ),
    (
        "climbing_image",
        '[{"id": "a", "image": "imgs/../../secret.jpg", "conversations": [{"from": "human", "value": "x"}]}]',
        ["field 'image'", "climbs out"],
    ),
    (
        "duplicate_ids",
        '[{"id": "a", "conversations": [{"from": "human", "value": "x"}]}, '
        '{"id": "a", "conversations": [{"from": "human", "value": "y"}]}]',
        ["duplicate ids", "'a'", "--dedupe"],
    ),
]


@pytest.mark.parametrize(("case", "content", "fragments"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_malformed_input_names_the_problem_and_writes_nothing(
    session: Session, tmp_path: Path, case: str, content: str, fragments: list[str]
) -> None:
    good = write(tmp_path / "good.json", [{"id": "g", "conversations": conv()}])
    bad = tmp_path / f"{case}.json"
    bad.write_text(content)
    with pytest.raises(IngestError) as info:
        run(session, [good, bad])
    session.rollback()
    message = str(info.value)
    assert str(bad) in message or case == "duplicate_ids"
    for fragment in fragments:
        assert fragment in message
    assert counts(session) == (0, 0)


def test_many_problems_are_reported_together(session: Session, tmp_path: Path) -> None:
    records = [{"id": str(i), "conversations": []} for i in range(5)]
    with pytest.raises(IngestError) as info:
        run(session, [write(tmp_path / "bad.json", records)])
    assert len(info.value.problems) == 5


def test_taken_name_and_missing_file(session: Session, tmp_path: Path) -> None:
    f = write(tmp_path / "a.json", [{"id": "a", "conversations": conv()}])
    run(session, [f], name="one")
    with pytest.raises(IngestError, match="taken"):
        run(session, [f], name="one")
    session.rollback()
    with pytest.raises(IngestError, match="no such file"):
        run(session, [tmp_path / "nope.json"], name="two")
    session.rollback()
    assert counts(session) == (1, 1)


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("a/b.jpg", "a/b.jpg"),
        ("./a//b.jpg", "a/b.jpg"),
        ("a/../b.jpg", "b.jpg"),
        ("..", None),
        ("../a", None),
        ("/abs", None),
        ("C:\\x.jpg", None),
        ("a\\..\\..\\b", None),
        ("", None),
        ("a\x00b", None),
    ],
)
def test_check_relative_path(path: str, ok: str | None) -> None:
    if ok is None:
        with pytest.raises(ValueError):
            check_relative_path(path)
    else:
        assert check_relative_path(path) == ok


def test_check_relative_path_equals_normpath_wherever_it_accepts() -> None:
    # Its shortcut skips normpath for paths normpath leaves alone: every path of these segments agrees with it.
    segments = ["a", "b.jpg", ".", "..", "", ".hidden", "x..y", "c."]
    checked = 0
    for first in segments:
        for second in segments:
            for third in [*segments, None]:
                path = "/".join(s for s in (first, second, third) if s is not None)
                if not path:
                    continue
                norm = posixpath.normpath(path)
                if norm == ".." or norm.startswith("../") or path.startswith("/"):
                    with pytest.raises(ValueError):
                        check_relative_path(path)
                else:
                    assert check_relative_path(path) == norm, path
                    checked += 1
    assert checked > 300


def test_rule_and_prompt_files_are_validated(tmp_path: Path) -> None:
    bad = tmp_path / "rules.json"
    bad.write_text('[{"task_type": "x", "pattern": "("}]')
    with pytest.raises(ValueError, match="rule 0: field 'pattern' is not a valid regex"):
        load_rules(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_prompts(bad)
    good = tmp_path / "r.json"
    good.write_text('[{"task_type": "count", "pattern": "how many", "prompt": "Count."}]')
    assert load_rules(good)[0].prompt == "Count."
