"""Loss scorers (mllm_loss, lm_loss, ifd): batched == per-sample reference, answer-only masking,
metric identities, per-sample errors, out-of-memory back-off, head applied at answer positions only."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from backend.scorer_specs import ScoreItem
from tests.workers.conftest import assert_close
from workers.scorers import lm
from workers.scorers.base import Scorer, answers
from workers.scorers.lm import IfdScorer, LmLossScorer
from workers.scorers.mllm import MllmLossScorer
from workers.scorers.registry import build_scorer


def _scorer(kind: str, models: dict[str, Path], **params: Any) -> Any:
    model = models["llava" if kind == "mllm_loss" else "lm"]
    return build_scorer(kind, {"model": str(model), "num_workers": 0, **params}, device="cpu")


def _check_against_reference(scorer: Scorer, samples: list[ScoreItem]) -> int:
    got = scorer.score_all(samples)
    assert sorted(got) == sorted(s.sample_id for s in samples)
    n_ok = 0
    for item in samples:
        want = scorer.reference(item)  # type: ignore[attr-defined]
        assert got[item.sample_id].error == want.error, (item.sample_id, got[item.sample_id], want)
        if want.metrics is not None:
            assert_close(got[item.sample_id].metrics, want.metrics)  # type: ignore[arg-type]
            n_ok += 1
    return n_ok


@pytest.mark.parametrize(
    "params",
    [{"batch_size": 5}, {"batch_size": 64, "template": "llava_v1"}, {"batch_size": 3, "include_eos": False}],
)
def test_mllm_batched_equals_reference(tiny_models: dict[str, Path], samples: list[ScoreItem], params: dict) -> None:
    n_ok = _check_against_reference(_scorer("mllm_loss", tiny_models, **params), samples)
    assert n_ok == len(samples) - 4  # missing, truncated and non-image files; the blank answer


@pytest.mark.parametrize(
    "params",
    [{"batch_size": 4}, {"batch_size": 32, "include_eos": False}, {"batch_size": 3, "num_workers": 2}],
)
def test_lm_loss_batched_equals_reference(tiny_models: dict[str, Path], samples: list[ScoreItem], params: dict) -> None:
    n_ok = _check_against_reference(_scorer("lm_loss", tiny_models, **params), samples)
    assert n_ok == len(samples) - 1  # text only: images don't matter, only the empty answer fails


@pytest.mark.parametrize(
    "params",
    [{"batch_size": 4}, {"batch_size": 64, "template": "llava_v1"}, {"batch_size": 5, "num_workers": 2}],
)
def test_ifd_batched_equals_reference(tiny_models: dict[str, Path], samples: list[ScoreItem], params: dict) -> None:
    scorer = _scorer("ifd", tiny_models, **params)
    assert _check_against_reference(scorer, samples) == len(samples) - 1
    for r in scorer.score_all(samples).values():
        if r.metrics:
            assert r.metrics["ifd"] == pytest.approx(r.metrics["loss_cond"] / r.metrics["loss_direct"], rel=1e-9)


def test_errors_are_rows_and_the_batch_goes_on(tiny_models: dict[str, Path], samples: list[ScoreItem]) -> None:
    got = _scorer("mllm_loss", tiny_models, batch_size=64).score_all(samples)
    errors = sorted(r.error for r in got.values() if r.error)
    assert len(errors) == 4
    assert "empty answer" in errors
    assert any(e.startswith("image missing: ") for e in errors)
    assert sum(e.startswith("image unreadable: ") for e in errors) == 2
    text_only = [s for s in samples if not s.images]
    assert text_only and all(got[s.sample_id].error is None for s in text_only)  # scored without an image


def test_metric_identities(tiny_models: dict[str, Path], samples: list[ScoreItem]) -> None:
    for kind in ("mllm_loss", "lm_loss"):
        for r in _scorer(kind, tiny_models).score_all(samples).values():
            if r.metrics is None:
                continue
            m = r.metrics
            assert m["loss_sum"] == pytest.approx(m["loss_mean"] * m["tokens"], rel=1e-12)
            assert m["perplexity"] == pytest.approx(math.exp(m["loss_mean"]), rel=1e-12)
            assert m["tokens"] >= 1 and m["tokens"] == int(m["tokens"]) and m["loss_sum"] > 0


@pytest.mark.parametrize("template", ["auto", "llava_v1"])
def test_only_answer_tokens_are_counted(tiny_models: dict[str, Path], samples: list[ScoreItem], template: str) -> None:
    scorer = _scorer("mllm_loss", tiny_models, template=template).load()
    tok = scorer.encoder.tokenizer
    multi = [s for s in samples if len([c for c in s.conversations if c["from"] == "gpt"]) > 1]
    for item in multi[:4]:
        seq = scorer.encoder.encode(item, n_images=len(item.images))
        counted = [seq.ids[p] for p in seq.targets]
        text = tok.decode(counted).replace(" ", "")
        want = "".join(answers(item.conversations)).replace(" ", "")
        if template == "llava_v1":  # every answer ends with </s>, counted like LLaVA's training targets
            want = "</s>".join(answers(item.conversations)).replace(" ", "") + "</s>"
        assert text == want


def _edit(item: ScoreItem, turn: int, old: str, new: str) -> ScoreItem:
    conv = [dict(c) for c in item.conversations]
    assert old in conv[turn]["value"]
    conv[turn]["value"] = conv[turn]["value"].replace(old, new, 1)
    return ScoreItem(item.sample_id, conv, list(item.images))


def test_masking_question_edit_keeps_positions_answer_edit_changes_loss(tiny_models: dict[str, Path]) -> None:
    scorer = _scorer("mllm_loss", tiny_models, template="llava_v1").load()
    item = ScoreItem(
        1,
        [
            {"from": "human", "value": "<image>\nWhat colour is the car?"},
            {"from": "gpt", "value": "The car is red."},
            {"from": "human", "value": "Where is it?"},
            {"from": "gpt", "value": "On the street."},
        ],
        [],
    )
    base = scorer.encoder.encode(item)
    q_edit = _edit(item, 0, "car", "bus")  # one question token for another
    a_edit = _edit(item, 1, "red", "blue")
    q_seq = scorer.encoder.encode(q_edit)
    assert len(q_seq.ids) == len(base.ids)
    assert q_seq.targets == base.targets
    assert [q_seq.ids[p] for p in q_seq.targets] == [base.ids[p] for p in base.targets]
    changed = [p for p in range(len(base.ids)) if q_seq.ids[p] != base.ids[p]]
    assert changed and not set(changed) & set(base.targets)  # the edit lies outside the counted positions
    loss = scorer.score_all([item])[1].metrics
    a_loss = scorer.score_all([a_edit])[1].metrics
    assert loss is not None and a_loss is not None and a_loss["loss_sum"] != loss["loss_sum"]

    # The loss of the counted tokens is exactly the model's own label-masked loss (independent code).
    ids = torch.tensor([base.ids])
    labels = torch.full_like(ids, -100)
    labels[0, base.targets] = ids[0, base.targets]
    with torch.no_grad():
        logits = scorer.model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1).gather(1, ids[0, 1:, None])[:, 0]
    mask = labels[0, 1:] != -100
    assert float(-(logp * mask).sum()) == pytest.approx(loss["loss_sum"], rel=1e-4)


def test_include_eos_counts_one_end_token_per_answer(tiny_models: dict[str, Path], samples: list[ScoreItem]) -> None:
    with_eos = _scorer("lm_loss", tiny_models).score_all(samples)
    without = _scorer("lm_loss", tiny_models, include_eos=False).score_all(samples)
    for s in samples:
        if with_eos[s.sample_id].metrics:
            n_answers = len(answers(s.conversations))
            diff = with_eos[s.sample_id].metrics["tokens"] - without[s.sample_id].metrics["tokens"]  # type: ignore[index]
            assert diff == n_answers


def test_encoder_matches_the_processor(tiny_models: dict[str, Path], samples: list[ScoreItem]) -> None:
    """Our image-token expansion gives the ids LlavaProcessor gives (the reference asserts it per sample)."""
    scorer = _scorer("mllm_loss", tiny_models).load()
    for item in samples:
        r = scorer.reference(item)
        assert r.error or r.metrics


def test_image_workers_give_the_same_results(tiny_models: dict[str, Path], samples: list[ScoreItem]) -> None:
    serial = _scorer("mllm_loss", tiny_models, batch_size=4).score_all(samples)
    parallel = _scorer("mllm_loss", tiny_models, batch_size=4, num_workers=2).score_all(samples)
    assert {k: (r.error, r.metrics) for k, r in serial.items()} == {
        k: (r.error, r.metrics) for k, r in parallel.items()
    }


def test_out_of_memory_halves_the_batch(
    tiny_models: dict[str, Path], samples: list[ScoreItem], monkeypatch: pytest.MonkeyPatch
) -> None:
    want = _scorer("mllm_loss", tiny_models, batch_size=16).score_all(samples)
    scorer = _scorer("mllm_loss", tiny_models, batch_size=16)
    calls: list[int] = []
    real = MllmLossScorer._forward

    def forward(self: MllmLossScorer, seqs: list, pixel_values: Any = None) -> Any:
        calls.append(len(seqs))
        if len(seqs) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return real(self, seqs, pixel_values)

    monkeypatch.setattr(MllmLossScorer, "_forward", forward)
    got = scorer.score_all(samples)
    assert {k: r.error for k, r in got.items()} == {k: r.error for k, r in want.items()}
    for k, r in want.items():
        if r.metrics:
            assert_close(got[k].metrics, r.metrics)  # type: ignore[arg-type]
    assert scorer.batch_size <= 3 and max(calls) == 16 and all(c <= 3 for c in calls[-5:])


def test_head_sees_answer_positions_only_in_chunks(
    tiny_models: dict[str, Path], samples: list[ScoreItem], monkeypatch: pytest.MonkeyPatch
) -> None:
    want = _scorer("lm_loss", tiny_models, batch_size=8).score_all(samples)
    scorer = _scorer("lm_loss", tiny_models, batch_size=8).load()
    vocab = scorer.head.weight.shape[0]
    monkeypatch.setattr(lm, "_LOGIT_CHUNK_ELEMENTS", 7 * vocab)  # force several head calls per batch
    rows: list[int] = []
    handle = scorer.head.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[0]))
    try:
        got = scorer.score_all(samples)
    finally:
        handle.remove()
    assert max(rows) <= 7
    total_targets = sum(r.metrics["tokens"] for r in got.values() if r.metrics)
    assert sum(rows) == total_targets  # the head ran on counted positions only, never on every token
    for k, r in want.items():
        if r.metrics:
            assert_close(got[k].metrics, r.metrics)  # type: ignore[arg-type]


def test_long_sequences_are_cut_or_rejected(tiny_models: dict[str, Path], samples: list[ScoreItem]) -> None:
    scorer = _scorer("mllm_loss", tiny_models, max_length=24, template="llava_v1")
    got = scorer.score_all(samples)
    reasons = {r.error for r in got.values() if r.error}
    assert any(e.startswith("too long") for e in reasons if e)  # 3 images * 16 tokens cannot fit
    for r in got.values():
        if r.metrics:
            assert r.metrics["tokens"] < 24
    assert _check_against_reference(scorer, samples) > 0


def test_scorers_share_the_loaded_model(tiny_models: dict[str, Path]) -> None:
    a = _scorer("lm_loss", tiny_models).load()
    b = _scorer("ifd", tiny_models, batch_size=2).load()
    assert isinstance(a, LmLossScorer) and isinstance(b, IfdScorer) and a.model is b.model


def test_a_sample_the_template_rejects_is_an_error_row(
    tiny_models: dict[str, Path], samples: list[ScoreItem], monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = _scorer("mllm_loss", tiny_models).load()
    owner = scorer.encoder.chat_owner
    real = owner.apply_chat_template
    bad = samples[0].conversations[1]["value"]

    def picky(messages: list, **kw: Any) -> Any:
        if any(bad in str(m["content"]) for m in messages):
            raise ValueError("Conversation roles must alternate user/assistant/user/assistant/...")
        return real(messages, **kw)

    monkeypatch.setattr(owner, "apply_chat_template", picky)
    got = scorer.score_all(samples[:6])
    assert got[samples[0].sample_id].error is not None
    assert got[samples[0].sample_id].error.startswith("chat template failed: Conversation roles")  # type: ignore[union-attr]
    assert all(got[s.sample_id].error is None for s in samples[1:6])
