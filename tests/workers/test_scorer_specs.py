"""Scorer specs: schemas, validation, and the scorer key (stable, param- and checkpoint-sensitive)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from backend import scorer_specs
from backend.scorer_specs import (
    ScoreItem,
    ScoreResult,
    list_specs,
    metrics_for,
    path_content_hash,
    runtime_fields,
    scorer_key,
    validate_params,
)


def test_specs_list_every_kind_with_schema_metrics_and_main_metric() -> None:
    specs = {s["kind"]: s for s in list_specs()}
    assert set(specs) == {"clip", "mllm_loss", "lm_loss", "ifd", "length"}
    main = {k: s["main_metric"] for k, s in specs.items()}
    assert main == {
        "clip": "similarity",
        "mllm_loss": "loss_sum",
        "lm_loss": "loss_sum",
        "ifd": "ifd",
        "length": "tokens",
    }
    for s in specs.values():
        assert s["main_metric"] in s["metrics"]
        assert "model" in s["params_schema"]["properties"]
    assert specs["mllm_loss"]["metrics"] == ["loss_sum", "loss_mean", "tokens", "perplexity"]
    assert specs["clip"]["needs_image"] is True
    assert specs["clip"]["params_schema"]["properties"]["batch_size"]["runtime"] is True


def test_documented_defaults() -> None:
    clip = validate_params("clip", {})
    assert clip["model"] == "ViT-L-14-336" and clip["pretrained"] == "openai"
    assert (clip["text"], clip["long_text"], clip["scale"]) == ("answers", "truncate", "cosine")
    assert validate_params("mllm_loss", {})["model"] == "llava-hf/llava-1.5-7b-hf"
    assert validate_params("lm_loss", {})["model"] == "gpt2"
    assert validate_params("ifd", {})["model"] == "gpt2"
    assert validate_params("length", {})["model"] is None


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("clip", {"text": "captions"}, "text"),
        ("clip", {"scale": "x1000"}, "scale"),
        ("clip", {"long_text": "all"}, "long_text"),
        ("clip", {"batch_size": 0}, "batch_size"),
        ("clip", {"colour": "red"}, "colour"),
        ("mllm_loss", {"max_length": 2}, "max_length"),
        ("lm_loss", {"template": "alpaca"}, "template"),
        ("nope", {}, "kind"),
    ],
)
def test_validate_params_names_the_bad_field(kind: str, params: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        validate_params(kind, params)


def test_key_is_stable_and_ignores_order_defaults_and_runtime_knobs() -> None:
    k = scorer_key("clip", {})
    assert k == scorer_key("clip", {"scale": "cosine", "text": "answers", "model": "ViT-L-14-336"})
    assert k == scorer_key("clip", {"batch_size": 1, "num_workers": 7})
    assert len(k) == 64 and int(k, 16) >= 0
    assert runtime_fields("clip") == {"batch_size", "num_workers"}
    assert runtime_fields("mllm_loss") == {"batch_size", "num_workers"}
    assert runtime_fields("lm_loss") == runtime_fields("ifd") == {"batch_size", "num_workers"}
    assert scorer_key("lm_loss", {}) != scorer_key("ifd", {})  # same params, different kind


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        (
            "clip",
            [
                {"model": "ViT-B-32"},
                {"pretrained": "laion2b_s34b_b79k"},
                {"text": "conversation"},
                {"text": "first_turn"},
                {"text": "questions"},
                {"long_text": "chunks"},
                {"scale": "x100"},
            ],
        ),
        (
            "mllm_loss",
            [
                {"model": "x/y"},
                {"template": "llava_v1"},
                {"include_eos": False},
                {"max_length": 64},
                {"image_gain": True},
                {"question_gain": True},
                {"image_gain": True, "question_gain": True},
            ],
        ),
        ("lm_loss", [{"model": "gpt2-medium"}, {"template": "llava_v1"}, {"include_eos": False}, {"max_length": 9}]),
        ("length", [{"model": "gpt2"}]),
    ],
)
def test_key_changes_with_every_param(kind: str, changes: list[dict]) -> None:
    keys = {scorer_key(kind, {})} | {scorer_key(kind, c) for c in changes}
    assert len(keys) == len(changes) + 1


def test_options_added_later_leave_existing_keys_alone() -> None:
    # The keys mllm_loss runs had before image_gain / question_gain existed (computed then).
    assert scorer_key("mllm_loss", {}) == "455818c1f5335e90b2169d71f2f3ebae75c18bbba60aa984f6fb08b6212d8d33"
    assert scorer_key("mllm_loss", {"image_gain": False, "question_gain": False}) == scorer_key("mllm_loss", {})
    assert (
        scorer_key("mllm_loss", {"template": "llava_v1", "max_length": 64, "question_gain": False})
        == "86e7d585d83808af84b7837c9db4a703d4421fd7e901b42c8c53a32292703ccb"
    )


def test_optional_metrics_follow_the_params() -> None:
    base = ("loss_sum", "loss_mean", "tokens", "perplexity")
    assert metrics_for("mllm_loss", {}) == base
    assert metrics_for("mllm_loss", {"image_gain": True}) == (*base, "loss_no_image", "image_gain")
    assert metrics_for("mllm_loss", {"question_gain": True, "image_gain": True}) == (
        *base, "loss_no_image", "image_gain", "loss_no_question", "mifd"
    )
    spec = {s["kind"]: s for s in list_specs()}
    assert spec["mllm_loss"]["optional_metrics"] == {
        "image_gain": ["loss_no_image", "image_gain"],
        "question_gain": ["loss_no_question", "mifd"],
    }
    assert spec["clip"]["optional_metrics"] == {}
    with pytest.raises(ValueError, match="image_gain"):
        metrics_for("mllm_loss", {"image_gain": "sometimes"})


def test_key_follows_local_checkpoint_content_not_its_path(tmp_path: Path) -> None:
    ckpt = tmp_path / "a" / "ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text('{"n": 1}')
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 1000)
    k1 = scorer_key("lm_loss", {"model": str(ckpt)})
    assert k1 == scorer_key("lm_loss", {"model": str(ckpt), "batch_size": 3})
    assert k1 != scorer_key("lm_loss", {"model": "gpt2"})

    (ckpt / "model.safetensors").write_bytes(b"\x00" * 999 + b"\x01")  # same size, other bytes
    k2 = scorer_key("lm_loss", {"model": str(ckpt)})
    assert k2 != k1
    (ckpt / "extra.txt").write_text("x")  # a new file
    k3 = scorer_key("lm_loss", {"model": str(ckpt)})
    assert k3 not in (k1, k2)
    (ckpt / "extra.txt").unlink()
    assert scorer_key("lm_loss", {"model": str(ckpt)}) == k2  # back to the same content

    moved = tmp_path / "b" / "elsewhere"
    moved.parent.mkdir()
    ckpt.rename(moved)
    assert scorer_key("lm_loss", {"model": str(moved)}) == k2


def test_key_covers_clip_weights_file(tmp_path: Path) -> None:
    w = tmp_path / "weights.pt"
    w.write_bytes(b"abc")
    k1 = scorer_key("clip", {"model": "ViT-B-32", "pretrained": str(w)})
    w.write_bytes(b"abd")
    assert scorer_key("clip", {"model": "ViT-B-32", "pretrained": str(w)}) != k1


def test_content_hash_is_cached_by_mtime_and_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "w.bin").write_bytes(b"x" * 10)
    h = path_content_hash(tmp_path)

    def no_reads(*a: object, **k: object) -> None:
        raise AssertionError("re-read a file whose mtime and size did not change")

    monkeypatch.setattr(scorer_specs, "open", no_reads, raising=False)
    assert path_content_hash(tmp_path) == h
    monkeypatch.undo()
    (tmp_path / "w.bin").write_bytes(b"y" * 10)
    assert path_content_hash(tmp_path) != h


def test_local_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    assert validate_params("lm_loss", {"model": "m"})["model"] == str(tmp_path / "m")
    assert validate_params("lm_loss", {"model": "gpt2"})["model"] == "gpt2"


def test_dataclasses() -> None:
    item = ScoreItem(1, [{"from": "human", "value": "q"}], [])
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.sample_id = 2  # type: ignore[misc]
    assert ScoreResult(1, None, "no image").error == "no image"
    assert ScoreResult(1, {"loss_sum": 1.0}, None).omitted is None


def test_module_is_torch_free() -> None:
    code = (
        "import sys, backend.scorer_specs as s; s.list_specs(); s.scorer_key('clip', {}); "
        "bad = {'torch', 'open_clip', 'transformers'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
