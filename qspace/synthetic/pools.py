"""Pre-built text pools for the LLaVA-665K-shaped file: templates filled once, so that writing a record is only
picking from lists (~1 GB streams out in well under a minute)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from qspace.synthetic.phrasing import capitalise, fix_articles
from qspace.synthetic.scenes import WORDS
from qspace.synthetic.words import (
    ADJECTIVES,
    BOOK_GENRES,
    CODE_SNIPPETS,
    FIRST_NAMES,
    GPT_SENTENCES,
    GQA_QUESTIONS,
    HUMAN_SENTENCES,
    IRREGULAR_PLURALS,
    LANGUAGES,
    LAST_NAMES,
    LLAVA_QUESTIONS,
    LLAVA_SENTENCES,
    NOUNS,
    OKVQA_QUESTIONS,
    PHOTO_COLORS,
    PLACES,
    PREPOSITIONS,
    PROMPT_CAPTION,
    PROMPT_MC,
    SLOT_VALUES,
    TITLE_NOUNS,
    TOPICS,
    VERBS,
    VQA_QUESTIONS,
)


def noun_plural(noun: str) -> str:
    """'dogs', 'buses', 'men': for the {nouns} slots."""
    if noun in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[noun]
    return noun + ("es" if noun.endswith(("s", "ch", "sh")) else "s")


class TemplateSlots(dict[str, str]):
    """Template slots drawn on first use, so a template costs only the draws it needs.

    A slot used twice in one template ("{noun} ... {noun}") gets the same word both times.
    """

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def __missing__(self, key: str) -> str:
        if key == "Topic":
            v = capitalise(self["topic"])
        elif key.startswith("nouns"):
            v = noun_plural(self.rng.choice(NOUNS))
        else:
            v = self.rng.choice(SLOT_VALUES[key])
        self[key] = v
        return v


class TextPools:
    """Pre-built sentences and QA pairs; per-record work is picking from these.

    Built from one RNG in a fixed order (attribute by attribute), so a seed always gives the same pools.
    """

    def __init__(self, seed: int, size: int = 4000) -> None:
        r = random.Random(seed)
        self.rng = r

        def slots() -> TemplateSlots:
            return TemplateSlots(r)

        def fill(templates: Sequence[str]) -> list[str]:
            return [fix_articles(r.choice(templates).format_map(slots())) for _ in range(size)]

        def qa(templates: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[str, str]]:
            out = []
            for _ in range(size):
                q, answers = r.choice(templates)
                out.append((fix_articles(q.format_map(slots())), r.choice(answers)))
            return out

        self.llava_sentences = fill(LLAVA_SENTENCES)
        self.llava_questions = {k: fill(v) for k, v in LLAVA_QUESTIONS.items()}
        self.human = fill(HUMAN_SENTENCES)
        self.gpt = fill(GPT_SENTENCES)
        self.code = [
            c.format(lang=r.choice(LANGUAGES).lower(), fname=r.choice(("clean", "rows", "data"))) for c in CODE_SNIPPETS
        ]
        self.vqa = qa(VQA_QUESTIONS)
        self.gqa = qa(GQA_QUESTIONS)
        self.okvqa = qa(OKVQA_QUESTIONS)
        self.ocr = self._book_questions(size)
        self.multiple_choice = self._multiple_choice(size)
        self.captions = self._captions(size)
        self.phrases = [
            fix_articles(
                r.choice(
                    (
                        "{adj} {noun} on the left",
                        "{noun} {prep} the {noun2}",
                        "{color} {noun}",
                        "the {noun} in the middle",
                        "{adj} {noun} on the right",
                        "a {noun} {verb}",
                    )
                ).format_map(slots())
            )
            for _ in range(size)
        ]
        self.boxes = []
        for _ in range(size):
            x1, y1 = r.random() * 0.7, r.random() * 0.7
            x2, y2 = x1 + 0.05 + r.random() * (0.95 - x1), y1 + 0.05 + r.random() * (0.95 - y1)
            self.boxes.append(f"[{x1:.2f}, {y1:.2f}, {min(x2, 1.0):.2f}, {min(y2, 1.0):.2f}]")

    def _book_questions(self, size: int) -> list[tuple[str, str]]:
        r = self.rng
        out = []
        for _ in range(size):
            k = r.randrange(6)  # which of OCR-VQA's six question kinds
            genre = r.choice(BOOK_GENRES)  # drawn for every kind, used by two
            if k == 0:
                out.append(("Who wrote this book?", f"{r.choice(FIRST_NAMES)} {r.choice(LAST_NAMES)}"))
            elif k == 1:
                adjective, noun, topic = r.choice(ADJECTIVES), r.choice(TITLE_NOUNS), r.choice(TOPICS)
                title = f"The {adjective.capitalize()} {noun}: A {topic.title()} Guide"
                out.append(("What is the title of this book?", title))
            elif k == 2:
                out.append(("What type of book is this?", genre))
            elif k == 3:
                out.append((f"Is this a {r.choice(BOOK_GENRES).lower()} book?", r.choice(("Yes", "No"))))
            elif k == 4:
                out.append((f"Is this book related to {r.choice(BOOK_GENRES)}?", r.choice(("Yes", "No"))))
            else:
                out.append(("What is the genre of this book?", genre))
        return out

    def _multiple_choice(self, size: int) -> list[tuple[str, str]]:
        r = self.rng
        out = []
        for _ in range(size):
            q = r.choice(
                (
                    "What is the {noun} used for?",
                    "Why is the {noun} {verb}?",
                    "What will the {noun} do next?",
                    "What is the {adj} object {prep} the {noun} called?",
                )
            ).format(noun=r.choice(NOUNS), verb=r.choice(VERBS), adj=r.choice(ADJECTIVES), prep=r.choice(PREPOSITIONS))
            opts = r.sample(NOUNS, 4)
            body = "\n".join(f"{'ABCD'[k]}. {o}" for k, o in enumerate(opts))
            out.append((f"{q}\n{body}\n{PROMPT_MC}", "ABCD"[r.randrange(4)]))
        return out

    def _captions(self, size: int) -> list[tuple[str, str]]:
        r = self.rng
        out = []
        for _ in range(size):
            toks = [r.choice(WORDS) for _ in range(r.randint(1, 4))]
            q = PROMPT_CAPTION + (f"\nReference OCR token: {', '.join(toks)}" if r.random() < 0.6 else "")
            cap = fix_articles(
                r.choice(
                    (
                        "A {adj} {noun} with the word {tok} written on it.",
                        "A sign that says {tok} next to a {noun}.",
                        "The {noun} has a label reading {tok} in large letters.",
                        "A {color} {noun} in a {place} displays {tok}.",
                    )
                ).format(
                    adj=r.choice(ADJECTIVES),
                    noun=r.choice(NOUNS),
                    tok=toks[0],
                    color=r.choice(PHOTO_COLORS),
                    place=r.choice(PLACES),
                )
            )
            out.append((q, cap))
        return out
