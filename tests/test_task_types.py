from __future__ import annotations

import re

import pytest

from backend.task_types import BUILTIN_RULES, TEXT_ONLY, UNKNOWN, Rule, TaskTyper, load_rules


def regex_only(typer: TaskTyper, human_text: str, has_image: bool = True) -> str:
    """What the typer's rules decide by their regexes alone (the reference for its plain-text fast path)."""
    for rule in typer.rules:
        if rule.pattern.search(human_text):
            return rule.task_type
    return UNKNOWN if has_image else TEXT_ONLY


TEXTS = [
    "What is this?\nAnswer the question using a single word or phrase.",
    "what is this? ANSWER THE QUESTION USING A SINGLE WORD OR PHRASE",
    "A. red\nB. blue\nAnswer with the option's letter from the given choices directly.",
    "Answer with the options letter from the given choices directly.",  # no apostrophe: no match
    "<image>\nProvide a one-sentence caption for the provided image.",
    "Please provide a short description for this region: [0.1, 0.2, 0.3, 0.4]",
    "Please provide the bounding box coordinate of the region this sentence describes: a dog",
    "Describe the image in detail.",
    "",
    # Non-ASCII text: the regexes decide. U+212A (Kelvin sign) and U+017F (long s) fold to k and s.
    "Provide a one-sentence caption for the provided image. Ça va ?",
    "Answer the que\u017ftion using a single word or phrase",
    "Plea\u017fe provide a \u017fhort de\u017fcription for this region",
    "\u0130 Answer the question using a single word or phrase",
]


@pytest.mark.parametrize("text", TEXTS)
def test_builtin_rules_decide_as_their_regexes(text: str) -> None:
    typer = TaskTyper()
    assert typer({}, text, True, "f") == regex_only(typer, text)


def test_fast_path_agrees_with_regexes_on_ascii_text() -> None:
    typer = TaskTyper(rules=load_rules({"counting": "how many", "ocr": r"what (is|does) the text"}))
    found = set()
    for prompt in [*TEXTS, "HOW MANY dogs?", "What does the TEXT say?", "how  many (two spaces)"]:
        for text in (prompt, prompt.upper(), prompt.lower(), f"x {prompt} y"):
            got = typer({}, text, True, "f")
            assert got == regex_only(typer, text), text
            found.add(got)
    assert {"counting", "ocr", "short_answer", "multiple_choice", "caption", "grounding"} <= found


def test_literal_rules_and_regex_rules_keep_their_order() -> None:
    # The first matching rule wins whichever path decides it: a regex rule before a literal one.
    rules = [Rule("digits", re.compile(r"\d+", re.IGNORECASE)), Rule("caption", BUILTIN_RULES[2].pattern)]
    typer = TaskTyper(rules=rules, use_builtin=False)
    assert typer({}, "Provide a one-sentence caption for the provided image 3", True, "f") == "digits"
    assert typer({}, "Provide a one-sentence caption for the provided image", True, "f") == "caption"


def test_a_case_sensitive_pattern_stays_case_sensitive() -> None:
    typer = TaskTyper(rules=[Rule("exact", re.compile("Count"))], use_builtin=False)
    assert typer({}, "Count them", True, "f") == "exact"
    assert typer({}, "count them", True, "f") == UNKNOWN


def test_prompts_are_remembered_for_matched_builtin_types() -> None:
    typer = TaskTyper()
    typer({}, "A or B? Answer with the option's letter from the given choices directly.", True, "f")
    assert typer.prompts == {"multiple_choice": BUILTIN_RULES[1].prompt}


def test_field_then_file_name_then_image_decide_when_no_rule_matches() -> None:
    assert TaskTyper(field="kind")({"kind": "chart"}, "Answer the question using a single word", True, "f") == "chart"
    assert TaskTyper(file_names=True)({}, "Describe it.", True, "vqa_part") == "vqa_part"
    assert TaskTyper()({}, "Describe it.", False, "f") == TEXT_ONLY


def test_a_verbose_pattern_is_left_to_its_regex() -> None:
    # Under re.VERBOSE the space is insignificant: "how many" matches "howmany", which a substring test would miss.
    typer = TaskTyper(rules=[Rule("count", re.compile("how many", re.IGNORECASE | re.VERBOSE))], use_builtin=False)
    assert typer({}, "HOWMANY dogs?", True, "f") == "count"
