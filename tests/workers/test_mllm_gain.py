"""mllm_loss's optional metrics (image_gain, question_gain): batched == per-sample reference, the changed prompts
spelled out, the same answer tokens counted, masking, identities, samples without an image."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from backend.scorer_specs import ScoreItem, ScoreResult
from tests.workers.conftest import assert_close
from workers.scorers import mllm_gain
from workers.scorers.base import answers
from workers.scorers.conversation import without_questions
from workers.scorers.mllm_gain import NO_IMAGE, NO_QUESTION, gain_result, no_question_item
from workers.scorers.registry import build_scorer

BOTH = {"image_gain": True, "question_gain": True}


def _scorer(models: dict[str, Path], **params: Any) -> Any:
    return build_scorer("mllm_loss", {"model": str(models["llava"]), "num_workers": 0, **params}, device="cpu")


def _item(images: list[str], sample_id: int = 1) -> ScoreItem:
    return ScoreItem(
        sample_id,
        [
            {"from": "human", "value": "<image>\nWhat colour is the car?"},
            {"from": "gpt", "value": "The car is red."},
            {"from": "human", "value": "Where is it?"},
            {"from": "gpt", "value": "On the street."},
        ],
        images,
    )


def _check_against_reference(scorer: Any, samples: list[ScoreItem]) -> dict[int, ScoreResult]:
    got = scorer.score_all(samples)
    assert sorted(got) == sorted(s.sample_id for s in samples)
    for item in samples:
        want = scorer.reference(item)
        g = got[item.sample_id]
        assert (g.error, g.omitted) == (want.error, want.omitted), (item.sample_id, g, want)
        if want.metrics is not None:
            assert g.metrics is not None and set(g.metrics) == set(want.metrics)
            assert_close({k: v for k, v in g.metrics.items() if k != "image_gain"},
                         {k: v for k, v in want.metrics.items() if k != "image_gain"})
            if "image_gain" in want.metrics:
                # A difference of two losses (each within 1e-4 relative) is within 1e-4 of their sum.
                a, b = want.metrics["loss_no_image"], want.metrics["loss_mean"]
                assert math.isclose(g.metrics["image_gain"], want.metrics["image_gain"], rel_tol=0,
                                    abs_tol=1e-4 * (abs(a) + abs(b)))
    return got


@pytest.mark.parametrize(
    "params",
    [
        {"batch_size": 5, **BOTH},
        {"batch_size": 64, "template": "llava_v1", **BOTH},
        {"batch_size": 3, "include_eos": False, "image_gain": True},
        {"batch_size": 4, "num_workers": 2, "question_gain": True},
    ],
)
def test_batched_equals_reference(tiny_models: dict[str, Path], samples: list[ScoreItem], params: dict) -> None:
    scorer = _scorer(tiny_models, **params)
    got = _check_against_reference(scorer, samples)
    ok = [s for s in samples if got[s.sample_id].error is None]
    assert len(ok) == len(samples) - 4  # the same samples fail as without the options
    wanted = (NO_IMAGE if params.get("image_gain") else ()) + (NO_QUESTION if params.get("question_gain") else ())
    assert scorer.metrics == ("loss_sum", "loss_mean", "tokens", "perplexity", *wanted)
    for s in ok:
        r = got[s.sample_id]
        assert r.metrics is not None
        if s.images:  # every extra metric present
            assert r.omitted is None and set(wanted) <= set(r.metrics)
        else:  # text-only: scored, the image metrics omitted with the reason, the question ones kept
            assert r.error is None and set(NO_QUESTION) & set(wanted) <= set(r.metrics)
            if params.get("image_gain"):
                assert r.omitted == dict.fromkeys(NO_IMAGE, "no image")
                assert not set(NO_IMAGE) & set(r.metrics)


def test_options_leave_the_base_metrics_alone(tiny_models: dict[str, Path], samples: list[ScoreItem]) -> None:
    base = _scorer(tiny_models, batch_size=4).score_all(samples)
    gain = _scorer(tiny_models, batch_size=4, **BOTH).score_all(samples)
    n = 0
    for k, r in base.items():
        assert gain[k].error == r.error
        if r.metrics:
            assert_close({m: gain[k].metrics[m] for m in r.metrics}, r.metrics)  # type: ignore[index]
            m = gain[k].metrics
            assert m is not None
            assert m["mifd"] == pytest.approx(m["loss_mean"] / m["loss_no_question"], rel=1e-12)
            if "image_gain" in m:
                assert m["image_gain"] == pytest.approx(m["loss_no_image"] - m["loss_mean"], rel=1e-9, abs=1e-12)
                n += 1
    assert n == 25  # every scored sample that has an image


def test_the_changed_prompts_spelled_out(tiny_models: dict[str, Path], image_dir: Path) -> None:
    """The explicit prompts (LLaVA-1.5 format) and the counted tokens of each: the answers, nothing else."""
    scorer = _scorer(tiny_models, template="llava_v1", **BOTH).load()
    item = _item([str(image_dir / "img0.jpg")])
    enc = scorer.encoder
    assert enc.render(item.conversations, 1)[0] == (
        "USER: <image>\nWhat colour is the car? ASSISTANT: The car is red.</s>USER: Where is it? "
        "ASSISTANT: On the street.</s>"
    )
    no_image = (
        "USER: What colour is the car? ASSISTANT: The car is red.</s>USER: Where is it? ASSISTANT: On the street.</s>"
    )
    assert enc.render(item.conversations, 0)[0] == no_image
    assert enc.render(without_questions(item.conversations), 1)[0] == (
        "USER: <image>\n ASSISTANT: The car is red.</s>USER:  ASSISTANT: On the street.</s>"
    )
    seq = scorer._encode(item)
    v = scorer.prepare(seq).variants
    assert v is not None and v.no_image is not None and v.no_question is not None and not v.omitted
    want = "</s>".join(answers(item.conversations)).replace(" ", "") + "</s>"
    for s in (seq, v.no_image, v.no_question):
        assert enc.tokenizer.decode([s.ids[p] for p in s.targets]).replace(" ", "") == want
    assert v.no_image.ids == enc.tokenizer(no_image)["input_ids"]  # exactly that prompt, no image token
    assert v.no_question.ids.count(enc.image_token_id) == enc.n_image_tokens == seq.ids.count(enc.image_token_id)


def test_masking(tiny_models: dict[str, Path], image_dir: Path) -> None:
    """A question edit moves loss_mean but not loss_no_question; an image swap moves loss_mean but not
    loss_no_image; loss_no_image is the model's own label-masked loss on the text-only prompt."""
    scorer = _scorer(tiny_models, template="llava_v1", **BOTH).load()
    item = _item([str(image_dir / "img0.jpg")])
    base = scorer.score_all([item])[1].metrics
    conv = [dict(c) for c in item.conversations]
    conv[0]["value"] = conv[0]["value"].replace("car", "bus")
    q_edit = scorer.score_all([ScoreItem(1, conv, item.images)])[1].metrics
    i_edit = scorer.score_all([_item([str(image_dir / "img1.jpg")])])[1].metrics
    assert base is not None and q_edit is not None and i_edit is not None
    assert q_edit["loss_mean"] != base["loss_mean"] and q_edit["loss_no_question"] == base["loss_no_question"]
    assert i_edit["loss_mean"] != base["loss_mean"] and i_edit["loss_no_image"] == base["loss_no_image"]
    assert i_edit["loss_no_question"] != base["loss_no_question"]  # the image is still read there

    seq = scorer.encoder.encode(item, n_images=0)
    ids = torch.tensor([seq.ids])
    with torch.no_grad():
        logits = scorer.model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1).gather(1, ids[0, 1:, None])[:, 0]
    counted = torch.zeros(len(seq.ids) - 1, dtype=torch.bool)
    counted[[p - 1 for p in seq.targets]] = True
    assert float(-(logp * counted).sum() / counted.sum()) == pytest.approx(base["loss_no_image"], rel=1e-4)


def test_a_cut_sequence_counts_the_same_tokens(tiny_models: dict[str, Path], samples: list[ScoreItem]) -> None:
    scorer = _scorer(tiny_models, max_length=40, template="llava_v1", **BOTH)
    got = _check_against_reference(scorer, samples)
    cut = 0
    for s in samples:
        r = got[s.sample_id]
        if r.metrics is None or not s.images:
            continue
        seq = scorer._encode(s)
        v = scorer.prepare(seq).variants
        assert [v.no_image.ids[p] for p in v.no_image.targets] == [seq.ids[p] for p in seq.targets]
        assert [v.no_question.ids[p] for p in v.no_question.targets] == [seq.ids[p] for p in seq.targets]
        full = scorer.encoder.encode(no_question_item(s), n_images=len(s.images))
        cut += len(full.targets) > len(seq.targets)
    assert cut > 0  # some samples really were cut, and their changed prompts counted no extra token


def test_a_refused_changed_prompt_omits_its_metrics_only(
    tiny_models: dict[str, Path], samples: list[ScoreItem], monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = _scorer(tiny_models, **BOTH).load()
    owner = scorer.encoder.chat_owner
    real = owner.apply_chat_template

    def picky(messages: list, **kw: Any) -> Any:
        if any(m["role"] == "user" and m["content"][-1]["text"] == "" for m in messages):
            raise ValueError("empty user message")
        return real(messages, **kw)

    monkeypatch.setattr(owner, "apply_chat_template", picky)
    got = scorer.score_all(samples[:6])
    for s in samples[:6]:
        r = got[s.sample_id]
        assert r.error is None and r.metrics is not None and "image_gain" in r.metrics and "mifd" not in r.metrics
        assert r.omitted == dict.fromkeys(NO_QUESTION, "without the questions: chat template failed: empty user message")


def test_zero_loss_without_questions_omits_mifd() -> None:
    r = gain_result(7, (-2.0, 4), (-3.0, 4), (0.0, 4), {})
    assert r.error is None and r.metrics is not None
    assert r.metrics["image_gain"] == pytest.approx(0.25) and r.metrics["loss_no_question"] == 0.0
    assert "mifd" not in r.metrics and r.omitted and "mifd" in r.omitted
    assert all(math.isfinite(v) for v in r.metrics.values())


def test_the_shared_prefix_is_read_once_and_changes_nothing(
    tiny_models: dict[str, Path], samples: list[ScoreItem], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of image-first samples read the common prefix (BOS, role marker, the image tokens) once for the
    full prompts and those without the questions; the results still equal the reference."""
    first = [s for s in samples[:22] if s.conversations[0]["value"].startswith("<image>")]
    scorer = _scorer(tiny_models, batch_size=4, **BOTH)
    monkeypatch.setattr(mllm_gain, "SHARE_MIN_FRACTION", 0.0)  # the tiny model's prefix is short: share anyway
    prefixes: list[int] = []
    real = type(scorer)._forward_shared

    def spy(self: Any, rows: list, others: list, prefix: int) -> Any:
        prefixes.append(prefix)
        assert all(s.ids[:prefix] == o.ids[:prefix] for (s, _), o in zip(rows, others, strict=True))
        return real(self, rows, others, prefix)

    monkeypatch.setattr(type(scorer), "_forward_shared", spy)
    got = _check_against_reference(scorer, first)
    n_image = scorer.encoder.n_image_tokens
    assert len(prefixes) == -(-len(first) // 4) and min(prefixes) > n_image  # every batch shared its prefix
    assert all(got[s.sample_id].omitted is None for s in first)
    # mixed with text-only samples (a short common prefix, the images after it): the separate passes, same results
    prefixes.clear()
    _check_against_reference(scorer, [first[0], *[s for s in samples if not s.images][:3]])
    assert prefixes == []
    # by default a prefix this short (a fifth of the prompts) is not worth the extra model call
    monkeypatch.undo()
    monkeypatch.setattr(type(scorer), "_forward_shared", spy)
    long_answers = [s for s in first if len(s.conversations[1]["value"]) > 300]
    assert long_answers
    _check_against_reference(scorer, long_answers)
    assert prefixes == []
