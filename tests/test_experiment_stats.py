"""Experiment statistics on simulated results: the t-interval, the paired bootstrap's coverage of a zero effect,
its power on a real one, reproducibility, pairing, and per-type breakdowns."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backend.experiment_stats import Outcomes, arm_summary, paired_bootstrap, paired_delta, t_interval, t_quantile

ITEMS = 150


def simulate(rng: np.random.Generator, seeds: int, effect: float, seed_sd: float = 0.3) -> tuple[dict, dict]:
    """Arm and control over one suite: item difficulty shared by both, per-seed skill, Bernoulli outcomes on the
    logit scale; the arm is `effect` logits better."""
    difficulty = rng.normal(0.0, 1.5, ITEMS)
    ids = [f"i{k}" for k in range(ITEMS)]
    types = [("colour", "shape", "count")[k % 3] for k in range(ITEMS)]

    def side(theta: float) -> dict[int, Outcomes]:
        out = {}
        for s in range(seeds):
            p = 1.0 / (1.0 + np.exp(-(theta + rng.normal(0.0, seed_sd) - difficulty)))
            v = (rng.random(ITEMS) < p).astype(float)
            out[s] = Outcomes(s, float(v.mean()), ids, v.tolist(), types)
        return out

    return side(effect), side(0.0)


def test_t_interval_matches_the_textbook() -> None:
    lo, hi = t_interval([1.0, 2.0, 3.0])
    assert (lo, hi) == pytest.approx((2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)), rel=1e-4)
    assert t_quantile(1) == 12.706 and t_quantile(9) == 2.262 and t_quantile(200) == 1.96
    with pytest.raises(ValueError):
        t_interval([1.0])


def test_zero_effect_ci_covers_zero_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    runs = 200
    covered = sum(bool(paired_delta(*simulate(rng, 5, 0.0), n_boot=1000)["ci_includes_zero"]) for _ in range(runs))
    # Nominal 95%; resampling 5 seeds underestimates their spread a little, resampling items overstates it.
    assert 0.88 <= covered / runs <= 0.995, covered


def test_a_known_effect_is_detected_and_the_delta_is_reproducible() -> None:
    rng = np.random.default_rng(11)
    arm, ctrl = simulate(rng, 3, 0.8)
    d = paired_delta(arm, ctrl)
    assert d is not None and d["mean"] > 0.08 and d["ci"][0] > 0 and d["ci_includes_zero"] is False
    assert paired_delta(arm, ctrl) == d  # a fixed bootstrap seed: the same data give the same interval
    truth = np.mean([arm[s].value - ctrl[s].value for s in arm])  # type: ignore[operator]
    assert d["mean"] == pytest.approx(truth)


def test_pairing_removes_shared_item_difficulty() -> None:
    """The same per-item outcomes shifted by a constant on half the items: an unpaired CI would be as wide as the
    items' spread, the paired one is tight around the true difference."""
    ids = [str(k) for k in range(100)]
    base = np.random.default_rng(3).normal(0.0, 5.0, (3, 100))
    ctrl = {s: Outcomes(s, float(base[s].mean()), ids, base[s].tolist()) for s in range(3)}
    shifted = base + np.where(np.arange(100) < 50, 1.0, 0.0)
    arm = {s: Outcomes(s, float(shifted[s].mean()), ids, shifted[s].tolist()) for s in range(3)}
    d = paired_delta(arm, ctrl)
    assert d is not None and d["mean"] == pytest.approx(0.5) and 0.3 < d["ci"][0] < 0.5 < d["ci"][1] < 0.7


def test_bootstrap_skips_missing_items_and_seeds_without_a_pair() -> None:
    diff = np.array([[1.0, np.nan, 1.0], [np.nan, np.nan, np.nan], [1.0, 1.0, 1.0]])
    mean, (lo, hi), reps = paired_bootstrap(diff, n_boot=300)
    assert mean == 1.0 and lo == hi == 1.0 and len(reps) == 300
    ids = ["a", "b", "c"]
    arm = {0: Outcomes(0, 1.0, ids, [1, 1, 1]), 1: Outcomes(1, 1.0, ids, [1, None, 1])}
    ctrl = {0: Outcomes(0, 0.0, ids, [0, 0, 0]), 2: Outcomes(2, 0.0, ids, [0, 0, 0])}
    d = paired_delta(arm, ctrl)
    assert d is not None and d["seeds"] == [0] and d["mean"] == 1.0
    assert paired_delta(arm, {5: ctrl[0]}) is None


def test_arm_summary_shape_one_seed_and_types() -> None:
    rng = np.random.default_rng(5)
    arm, ctrl = simulate(rng, 3, 1.0)
    s = arm_summary(arm, ctrl, vs_arm_id=9)
    assert s is not None and s["ci_method"] == "t_over_seeds" and s["seeds"] == [0, 1, 2] and s["n_items"] == ITEMS
    assert s["per_seed"] == [arm[k].value for k in range(3)] and s["delta"]["vs_arm_id"] == 9
    assert set(s["by_type"]) == {"colour", "shape", "count"} and s["by_type"]["colour"]["n_items"] == ITEMS // 3
    assert s["by_type"]["colour"]["delta"]["n_items"] == ITEMS // 3
    one = arm_summary({0: arm[0]}, None, None)
    assert one is not None and one["ci_method"] == "bootstrap_items" and one["delta"] is None
    assert one["ci"][0] < one["mean"] < one["ci"][1]
    assert arm_summary({}, None, None) is None
