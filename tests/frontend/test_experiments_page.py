"""The experiments UI on fixed results: the figures (each arm beside its control, error bars over seeds, deltas
only with their CI), the verdict labels (a CI that includes 0 reads "no evidence this selection beats random"),
the jobs table, the loss curve the page collects, the launch form's request, and the marks on Explore."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from dash.development.base_component import Component

from frontend.api_client import ApiClient
from frontend.app import _page_query
from frontend.figures.experiments import (
    NO_EVIDENCE,
    arm_points,
    delta_figure,
    loss_figure,
    merge_loss_history,
    results_figure,
    suite_metrics,
    verdict,
)
from frontend.pages.experiments import panels, results
from frontend.pages.experiments.layout import chosen
from frontend.pages.explore.opened import opened_selection
from frontend.pages.launch.form import (
    CURRENT,
    arm_ref,
    experiment_body,
    parse_seeds,
    saved_match,
    suite_choices,
)
from frontend.pages.tested import saved_extras, selection_marks


def level(mean: float, ci: list[float | None], per_seed: list[float], delta: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "mean": mean,
        "ci": ci,
        "ci_method": "t_over_seeds",
        "per_seed": per_seed,
        "seeds": list(range(len(per_seed))),
        "n_items": 20,
        "delta": delta,
    }


def delta(mean: float, lo: float | None, hi: float | None, vs: int) -> dict[str, Any]:
    includes = None if lo is None or hi is None else lo <= 0 <= hi
    return {"vs_arm_id": vs, "mean": mean, "ci": [lo, hi], "ci_includes_zero": includes, "seeds": [0, 1, 2]}


# Two selection arms with their controls (ids 2 and 4), three seeds, one suite with accuracy and answer_loss.
# Arm 1: accuracy delta +0.05 with a CI that includes 0; answer_loss delta -0.30 with a CI below 0 (better).
# Arm 3: accuracy delta -0.10 with a CI below 0 (worse); answer_loss: its delta lost its CI (must not show).
EXPERIMENT: dict[str, Any] = {
    "id": 7,
    "dataset_id": 1,
    "name": "top vs random",
    "status": "running",
    "base_model": "/models/tiny-llava",
    "seeds": [0, 1, 2],
    "control": "random",
    "train_params": {"preset": "quick", "method": "full"},
    "eval_suites": [{"name": "mini", "metrics": ["accuracy", "answer_loss"], "types": ["colour", "count"]}],
    "arms": [
        {
            "id": 1,
            "kind": "selection",
            "source_id": 11,
            "control_of": None,
            "n": 40,
            "position": 0,
            "stage_sizes": [40],
            "label": "selection 11 (DIQ top)",
        },
        {
            "id": 2,
            "kind": "control",
            "source_id": 11,
            "control_of": 1,
            "n": 40,
            "position": 1,
            "stage_sizes": [40],
            "label": "control of selection 11 (DIQ top)",
        },
        {
            "id": 3,
            "kind": "selection",
            "source_id": 12,
            "control_of": None,
            "n": 40,
            "position": 2,
            "stage_sizes": [40],
            "label": "selection 12 (corner)",
        },
        {
            "id": 4,
            "kind": "control",
            "source_id": 12,
            "control_of": 3,
            "n": 40,
            "position": 3,
            "stage_sizes": [40],
            "label": "control of selection 12 (corner)",
        },
    ],
    "jobs": [
        {
            "id": 101,
            "arm_id": 1,
            "seed": 0,
            "status": "done",
            "step": 9,
            "total_steps": 9,
            "loss": 1.25,
            "samples_per_s": 40.0,
            "eta_s": 0.0,
            "error": None,
            "phase": None,
        },
        {
            "id": 102,
            "arm_id": 2,
            "seed": 0,
            "status": "running",
            "step": 4,
            "total_steps": 9,
            "loss": 2.5,
            "samples_per_s": 38.5,
            "eta_s": 12.0,
            "error": None,
            "phase": "training",
        },
        {
            "id": 103,
            "arm_id": 3,
            "seed": 0,
            "status": "failed",
            "step": 2,
            "total_steps": 9,
            "loss": None,
            "samples_per_s": None,
            "eta_s": None,
            "error": "CUDA out of memory",
            "phase": None,
        },
        {
            "id": 104,
            "arm_id": 4,
            "seed": 0,
            "status": "queued",
            "step": 0,
            "total_steps": 9,
            "loss": None,
            "samples_per_s": None,
            "eta_s": None,
            "error": None,
            "phase": None,
        },
    ],
    "results": [
        {
            "arm_id": 1,
            "suite": "mini",
            "metric": "accuracy",
            **level(0.55, [0.45, 0.65], [0.5, 0.55, 0.6], delta(0.05, -0.02, 0.11, 2)),
            "by_type": {
                "colour": level(0.7, [0.6, 0.8], [0.7, 0.7, 0.7], delta(0.2, 0.1, 0.3, 2)),
                "count": level(0.4, [0.3, 0.5], [0.4, 0.4, 0.4], delta(-0.1, -0.2, 0.05, 2)),
            },
        },
        {
            "arm_id": 2,
            "suite": "mini",
            "metric": "accuracy",
            **level(0.5, [0.42, 0.58], [0.48, 0.5, 0.52], None),
            "by_type": {},
        },
        {
            "arm_id": 3,
            "suite": "mini",
            "metric": "accuracy",
            **level(0.4, [0.35, 0.45], [0.38, 0.4, 0.42], delta(-0.1, -0.16, -0.04, 4)),
            "by_type": {},
        },
        {
            "arm_id": 4,
            "suite": "mini",
            "metric": "accuracy",
            **level(0.5, [0.44, 0.56], [0.47, 0.5, 0.53], None),
            "by_type": {},
        },
        {
            "arm_id": 1,
            "suite": "mini",
            "metric": "answer_loss",
            **level(2.0, [1.8, 2.2], [1.9, 2.0, 2.1], delta(-0.3, -0.5, -0.1, 2)),
            "by_type": {},
        },
        {
            "arm_id": 2,
            "suite": "mini",
            "metric": "answer_loss",
            **level(2.3, [2.1, 2.5], [2.2, 2.3, 2.4], None),
            "by_type": {},
        },
        {
            "arm_id": 3,
            "suite": "mini",
            "metric": "answer_loss",
            **level(2.2, [None, None], [2.2], delta(0.4, None, None, 4)),
            "by_type": {},
        },
    ],
    "contrasts": [
        {
            "arm_id": 1,
            "vs_arm_id": 3,
            "suite": "mini",
            "metric": "accuracy",
            "mean": 0.15,
            "ci": [0.05, 0.25],
            "ci_includes_zero": False,
            "seeds": [0, 1, 2],
            "n_items": 20,
            "n_boot": 2000,
            "method": "paired",
        },
    ],
}


def texts(node: Any) -> Iterator[str]:
    """Every string in a Dash component tree (children and a few readable props)."""
    if node is None:
        return
    if isinstance(node, str | int | float):
        yield str(node)
    elif isinstance(node, list | tuple):
        for n in node:
            yield from texts(n)
    elif isinstance(node, Component):
        for prop in ("children", "label", "title", "href"):
            yield from texts(getattr(node, prop, None))


def text_of(node: Any) -> str:
    return " ".join(texts(node))


def components(node: Any) -> Iterator[Component]:
    if isinstance(node, list | tuple):
        for n in node:
            yield from components(n)
    elif isinstance(node, Component):
        yield node
        yield from components(getattr(node, "children", None))


# --- verdicts: never a delta without its CI ----------------------------------------------------------------


def test_a_ci_that_includes_zero_is_no_evidence_whatever_the_mean() -> None:
    v = verdict(delta(0.05, -0.02, 0.11, 2), "accuracy")
    assert v is not None and v.includes_zero and v.better is None and v.label == NO_EVIDENCE
    assert v.text == "+0.05 [\u22120.02, +0.11]"
    # the flag wins when the API sends one; the bounds decide when it does not
    no_flag = {"mean": -0.2, "ci": [-0.4, 0.1]}
    assert verdict(no_flag, "answer_loss").label == NO_EVIDENCE  # type: ignore[union-attr]


def test_the_direction_of_a_clear_delta_follows_the_metric() -> None:
    assert verdict(delta(0.1, 0.02, 0.2, 2), "accuracy").kind == "better"  # type: ignore[union-attr]
    assert verdict(delta(-0.1, -0.2, -0.02, 2), "accuracy").kind == "worse"  # type: ignore[union-attr]
    loss = verdict(delta(-0.3, -0.5, -0.1, 2), "answer_loss")
    assert loss is not None and loss.kind == "better" and "beats random" in loss.label
    contrast = verdict({"mean": 0.1, "ci": [-0.1, 0.3]}, "accuracy", contrast=True)
    assert contrast is not None and contrast.label == "no evidence either arm is better"


@pytest.mark.parametrize(
    "bad",
    [None, {}, {"mean": 0.1}, {"mean": 0.1, "ci": [None, None]}, {"mean": 0.1, "ci": [0.0]},
     {"mean": None, "ci": [0.0, 1.0]}, {"mean": 0.1, "ci": [float("nan"), 0.2]}],
)  # fmt: skip
def test_no_verdict_without_a_whole_ci(bad: Any) -> None:
    assert verdict(bad, "accuracy") is None


# --- figures -----------------------------------------------------------------------------------------------


def test_each_arm_sits_beside_its_control_with_ci_error_bars() -> None:
    points = arm_points(EXPERIMENT, "mini", "accuracy")
    assert [(p.arm_id, p.control) for p in points] == [(1, False), (2, True), (3, False), (4, True)]
    assert points[1].label == "random control of selection #11 DIQ top"
    fig = results_figure(points, "mini", "accuracy").to_dict()
    arms, arm_seeds, controls, control_seeds = fig["data"]
    assert arms["name"] == "arm" and controls["name"] == "random control"
    assert list(arms["x"]) == ["selection #11<br>DIQ top", "selection #12<br>corner"]
    assert list(controls["x"]) == ["random control<br>of selection #11", "random control<br>of selection #12"]
    order = fig["layout"]["xaxis"]["categoryarray"]  # each control right after its arm
    assert list(order) == [arms["x"][0], controls["x"][0], arms["x"][1], controls["x"][1]]
    assert list(arms["y"]) == [0.55, 0.4]
    # asymmetric bars from the CI: mean 0.55 in [0.45, 0.65], mean 0.4 in [0.35, 0.45]
    assert arms["error_y"]["array"] == pytest.approx([0.10, 0.05])
    assert arms["error_y"]["arrayminus"] == pytest.approx([0.10, 0.05])
    assert controls["error_y"]["array"] == pytest.approx([0.08, 0.06])
    assert controls["marker"]["color"] != arms["marker"]["color"]
    assert list(arm_seeds["y"]) == [0.5, 0.55, 0.6, 0.38, 0.4, 0.42] and len(control_seeds["y"]) == 6
    assert "95% CI" in fig["layout"]["title"]["text"]


def test_the_delta_figure_shows_only_deltas_with_a_ci() -> None:
    acc = delta_figure(arm_points(EXPERIMENT, "mini", "accuracy"), "accuracy").to_dict()
    by_kind = {t["name"]: t for t in acc["data"]}
    assert set(by_kind) == {"unclear", "worse"}
    assert list(by_kind["unclear"]["y"]) == [0.05]
    assert by_kind["unclear"]["error_y"]["array"] == pytest.approx([0.06])
    assert by_kind["unclear"]["error_y"]["arrayminus"] == pytest.approx([0.07])
    assert [s["y0"] for s in acc["layout"]["shapes"]] == [0]  # the line at 0
    loss = delta_figure(arm_points(EXPERIMENT, "mini", "answer_loss"), "answer_loss").to_dict()
    shown = [x for t in loss["data"] for x in t["x"]]
    assert shown == ["selection #11<br>DIQ top"]  # arm 3's delta has no CI: left out


def test_suite_metrics_in_the_experiments_order() -> None:
    assert suite_metrics(EXPERIMENT) == [("mini", "accuracy"), ("mini", "answer_loss")]


def test_the_loss_curve_is_collected_from_polls() -> None:
    jobs = [{"id": 1, "step": 2, "loss": 3.0}, {"id": 2, "step": 0, "loss": None}]
    h = merge_loss_history(None, jobs)
    assert h == {"1": [[2, 3.0]]}
    h = merge_loss_history(h, [{"id": 1, "step": 2, "loss": 2.9}, {"id": 2, "step": 1, "loss": float("nan")}])
    assert h == {"1": [[2, 3.0]]}  # same step: kept once; a NaN loss is no point
    h = merge_loss_history(h, [{"id": 1, "step": 5, "loss": 2.0}])
    assert h == {"1": [[2, 3.0], [5, 2.0]]}
    assert (
        len(merge_loss_history({"1": [[k, 1.0] for k in range(1, 10)]}, [{"id": 1, "step": 10, "loss": 1}], 4)["1"])
        == 4
    )
    fig = loss_figure(h, {"1": "selection #3 · seed 0"}).to_dict()
    assert [t["name"] for t in fig["data"]] == ["selection #3 · seed 0"]
    assert list(fig["data"][0]["x"]) == [2, 5]
    # an arm's seeds: one colour, one legend entry
    two = {"1": [[1, 2.0]], "2": [[1, 2.1]], "3": [[1, 2.2]]}
    groups = panels.job_groups(EXPERIMENT) | {"1": "a", "2": "a", "3": "b"}
    traces = loss_figure(two, {}, groups).to_dict()["data"]
    assert [t["showlegend"] for t in traces] == [True, False, True]
    assert traces[0]["line"]["color"] == traces[1]["line"]["color"] != traces[2]["line"]["color"]
    assert panels.job_groups(EXPERIMENT)["102"] == "random control of selection #11 DIQ top"


# --- panels ------------------------------------------------------------------------------------------------


def test_the_results_view_labels_every_delta_and_shows_none_without_its_ci() -> None:
    view = results.results_view(EXPERIMENT)  # type: ignore[arg-type]
    text = text_of(view)
    assert text.count(NO_EVIDENCE) >= 1
    assert "+0.05 [\u22120.02, +0.11]" in text  # the delta with its CI
    assert "worse than random (95% CI excludes 0)" in text
    assert "beats random (95% CI excludes 0)" in text  # answer_loss: lower is better
    assert "+0.4" not in text  # arm 3's answer_loss delta has no CI: never shown
    assert "no delta yet" in text
    verdicts = [c for c in components(view) if getattr(c, "className", "") and "xp-verdict " in c.className + " "]
    kinds = [c.__dict__.get("data-verdict") for c in verdicts]
    assert kinds == ["unclear", "worse", "better", "better"]  # accuracy x2, answer_loss, the contrast
    # the arms link to their selection on Explore; the per-type breakdown and the contrasts are there
    assert "/explore?ds=1&sel=11" in text and "/explore?ds=1&sel=12" in text
    assert "per item type (2)" in text and "colour" in text and "+0.2 [+0.1, +0.3]" in text
    assert "Arms against each other" in text and "better than the other arm" in text
    graphs = [c for c in components(view) if type(c).__name__ == "Graph"]
    assert len(graphs) == 4  # two per (suite, metric)


def test_results_view_before_any_result() -> None:
    exp = {**copy.deepcopy(EXPERIMENT), "results": [], "contrasts": []}
    assert "as soon as an arm and its control" in text_of(results.results_view(exp))  # type: ignore[arg-type]
    done = {**exp, "status": "failed", "jobs": [{**j, "status": "failed"} for j in exp["jobs"]]}
    assert "no job finished" in text_of(results.results_view(done))  # type: ignore[arg-type]


def test_jobs_table_and_head() -> None:
    table = panels.jobs_table(EXPERIMENT)  # type: ignore[arg-type]
    text = text_of(table)
    assert "random control of selection #11 DIQ top · seed 0" in text
    assert "4 / 9 · training" in text and "CUDA out of memory" in text and "38.5" in text and "12 s" in text
    head = text_of(panels.head(EXPERIMENT))  # type: ignore[arg-type]
    assert ApiClient.experiment_manifest_path(7) in head and ApiClient.experiment_results_csv_path(7) in head
    assert "seeds 0, 1, 2" in head and "training quick (full)" in head
    assert panels.is_active(EXPERIMENT)
    assert not panels.is_active({**EXPERIMENT, "status": "done", "jobs": [{"status": "done"}]})
    before = panels.results_key(EXPERIMENT)
    moved = copy.deepcopy(EXPERIMENT)
    moved["jobs"][1]["step"] = 5
    assert panels.results_key(moved) == before  # progress alone does not redraw the results
    moved["jobs"][1]["status"] = "done"
    assert panels.results_key(moved) != before


def test_the_list_and_which_experiment_opens() -> None:
    older = {**EXPERIMENT, "id": 3, "name": None, "status": "done"}
    assert chosen([older, EXPERIMENT], None)["id"] == 7  # type: ignore[index, list-item]
    assert chosen([older, EXPERIMENT], "3")["id"] == 3  # type: ignore[index, list-item]
    assert chosen([older, EXPERIMENT], "99")["id"] == 7  # type: ignore[index, list-item]
    assert chosen([], "3") is None
    listing = text_of(panels.experiment_list([older, EXPERIMENT], 7, 1))  # type: ignore[list-item]
    assert listing.index("#7 top vs random") < listing.index("#3 experiment")
    assert "2 arm(s) · 3 seed(s) · 1/4 jobs done" in listing


# --- the launch form ---------------------------------------------------------------------------------------


def test_seeds_and_arms_of_the_form() -> None:
    assert parse_seeds("0, 1, 2") == [0, 1, 2]
    assert parse_seeds(" 5 7") == [5, 7]
    for bad, why in (("", "at least one"), ("0, 0", "twice"), ("1, x", "'x'"), ("-1", "'-1'"), (str(2**31), "whole")):
        with pytest.raises(ValueError, match=why):
            parse_seeds(bad)
    assert arm_ref("sel:3") == {"selection": 3} and arm_ref("cur:2") == {"curriculum": 2}
    with pytest.raises(ValueError):
        arm_ref(CURRENT)


def test_the_request_the_form_sends() -> None:
    body = experiment_body([{"selection": 3}, {"curriculum": 2}], " /m/llava ", [0, 1], ["mini"], "paper_lora", " a ")
    assert body == {
        "arms": [{"selection": 3}, {"curriculum": 2}],
        "seeds": [0, 1],
        "control": "random",
        "train": {"preset": "paper_lora"},
        "eval": {"suites": ["mini"]},
        "base_model": "/m/llava",
        "name": "a",
    }
    assert "base_model" not in experiment_body([{"selection": 3}], "", [0], ["mini"], "quick", None)
    with pytest.raises(ValueError, match="arms"):
        experiment_body([], None, [0], ["mini"], "quick", None)
    with pytest.raises(ValueError, match="eval suites"):
        experiment_body([{"selection": 3}], None, [0], [], "quick", None)


def test_the_current_selection_is_matched_to_a_saved_one() -> None:
    recipe = {"task_types": None, "exclude_errors": True, "ranges": None, "metadata": None, "x": "2:loss_sum",
              "y": "1:similarity", "region": {"type": "top", "percent": 15.0, "axes": "both"}, "sample": None,
              "resolved_axes": {}, "population": 120}  # fmt: skip
    saved = [{"id": 4, "recipe": recipe}, {"id": 9, "recipe": recipe}, {"id": 5, "recipe": {**recipe, "x": "3:t"}}]
    body = {"x": "2:loss_sum", "y": "1:similarity", "region": {"type": "top", "percent": 15, "axes": "both"}}
    assert saved_match(saved, body) == 9  # type: ignore[arg-type]  # the newest with the same recipe
    assert saved_match(saved, {**body, "task_types": ["conversation"]}) is None  # type: ignore[arg-type]
    assert saved_match(saved, {**body, "region": {"type": "top", "percent": 5, "axes": "both"}}) is None  # type: ignore[arg-type]


def test_suites_usable_ones_ticked() -> None:
    options, ticked = suite_choices(
        [
            {"name": "mini", "n_items": 20, "metrics": ["accuracy"], "types": ["a", "b"], "error": None},
            {"name": "broken", "n_items": 0, "metrics": [], "types": [], "error": "x.jsonl:3: answer: missing"},
            {"name": "lmms:pope", "n_items": 0, "metrics": ["accuracy"], "types": [], "error": None},
        ]
    )
    assert ticked == ["mini", "lmms:pope"]
    assert options[2]["label"] == "lmms:pope · accuracy"  # no item count known before it runs
    assert options[0]["label"] == "mini · 20 items · accuracy · 2 item types"
    assert options[1]["disabled"] and "x.jsonl:3" in options[1]["label"]


# --- back to the plane -------------------------------------------------------------------------------------


def test_explore_marks_tested_selections() -> None:
    marks = selection_marks([EXPERIMENT])  # type: ignore[list-item]
    assert set(marks) == {11, 12}
    assert marks[11][0].exp_id == 7 and marks[11][0].kind == "unclear"
    assert marks[11][0].summary == f"mini · accuracy: Δ +0.05 [\u22120.02, +0.11], {NO_EVIDENCE}"
    assert marks[12][0].kind == "worse"
    extras = saved_extras(1, 11, marks)
    text = text_of(extras)
    assert "/explore?ds=1&sel=11" in text and "/experiments?ds=1&exp=7" in text and NO_EVIDENCE in text
    assert "experiment" not in text_of(saved_extras(1, 13, marks))  # untested: only "open on the plane"


class FakeSelections:
    def __init__(self, sel: dict[str, Any]) -> None:
        self.sel = sel

    def selection(self, sel: int) -> dict[str, Any]:
        if sel != self.sel["id"]:
            from frontend.api_shapes import ApiError

            raise ApiError("selection not found", status=404)
        return self.sel


class FakeCtx:
    def __init__(self, sel: dict[str, Any]) -> None:
        self.api = FakeSelections(sel)


def test_a_saved_selection_opens_on_its_plane() -> None:
    sel = {"id": 5, "dataset_id": 1, "name": "corner",
           "recipe": {"x": "loss", "y": "1:similarity", "region": {"type": "grid", "n": 3, "cell": [2, 2]},
                      "task_types": ["conversation"],
                      "resolved_axes": {"x": {"axis": "2:loss_sum"}, "y": {"axis": "1:similarity"}}}}  # fmt: skip
    options = [{"value": "1:similarity", "label": "clip"}, {"value": "2:loss_sum", "label": "loss"}]
    ctx: Any = FakeCtx(sel)
    opened = opened_selection(ctx, 1, {"sel": "5"}, options)
    assert opened is not None and (opened.x, opened.y) == ("2:loss_sum", "1:similarity")
    assert opened.region == {"region": {"type": "grid", "n": 3, "cell": [2, 2]}, "label": "Saved #5 corner",
                             "source": "saved"}  # fmt: skip
    assert opened.task_types == ["conversation"]
    assert opened_selection(ctx, 2, {"sel": "5"}, options) is None  # another dataset's
    assert opened_selection(ctx, 1, {"sel": "6"}, options) is None  # unknown
    assert opened_selection(ctx, 1, {}, options) is None
    assert opened_selection(ctx, 1, {"sel": "5"}, options[:1]) is None  # its axes are not on offer


def test_the_address_keeps_the_pages_own_parameters() -> None:
    assert _page_query("?ds=1&sel=5") == {"sel": "5"}
    assert _page_query("?ds=1&exp=3&sel=x&other=2") == {"exp": "3"}
    assert _page_query(None) == {}


def test_fixed_results_are_plain_json() -> None:
    json.dumps(EXPERIMENT)  # the fixture is what the API sends: plain JSON


def test_a_saved_selection_on_transformed_axes_opens_with_them() -> None:
    sel = {"id": 5, "dataset_id": 1, "name": "per type",
           "recipe": {"x": "loss@type_rank", "y": "1:similarity@log", "region": {"type": "box", "x": [0.9, None]},
                      "resolved_axes": {"x": {"axis": "2:loss_sum@type_rank"}, "y": {"axis": "1:similarity@log"}}}}  # fmt: skip
    options = [{"value": "1:similarity", "label": "clip"}, {"value": "2:loss_sum", "label": "loss"}]
    opened = opened_selection(FakeCtx(sel), 1, {"sel": "5"}, options)  # type: ignore[arg-type]
    assert opened is not None and (opened.x, opened.y) == ("2:loss_sum@type_rank", "1:similarity@log")
    sel["recipe"]["resolved_axes"] = {"x": {"axis": "2:loss_sum@zzz"}, "y": {"axis": "1:similarity"}}  # type: ignore[index]
    assert opened_selection(FakeCtx(sel), 1, {"sel": "5"}, options) is None  # type: ignore[arg-type]
