"""CLIP scorer: batched == per-sample reference, text/long-text/scale options, per-sample errors."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from backend.scorer_specs import ScoreItem
from tests.workers.conftest import assert_close
from workers.scorers.base import load_image, select_text
from workers.scorers.clip import ClipScorer, clip_text_tokens, device_jpeg_decoder, jpeg_bytes
from workers.scorers.registry import build_scorer


def _clip(models: dict[str, Path], **params: object) -> ClipScorer:
    scorer = build_scorer("clip", {"model": str(models["clip"]), "num_workers": 0, **params}, device="cpu")
    assert isinstance(scorer, ClipScorer)
    return scorer


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"text": "conversation", "long_text": "chunks"},
        {"text": "first_turn", "scale": "x100"},
        {"text": "questions", "batch_size": 5},
    ],
)
def test_batched_equals_reference(tiny_models: dict[str, Path], samples: list[ScoreItem], params: dict) -> None:
    scorer = _clip(tiny_models, **{"batch_size": 7, **params})
    got = scorer.score_all(samples)
    assert sorted(got) == sorted(s.sample_id for s in samples)  # one result per sample
    n_ok = 0
    for item in samples:
        want = scorer.reference(item)
        assert got[item.sample_id].error == want.error, item.sample_id
        if want.metrics is not None:
            assert got[item.sample_id].metrics is not None
            assert_close(got[item.sample_id].metrics, want.metrics)  # type: ignore[arg-type]
            n_ok += 1
    assert n_ok >= 25
    assert scorer.samples == len(samples) and scorer.errors == len(samples) - n_ok
    assert scorer.seconds > 0 and scorer.samples_per_s > 0


def test_errors_are_rows_and_the_batch_goes_on(tiny_models: dict[str, Path], samples: list[ScoreItem]) -> None:
    got = _clip(tiny_models, batch_size=64).score_all(samples)
    errors = {r.error for r in got.values() if r.error}
    assert "no image" in errors and "empty answer" in errors
    assert any(e.startswith("image missing: ") and e.endswith("missing.jpg") for e in errors)
    assert any(e.startswith("image unreadable: ") and "truncated.jpg" in e for e in errors)
    assert any(e.startswith("image unreadable: ") and "notanimage.jpg" in e for e in errors)
    text_only = [s.sample_id for s in samples if not s.images]
    assert all(got[i].error == "no image" for i in text_only)
    ok = [r for r in got.values() if r.error is None]
    assert len(ok) == len(samples) - len(text_only) - 4
    assert all(r.metrics is not None and -1 <= r.metrics["similarity"] <= 1 for r in ok)


def test_scale_and_chunks(tiny_models: dict[str, Path], samples: list[ScoreItem]) -> None:
    base = _clip(tiny_models).score_all(samples)
    x100 = _clip(tiny_models, scale="x100").score_all(samples)
    chunks = _clip(tiny_models, long_text="chunks").score_all(samples)
    tok = _clip(tiny_models).load().tokenizer
    n_long = 0
    for s in samples:
        b = base[s.sample_id].metrics
        if b is None:
            continue
        assert x100[s.sample_id].metrics["similarity"] == pytest.approx(100 * b["similarity"], rel=1e-5)  # type: ignore[index]
        windows = len(clip_text_tokens(tok, select_text(s.conversations, "answers"), "chunks"))
        same = chunks[s.sample_id].metrics["similarity"] == pytest.approx(b["similarity"], rel=1e-5)  # type: ignore[index]
        assert same == (windows == 1), s.sample_id  # one window = CLIP's truncation exactly
        n_long += windows > 1
    assert n_long >= 3


def test_chunk_windows_cover_the_text(tiny_models: dict[str, Path]) -> None:
    tok = _clip(tiny_models).load().tokenizer
    text = " ".join(["red car"] * 100)  # 200 BPE tokens
    rows = clip_text_tokens(tok, text, "chunks")
    assert rows.shape == (3, 77)
    assert (rows[:, 0] == tok.sot_token_id).all()
    assert int((rows != 0).sum()) == 200 + 2 * 3
    assert (clip_text_tokens(tok, text, "truncate")[0] == rows[0]).all()


def test_multi_image_is_the_mean_over_images(tiny_models: dict[str, Path], samples: list[ScoreItem]) -> None:
    scorer = _clip(tiny_models)
    multi = next(s for s in samples if len(s.images) == 3)
    singles = [ScoreItem(1 + i, multi.conversations, [p]) for i, p in enumerate(multi.images)]
    each = [scorer.reference(s).metrics["similarity"] for s in singles]  # type: ignore[index]
    got = scorer.score_all([multi])[multi.sample_id].metrics["similarity"]  # type: ignore[index]
    assert got == pytest.approx(sum(each) / 3, rel=1e-5)


def test_image_workers_give_the_same_results(tiny_models: dict[str, Path], samples: list[ScoreItem]) -> None:
    serial = _clip(tiny_models, batch_size=4).score_all(samples)
    parallel = _clip(tiny_models, batch_size=4, num_workers=2).score_all(samples)
    assert {k: (r.error, r.metrics) for k, r in serial.items()} == {
        k: (r.error, r.metrics) for k, r in parallel.items()
    }


def test_model_is_loaded_once_per_process(tiny_models: dict[str, Path]) -> None:
    a = _clip(tiny_models).load()
    b = _clip(tiny_models, text="questions", batch_size=3).load()
    assert a.model is b.model


def test_device_side_normalisation_is_the_open_clip_transform(tiny_models: dict[str, Path], image_dir: Path) -> None:
    scorer = _clip(tiny_models).load()
    assert scorer.mean is not None and scorer.std is not None  # uint8 crosses the process boundary
    assert scorer.trim_text  # and text batches are cut to their longest row
    for path in sorted(image_dir.glob("img*")):
        im = load_image(str(path))
        host = scorer.host_transform(im)
        assert host.dtype == torch.uint8
        finished = ((host[None].float().div(255) - scorer.mean) / scorer.std)[0]
        assert torch.equal(finished, scorer.preprocess(im))


def _host_jpeg_decoder(fail_batches: bool) -> Any:
    """A host stand-in for nvJPEG (file bytes -> RGB uint8 CHW) to drive the device-decode path on a CPU;
    ``fail_batches``: a call with several streams raises, as nvJPEG does when one stream is bad."""

    def decode(data: list[torch.Tensor]) -> list[torch.Tensor]:
        if fail_batches and len(data) > 1:
            raise RuntimeError("nvjpeg: batch failed")
        out = []
        for d in data:
            with Image.open(io.BytesIO(d.numpy().tobytes())) as im:
                out.append(torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1))
        return out

    return decode


@pytest.mark.parametrize(("image_path", "fail_batches"), [("device_resize", False), ("nvjpeg", False),
                                                          ("nvjpeg", True)])
def test_device_image_paths(
    tiny_models: dict[str, Path], samples: list[ScoreItem], image_path: str, fail_batches: bool
) -> None:
    """The CUDA image paths, run on the CPU: the device resizes (tensor resize: within a grey level of PIL's)
    and, for "nvjpeg", decodes JPEG bytes (here a host stand-in for nvJPEG). PNGs, truncated and non-image
    files take the PIL path, so the error rows stay the same."""
    pil = _clip(tiny_models, batch_size=6).score_all(samples)
    scorer = _clip(tiny_models, batch_size=6).load()
    assert scorer.image_path == "host" and scorer.device_decode is None  # CPU defaults
    scorer.image_path = image_path
    if image_path == "nvjpeg":
        scorer.device_decode = _host_jpeg_decoder(fail_batches)
    first = scorer.prepare(next(s for s in samples if s.images and s.images[0].endswith(".jpg")))
    assert first.pending == ["jpeg" if image_path == "nvjpeg" else "hwc"]
    got = scorer.score_all(samples)
    assert {k: r.error for k, r in got.items()} == {k: r.error for k, r in pil.items()}
    for k, r in pil.items():
        if r.metrics is not None:
            assert got[k].metrics is not None
            assert got[k].metrics["similarity"] == pytest.approx(r.metrics["similarity"], abs=0.02)  # type: ignore[index]
    scorer.image_path = "host"
    again = scorer.score_all(samples)
    assert {k: r.metrics for k, r in again.items()} == {k: r.metrics for k, r in pil.items()}


def test_jpeg_bytes_only_for_whole_rgb_or_grey_jpegs(image_dir: Path) -> None:
    assert jpeg_bytes(str(image_dir / "img0.jpg")) is not None
    assert jpeg_bytes(str(image_dir / "img3.png")) is None
    assert jpeg_bytes(str(image_dir / "truncated.jpg")) is None  # no end-of-image marker: PIL names the error
    assert jpeg_bytes(str(image_dir / "notanimage.jpg")) is None
    assert jpeg_bytes(str(image_dir / "missing.jpg")) is None
    assert device_jpeg_decoder(torch.device("cpu")) is None


def _shared_image_samples(folder: Path) -> list[ScoreItem]:
    """Many questions about few files: each readable image is asked about 4-6 times (one sample with
    two of them), a truncated file twice; the first sample to show img1 has an empty answer (it fails
    before decoding, so a later sample embeds img1 itself)."""
    rng = random.Random(3)
    for i in range(3):
        im = Image.new("RGB", (40 + 8 * i, 48), (40 * i, 200 - 50 * i, 90))
        im.paste((250, 250, 250), (4 * i, 6, 4 * i + 12, 20))
        im.save(folder / f"shared{i}.jpg", quality=90)
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buf, format="JPEG")
    (folder / "shared_truncated.jpg").write_bytes(buf.getvalue()[:200])
    paths = [str(folder / f"shared{i}.jpg") for i in range(3)]
    items = [ScoreItem(0, [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": " "}], [paths[1]])]
    for k in range(1, 16):
        answer = " ".join(rng.choice(["red", "a", "square", "on", "grey", "ground", "large"]) for _ in range(k))
        conv = [{"from": "human", "value": "<image>\nDescribe it."}, {"from": "gpt", "value": answer}]
        images = [paths[k % 3]] if k % 5 else [paths[0], paths[2]]
        if k in (4, 11):
            images = [str(folder / "shared_truncated.jpg")]
        items.append(ScoreItem(k, conv, images))
    return items


def test_an_image_shown_by_several_samples_is_embedded_once(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """Samples that show the same file reuse its embedding, within a batch, across batches and across
    calls; results equal the per-sample reference, error rows included."""
    items = _shared_image_samples(tmp_path)
    scorer = _clip(tiny_models, batch_size=2).load()  # 8 batches
    rows: list[int] = []
    scorer.model.visual.register_forward_hook(lambda _m, args, _out: rows.append(int(args[0].shape[0])))
    got = scorer.score_all(items)
    # Each readable file once: shared0 and shared2 in a batch, shared1 alone after its first sample failed.
    # The truncated file is tried by both its samples and never reaches the model.
    assert sum(rows) == 3
    rows.clear()
    assert scorer.score_all(items) == got and rows == []  # a second call: every embedding from the cache
    for item in items:
        want = scorer.reference(item)
        assert got[item.sample_id].error == want.error, item.sample_id
        if want.metrics is not None:
            assert_close(got[item.sample_id].metrics, want.metrics)  # type: ignore[arg-type]
    assert got[0].error == "empty answer"
    assert got[4].error is not None and "shared_truncated.jpg" in got[4].error and got[11].error == got[4].error
    assert sum(r.error is None for r in got.values()) == 13


def test_a_changed_file_is_embedded_again(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    items = _shared_image_samples(tmp_path)[1:4]
    scorer = _clip(tiny_models, batch_size=2)
    first = scorer.score_all(items)
    path = Path(items[0].images[0])
    Image.new("RGB", (30, 30), (0, 0, 255)).save(path, quality=90)  # new content, size and time
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = scorer.score_all(items)
    assert second[items[0].sample_id].metrics != first[items[0].sample_id].metrics
    assert_close(second[items[0].sample_id].metrics, scorer.reference(items[0]).metrics)  # type: ignore[arg-type]
