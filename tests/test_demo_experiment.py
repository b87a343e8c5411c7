"""The demo's experiment, its pure parts: arm sizes, the curriculum's thresholds, and the table it prints (on fixed
results). The served run itself is tested in tests/test_demo.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from qspace.demo.experiment import arm_size, curriculum_builder, plane_axes, result_table, verdict


def test_plane_axes_are_the_papers_loss_and_clip() -> None:
    assert plane_axes({"clip": 4, "mllm_loss": 7}) == ("7:loss_sum", "4:similarity")


def test_arms_are_a_tenth_of_the_dataset() -> None:
    assert arm_size(3000) == 300
    assert arm_size(1000) == 100
    assert arm_size(10) == 3  # at least one sample per curriculum stage


def test_curriculum_starts_at_the_20_percent_quantiles_and_narrows_to_the_60_percent_ones() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=1000), rng.uniform(size=1000)
    x[:5] = np.nan  # unscored samples do not move the thresholds
    b = curriculum_builder(x, y, 300)
    qx, qy = np.quantile(x[5:], [0.2, 0.6]), np.quantile(y[5:], [0.2, 0.6])
    assert b["x_min"] == pytest.approx(qx[0]) and b["y_min"] == pytest.approx(qy[0])
    assert b["x_min"] + 3 * b["dx"] == pytest.approx(qx[1]) and b["y_min"] + 3 * b["dy"] == pytest.approx(qy[1])
    assert (b["stages"], b["per_stage"], b["seed"]) == (3, 100, 0)


def test_verdict_reads_the_ci() -> None:
    assert verdict([0.01, 0.2]) == "better than random"
    assert verdict([-0.2, -0.01]) == "worse than random"
    assert verdict([-0.05, 0.1]) == "no evidence it beats random (CI includes 0)"
    assert verdict([0.0, 0.1]).startswith("no evidence")  # a CI touching 0 includes it
    assert verdict([None, None]).startswith("no CI")


def _result(arm: int, mean: float, ci: list[float], delta: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"arm_id": arm, "suite": "s", "metric": "accuracy", "mean": mean, "ci": ci, "delta": delta}


def test_result_table_puts_each_pick_beside_its_control_with_the_delta_and_its_ci() -> None:
    exp = {
        "id": 9,
        "seeds": [0, 1, 2],
        "arms": [
            {"id": 1, "kind": "selection", "label": "selection 3 (DIQ top 10%)", "n": 300},
            {"id": 2, "kind": "control", "label": "control of selection 3", "n": 300},
            {"id": 3, "kind": "curriculum", "label": "curriculum 1 (paper)", "n": 300},
            {"id": 4, "kind": "control", "label": "control of curriculum 1", "n": 300},
        ],
        "results": [
            _result(1, 0.41, [0.38, 0.44], {"vs_arm_id": 2, "mean": -0.05, "ci": [-0.08, -0.02]}),
            _result(2, 0.46, [0.43, 0.49]),
            _result(3, 0.47, [0.44, 0.50], {"vs_arm_id": 4, "mean": 0.01, "ci": [-0.02, 0.04]}),
            _result(4, 0.46, [0.42, 0.50]),
            {**_result(1, 1.5, [1.4, 1.6]), "metric": "answer_loss"},  # another metric: not in this table
        ],
    }
    table = result_table(exp)
    lines = table.splitlines()
    assert lines[0].startswith("experiment 9: accuracy (%)") and "[95% CI]" in lines[0]
    diq, cur = lines[2], lines[3]
    assert len(lines) == 4  # one row per pick; controls sit beside their pick, not on rows of their own
    assert diq.startswith("selection 3 (DIQ top 10%)") and " 300 " in diq
    assert " 41.0 [ 38.0, 44.0]" in diq and " 46.0 [ 43.0, 49.0]" in diq
    assert " -5.0 [ -8.0, -2.0]" in diq and diq.endswith("worse than random")
    assert " +1.0 [ -2.0, +4.0]" in cur and cur.endswith("no evidence it beats random (CI includes 0)")


def test_result_table_without_results_says_so() -> None:
    exp = {"id": 1, "seeds": [0], "arms": [], "results": []}
    assert result_table(exp).endswith("(no results)")
