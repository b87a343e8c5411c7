"""How a conversation becomes tokens for the loss scorers, training and evaluation: render it (the model's chat
template, or LLaVA-1.5's), tokenize with offsets, and mark the answer tokens that count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.scorer_specs import ScoreItem
from workers.scorers.base import (
    IMAGE_TOKEN,
    SampleError,
    strip_image_token,
)

# --- encoding --------------------------------------------------------------------------------------


@dataclass
class Encoded:
    """One token sequence: ``ids[p]`` for ``p`` in ``targets`` are the counted tokens."""

    sample_id: int
    ids: list[int]
    targets: list[int]  # ascending, each >= 1 (position 0 has nothing to predict it)
    n_images: int = 0
    item: ScoreItem | None = field(default=None, repr=False)


def _turn_images(conversations: Sequence[dict[str, str]], n_images: int) -> list[tuple[str, str, int]]:
    """(role, text, images before it) per turn: where the data put ``<image>``, else all on the first
    human turn (LLaVA moves the image to the start of its turn)."""
    rows = [
        (c["from"], strip_image_token(c.get("value") or ""), (c.get("value") or "").count(IMAGE_TOKEN))
        for c in conversations
        if c.get("from") in ("human", "gpt")
    ]
    if sum(k for _, _, k in rows) == n_images:
        return rows
    first = next((i for i, (r, _, _) in enumerate(rows) if r == "human"), 0)
    return [(r, t, n_images if i == first else 0) for i, (r, t, _) in enumerate(rows)]


def without_questions(conversations: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation with every question's text removed and its ``<image>`` tokens kept where the data put
    them: the prompt of "the answers given the image only" (``mllm_loss``'s ``question_gain``). The human
    turns stay, empty, so the role markers around each answer, and so its tokens, do not change."""
    return [
        {**c, "value": IMAGE_TOKEN * (c.get("value") or "").count(IMAGE_TOKEN)} if c.get("from") == "human" else c
        for c in conversations
    ]


class ConversationEncoder:
    """Renders a conversation and tokenizes it, marking the answer tokens by character offsets."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        template: str,
        include_eos: bool,
        max_length: int,
        template_owner: Any = None,
        structured: bool = False,
        image_token_id: int | None = None,
        n_image_tokens: int = 0,
    ) -> None:
        if not getattr(tokenizer, "is_fast", True):
            raise ValueError("model: needs a fast (tokenizers) tokenizer for character offsets")
        self.tokenizer = tokenizer
        owner = template_owner if template_owner is not None else tokenizer
        self.chat_owner = owner if template == "auto" and getattr(owner, "chat_template", None) else None
        self.structured = structured
        self.include_eos = include_eos
        self.max_length = max_length
        self.image_token_id = image_token_id
        self.n_image_tokens = n_image_tokens
        self.bos_id: int | None = tokenizer.bos_token_id
        self.sep = tokenizer.eos_token or "\n"
        self.special_ids = set(tokenizer.all_special_ids) | {
            i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)
        }
        self.special_ids.discard(image_token_id)

    # -- rendering
    def render(self, conversations: Sequence[dict[str, str]], n_images: int) -> tuple[str, list[tuple[int, int]]]:
        """(prompt text with one ``<image>`` per image, character spans of the answers)."""
        rows = _turn_images(conversations, n_images)
        if self.chat_owner is not None:
            return self._render_chat(rows)
        parts: list[str] = []
        spans: list[tuple[int, int]] = []
        pos = 0
        for role, text, k in rows:
            if role == "human":
                piece = "USER: " + (IMAGE_TOKEN + "\n") * k + text + " "
            else:
                head = "ASSISTANT: " + (IMAGE_TOKEN + "\n") * k
                if text:
                    spans.append((pos + len(head), pos + len(head) + len(text)))
                piece = head + text + self.sep
            parts.append(piece)
            pos += len(piece)
        return "".join(parts), spans

    def _render_chat(self, rows: list[tuple[str, str, int]]) -> tuple[str, list[tuple[int, int]]]:
        messages: list[dict[str, Any]] = []
        for role, text, k in rows:
            content: Any = text
            if self.structured:
                content = [{"type": "image"}] * k + [{"type": "text", "text": text}]
            messages.append({"role": "user" if role == "human" else "assistant", "content": content})
        assert self.chat_owner is not None
        try:
            rendered = self.chat_owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        except Exception as e:  # e.g. a template that insists on user/assistant alternation
            raise SampleError(f"chat template failed: {e}"[:200]) from None
        if not isinstance(rendered, str):
            rendered = rendered[0]
        spans = []
        cursor = 0
        for role, text, _ in rows:  # find each turn's text in order, so a question quoting an answer can't fool it
            if not text:
                continue
            at = rendered.find(text, cursor)
            if at < 0:
                raise SampleError("chat template changed the text")
            if role == "gpt":
                spans.append((at, at + len(text)))
            cursor = at + len(text)
        return rendered, spans

    # -- tokenizing
    def _tokenize(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        tok = self.tokenizer
        add_special = not (tok.bos_token and text.startswith(tok.bos_token))  # template wrote BOS itself
        enc = tok(text, add_special_tokens=add_special, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        if self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            # GPT-2 style tokenizers add no BOS: without it the first token has no prediction
            ids.insert(0, self.bos_id)
            offsets.insert(0, (0, 0))
        return ids, offsets

    def _counted(
        self, ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]
    ) -> tuple[list[int], list[int | None]]:
        """(counted positions, per answer span the end-of-turn token id counted after it or None)."""
        counted: list[int] = []
        ends: list[int | None] = [None] * len(spans)
        j = 0
        for i, (s, e) in enumerate(offsets):
            if s == e:
                continue
            while j < len(spans) and spans[j][1] <= s:
                j += 1
            if j < len(spans) and s < spans[j][1] and e > spans[j][0]:
                counted.append(i)
                # the end-of-turn token right after an answer's last token (</s>, <|im_end|>, ...)
                nxt = i + 1
                is_last = nxt >= len(offsets) or offsets[nxt][0] >= spans[j][1] or offsets[nxt][0] == offsets[nxt][1]
                if self.include_eos and is_last and nxt < len(ids) and ids[nxt] in self.special_ids:
                    counted.append(nxt)
                    ends[j] = ids[nxt]
        return [p for p in counted if p >= 1], ends

    def _finish(self, sample_id: int, ids: list[int], counted: list[int], n_images: int) -> Encoded:
        """Expand each image token to the model's feature count, cut at ``max_length``."""
        if self.image_token_id is not None and n_images:
            found = sum(1 for t in ids if t == self.image_token_id)
            if found != n_images:
                raise SampleError(f"prompt has {found} image tokens for {n_images} images")
            counted_set = set(counted)
            new_ids: list[int] = []
            new_counted: list[int] = []
            for i, t in enumerate(ids):
                if t == self.image_token_id:
                    new_ids.extend([t] * self.n_image_tokens)
                    continue
                if i in counted_set:
                    new_counted.append(len(new_ids))
                new_ids.append(t)
            ids, counted = new_ids, new_counted
        if len(ids) > self.max_length:
            if self.image_token_id is not None and self.image_token_id in ids[self.max_length :]:
                raise SampleError(f"too long: {len(ids)} tokens > {self.max_length}")
            ids = ids[: self.max_length]
            counted = [p for p in counted if p < self.max_length]
        if not counted:
            raise SampleError("empty answer" if len(ids) < self.max_length else "too long")
        return Encoded(sample_id, ids, counted, n_images)

    def encode(self, item: ScoreItem, n_images: int = 0) -> Encoded:
        """The whole conversation; counted = the answers (and their end-of-turn tokens)."""
        text, spans = self.render(item.conversations, n_images)
        if not spans:
            raise SampleError("empty answer")
        ids, offsets = self._tokenize(text)
        counted, _ = self._counted(ids, offsets, spans)
        return self._finish(item.sample_id, ids, counted, n_images)

    def encode_answers_alone(self, item: ScoreItem) -> list[Encoded]:
        """Each answer on its own: BOS + answer (+ the end-of-turn token counted after it in context).

        Position 0 is never counted: without a BOS the first answer token has no prediction.
        """
        text, spans = self.render(item.conversations, 0)
        ids, offsets = self._tokenize(text)
        _, ends = self._counted(ids, offsets, spans)
        out = []
        for (a0, a1), end in zip(spans, ends, strict=True):
            seq = [self.bos_id] if self.bos_id is not None else []
            seq += list(self.tokenizer(text[a0:a1], add_special_tokens=False)["input_ids"])
            seq += [end] if end is not None else []
            seq = seq[: self.max_length]
            if len(seq) > 1:
                out.append(Encoded(item.sample_id, seq, list(range(1, len(seq)))))
        if not out:
            raise SampleError("empty answer")
        return out
