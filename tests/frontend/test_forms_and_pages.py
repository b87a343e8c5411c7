"""Pure helpers of the pages: scorer forms, axes, selection bodies, the curriculum builder, caching."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from backend.scorer_specs import list_specs
from frontend.api_client import ApiError, Points
from frontend.context import PointsCache, mask_for
from frontend.forms import form_fields, params_from_form
from frontend.pages import axes, curriculum, explore


def spec(kind: str) -> dict[str, Any]:
    return next(s for s in list_specs() if s["kind"] == kind)


def test_form_fields_from_the_real_scorer_schemas() -> None:
    fields = {f.name: f for f in form_fields(spec("clip")["params_schema"])}
    assert next(iter(fields)) == "model"
    assert fields["text"].kind == "enum" and "answers" in fields["text"].choices
    assert fields["pretrained"].nullable and fields["pretrained"].default == "openai"
    assert fields["batch_size"].runtime and fields["batch_size"].kind == "integer"
    assert not fields["model"].runtime
    mllm = {f.name: f for f in form_fields(spec("mllm_loss")["params_schema"])}
    assert mllm["include_eos"].kind == "boolean" and mllm["max_length"].nullable


def test_params_from_form() -> None:
    fields = form_fields(spec("clip")["params_schema"])
    params = params_from_form(
        fields, {"model": " ViT-B-32 ", "pretrained": "", "text": "answers", "batch_size": 32.0, "bogus": 1}
    )
    assert params == {"model": "ViT-B-32", "pretrained": None, "text": "answers", "batch_size": 32}
    with pytest.raises(ValueError, match="batch_size"):
        params_from_form(fields, {"batch_size": 2.5})
    with pytest.raises(ValueError, match="text: choose one of"):
        params_from_form(fields, {"text": "everything"})
    mllm = form_fields(spec("mllm_loss")["params_schema"])
    assert params_from_form(mllm, {"include_eos": "false", "max_length": None}) == {
        "include_eos": False,
        "max_length": None,
    }
    assert params_from_form(mllm, {"model": ""}) == {}  # not nullable: the server's default applies


AXES = [
    {"axis": "1:similarity", "run_id": 1, "kind": "clip", "metric": "similarity", "label": "clip similarity (run 1)",
     "status": "done"},
    {"axis": "2:loss_sum", "run_id": 2, "kind": "mllm_loss", "metric": "loss_sum", "label": "mllm_loss loss_sum (run 2)",
     "status": "done"},
    {"axis": "2:tokens", "run_id": 2, "kind": "mllm_loss", "metric": "tokens", "label": "mllm_loss tokens (run 2)",
     "status": "done"},
    {"axis": "4:similarity", "run_id": 4, "kind": "clip", "metric": "similarity", "label": "clip similarity (run 4)",
     "status": "running"},
]  # fmt: skip


def test_axis_choices_and_defaults() -> None:
    options, labels, shortcut = axes.axis_choices(AXES)  # type: ignore[arg-type]
    assert [o["value"] for o in options] == ["1:similarity", "2:loss_sum", "2:tokens"]  # unfinished run left out
    assert shortcut == {"clip": "1:similarity", "loss": "2:loss_sum"}
    assert labels["2:tokens"] == "mllm_loss tokens (run 2)"
    assert axes.default_axes(options, shortcut) == ("2:loss_sum", "1:similarity")
    # No CLIP run: the first other axes fill in.
    opts, _, sc = axes.axis_choices(AXES[1:3])  # type: ignore[arg-type]
    assert axes.default_axes(opts, sc) == ("2:loss_sum", "2:tokens")
    # An API that lists its shortcuts too.
    with_short = [*AXES, {"axis": "clip", "run_id": 1, "metric": "similarity", "label": "clip"}]
    assert axes.axis_choices(with_short)[2]["clip"] == "1:similarity"  # type: ignore[arg-type]


def test_selection_body() -> None:
    setup = {"task_types": ["a", "b"], "meta_fields": {"defect": ["none", "swapped", True]}}
    region = {"region": {"type": "polygon", "points": [[0, 0], [1, 0], [1, 1]]}, "label": "Lasso"}
    body = explore.selection_body(setup, "2:loss_sum", "1:similarity", region, ["a", "b"], "task_type", None)
    assert body == {"x": "2:loss_sum", "y": "1:similarity", "region": region["region"]}
    body = explore.selection_body(setup, "x", "y", None, ["b"], "meta:defect", ["swapped", "True"])
    assert body["region"] == {"type": "all"} and body["task_types"] == ["b"]
    assert body["metadata"] == {"defect": ["swapped", True]}  # the server's own values, not their strings
    body = explore.selection_body(setup, "x", "y", None, ["a", "b"], "meta:defect", ["none", "swapped", "True"])
    assert "metadata" not in body  # every value kept: no filter


def test_builder_body_validation() -> None:
    b = curriculum.builder_body("3", "", 0.25, 1.5, "0.01", 2400, None)
    assert b == {"stages": 3, "dx": 1.5, "dy": 0.01, "per_stage": 2400, "seed": 0, "y_min": 0.25}
    with pytest.raises(ValueError, match="stages"):
        curriculum.builder_body(0, None, None, 1, 1, 10, 0)
    with pytest.raises(ValueError, match="per stage"):
        curriculum.builder_body(3, None, None, 1, 1, 2.5, 0)
    d = curriculum.builder_defaults(np.arange(100.0), np.arange(100.0) / 100)
    assert d["x_min"] == pytest.approx(19.8) and d["dx"] == pytest.approx(19.8)  # q20, (q60 - q20) / 2
    assert curriculum.round_sig(0.0123456) == 0.0123


class FakeApi:
    def __init__(self, offset_supported: bool) -> None:
        self.offset_supported = offset_supported
        self.calls: list[tuple[int, int]] = []

    def preview(self, ds: int, body: dict[str, Any], limit: int = 12, offset: int = 0, token: str | None = None) -> Any:
        self.calls.append((limit, offset))
        if offset and not self.offset_supported:
            raise ApiError("body.offset: Extra inputs are not permitted", status=422)
        items = [{"id": i} for i in range(offset, min(offset + limit, 500))]
        return {"count": 500, "items": items, "total": 500}


def test_preview_pages_with_and_without_offset() -> None:
    ctx: Any = type("Ctx", (), {})()
    ctx.api = FakeApi(True)
    assert [i["id"] for i in explore.preview_page(ctx, 1, {}, 2, None)["items"]] == list(range(24, 36))
    ctx.api = FakeApi(False)
    page = explore.preview_page(ctx, 1, {}, 2, None)
    assert [i["id"] for i in page["items"]] == list(range(24, 36))
    assert ctx.api.calls[-1] == (36, 0)
    with pytest.raises(ApiError, match="save the selection"):
        explore.preview_page(ctx, 1, {}, 40, None)


def points(n: int = 6) -> Points:
    return Points(
        ids=np.arange(n, dtype=np.int32),
        x=np.arange(n, dtype=np.float32),
        y=np.arange(n, dtype=np.float32),
        task_type=(np.arange(n) % 3).astype(np.int8),
        task_types=["a", "b", "c"],
        color=(np.arange(n) % 2).astype(np.int16),
        color_categories=["none", "bad"],
    )


def test_mask_for() -> None:
    p = points()
    assert mask_for(p, ["a", "b", "c"]) is None
    assert mask_for(p, ["a"]).tolist() == [True, False, False, True, False, False]  # type: ignore[union-attr]
    assert mask_for(p, None, ["bad"]).tolist() == [False, True] * 3  # type: ignore[union-attr]
    both = mask_for(p, ["a", "b"], ["none"])
    assert both is not None and both.tolist() == [True, False, False, False, True, False]


def test_points_cache_fetches_once_per_key_even_when_asked_concurrently() -> None:
    calls: list[tuple[Any, ...]] = []

    def fetch(ds: int, x: str, y: str, c: str | None) -> Points:
        calls.append((ds, x, y, c))
        time.sleep(0.05)
        return points()

    cache = PointsCache(fetch, size=2, ttl=60)
    threads = [threading.Thread(target=cache.get, args=(1, "x", "y")) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [(1, "x", "y", None)]
    cache.get(1, "x", "y", "meta:defect")
    cache.get(2, "x", "y")
    cache.get(1, "x", "y")  # evicted by the two newer keys
    assert len(calls) == 4
    expired = PointsCache(fetch, ttl=0.0)
    expired.get(1, "x", "y")
    expired.get(1, "x", "y")
    assert len(calls) == 6


def test_points_cache_forgets_a_deleted_datasets_planes() -> None:
    calls: list[int] = []

    def fetch(ds: int, x: str, y: str, c: str | None) -> Points:
        calls.append(ds)
        return points()

    cache = PointsCache(fetch, size=4, ttl=60)
    cache.get(1, "x", "y")
    cache.get(2, "x", "y")
    cache.drop_dataset(1)  # SQLite may give the next dataset id 1 again: it must not get the old plane
    cache.get(1, "x", "y")
    cache.get(2, "x", "y")
    assert calls == [1, 2, 1]


def test_axis_scales() -> None:
    from frontend.pages.explore.query import axis_label, axis_scale, scaled_axis, scaled_options

    assert axis_scale("2:loss_sum@log") == "log" and axis_scale("2:loss_sum") == "" and axis_scale(None) == ""
    assert axis_scale("2:loss_sum@log@type_z") == ""  # a chain this page does not offer: shown as is
    assert scaled_axis("2:loss_sum", "type_rank") == "2:loss_sum@type_rank"
    assert scaled_axis("2:loss_sum@type_rank", "log") == "2:loss_sum@log" and scaled_axis("2:loss_sum@log", "") == "2:loss_sum"
    labels = {"2:loss_sum": "mllm_loss loss_sum (run 2)"}
    assert axis_label(labels, "2:loss_sum@type_z") == "mllm_loss loss_sum (run 2) · z in type"
    assert axis_label(labels, "2:loss_sum") == "mllm_loss loss_sum (run 2)"
    options = [{"label": "clip", "value": "1:similarity"}, {"label": "loss", "value": "2:loss_sum"}]
    assert scaled_options(options, "log") == [
        {"label": "clip · log", "value": "1:similarity@log"},
        {"label": "loss · log", "value": "2:loss_sum@log"},
    ]
    assert scaled_options(options, "") == options


def test_the_scale_choice_rewrites_the_axis_dropdown() -> None:
    """The explore page's scale radio, through the real app: the x dropdown's options and value follow it."""
    from frontend.app import create_app

    app = create_app("http://127.0.0.1:9")
    try:
        options = [{"label": "clip", "value": "1:similarity"}, {"label": "loss", "value": "2:loss_sum"}]
        body = {
            "output": "..explore-x.options...explore-x.value..",
            "outputs": [{"id": "explore-x", "property": "options"}, {"id": "explore-x", "property": "value"}],
            "inputs": [{"id": "explore-x-scale", "property": "value", "value": "type_rank"}],
            "state": [
                {"id": "explore-x", "property": "value", "value": "2:loss_sum@log"},
                {"id": "explore-setup", "property": "data", "value": {"ds": 1, "axis_options": options}},
            ],
            "changedPropIds": ["explore-x-scale.value"],
        }
        got = app.server.test_client().post("/_dash-update-component", json=body).get_json()["response"]
        assert got["explore-x"]["value"] == "2:loss_sum@type_rank"
        assert [o["value"] for o in got["explore-x"]["options"]] == ["1:similarity@type_rank", "2:loss_sum@type_rank"]
    finally:
        app.server.config["QSPACE_UI_CONTEXT"].api.close()
