"""Statistics of an experiment's results, pure numpy: per arm mean over seeds with a 95% CI, and the delta
against its control (or another arm) with a paired bootstrap CI over eval items and seeds.

Inputs are per-item outcomes: for one (arm, suite, metric), each seed's job gives a value per eval item
(1/0 for accuracy, nats for answer loss; None where the item could not be scored) and the job's metric.

- **Mean and CI of an arm**: the mean over seeds of the per-seed metric, with a 95% Student-t interval over
  seeds (``ci_method: "t_over_seeds"``: mean +- t(0.975, n-1) * sd / sqrt(n)). With a single seed there is no
  spread over seeds to measure, so the interval is a percentile bootstrap over items (``"bootstrap_items"``).
- **Delta** (arm minus control, or arm a minus arm b): a *paired* bootstrap. Items are paired by id, seeds by
  value; each replicate draws seeds with replacement and items with replacement, and applies the *same* draw to
  both sides (so item difficulty and seed luck cancel where they are shared). Per seed, the difference of the
  means over the paired, scored items; averaged over the drawn seeds. The 95% interval is the 2.5 and 97.5
  percentiles of ``N_BOOT`` replicates from a fixed generator (``BOOT_SEED``): the same results give the same
  interval every time. The point estimate is the same statistic on the data as observed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BOOT_SEED",
    "N_BOOT",
    "Outcomes",
    "arm_summary",
    "paired_bootstrap",
    "paired_delta",
    "t_interval",
    "t_quantile",
]

N_BOOT = 2000
BOOT_SEED = 20_240_701
LEVEL = 0.95
_BLOCK = 250  # replicates per matrix product (bounds memory on large suites)

# t(0.975, df) for df = 1..30; above, the normal quantile is within 1.5%.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Outcomes:
    """One job's per-item values for one (suite, metric)."""

    seed: int
    value: float | None  # the job's metric (the mean over its scored items)
    ids: Sequence[str]
    values: Sequence[float | None]
    types: Sequence[str | None] | None = None


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError("df must be >= 1")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """95% t-interval of the mean of `values` (at least two)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        raise ValueError("a t-interval needs at least two values")
    half = t_quantile(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    m = float(v.mean())
    return m - half, m + half


def _matrix(by_seed: Mapping[int, Outcomes], seeds: Sequence[int], ids: Sequence[str]) -> Floats:
    """(seeds x items) values, NaN where an item has no value."""
    out = np.full((len(seeds), len(ids)), np.nan)
    col = {k: j for j, k in enumerate(ids)}
    for r, s in enumerate(seeds):
        o = by_seed[s]
        for k, v in zip(o.ids, o.values, strict=True):
            j = col.get(k)
            if j is not None and v is not None and math.isfinite(v):
                out[r, j] = v
    return out


def _item_ids(sides: Sequence[Mapping[int, Outcomes]], seeds: Sequence[int], keep: set[str] | None) -> list[str]:
    """Ids present in every job of every side (in the first job's order), optionally only those in `keep`."""
    first = sides[0][seeds[0]].ids
    common = set(first)
    for side in sides:
        for s in seeds:
            common &= set(side[s].ids)
    return [k for k in first if k in common and (keep is None or k in keep)]


def _percentiles(x: Floats) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(x, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return float(lo), float(hi)


def paired_bootstrap(
    diff: Floats, n_boot: int = N_BOOT, seed: int = BOOT_SEED
) -> tuple[float, tuple[float, float], Floats]:
    """(estimate, 95% percentile CI, replicates) of the mean over seeds of each seed's mean item difference.

    ``diff`` is (seeds x items), NaN where a pair is missing. Each replicate resamples rows and columns with
    replacement (multinomial counts as weights, so a replicate is two matrix products).
    """
    mask = np.isfinite(diff)
    d0 = np.where(mask, diff, 0.0)
    m0 = mask.astype(np.float64)
    n_seeds, n_items = diff.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        per_seed = d0.sum(1) / m0.sum(1)
    estimate = float(np.nanmean(per_seed)) if np.isfinite(per_seed).any() else math.nan
    rng = np.random.Generator(np.random.PCG64(seed))
    reps: list[Floats] = []
    for start in range(0, n_boot, _BLOCK):
        b = min(_BLOCK, n_boot - start)
        w_items = rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=b).astype(np.float64)
        w_seeds = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=b).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            seed_means = (w_items @ d0.T) / (w_items @ m0.T)  # (b x seeds)
        ok = np.isfinite(seed_means)
        weights = np.where(ok, w_seeds, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps.append((np.where(ok, seed_means, 0.0) * weights).sum(1) / weights.sum(1))
    replicates = np.concatenate(reps) if reps else np.empty(0)
    return estimate, _percentiles(replicates), replicates


def paired_delta(
    a: Mapping[int, Outcomes], b: Mapping[int, Outcomes], type_: str | None = None, n_boot: int = N_BOOT
) -> dict[str, Any] | None:
    """a minus b over the seeds both have, items paired by id (of one item type when `type_` is given);
    None when they share no seed or no item."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    keep = None
    if type_ is not None:
        keep = {k for s in seeds for k, t in zip(a[s].ids, a[s].types or (), strict=False) if t == type_}
    ids = _item_ids([a, b], seeds, keep)
    if not ids:
        return None
    diff = _matrix(a, seeds, ids) - _matrix(b, seeds, ids)
    mean, (lo, hi), _ = paired_bootstrap(diff, n_boot=n_boot)
    if not math.isfinite(mean):
        return None
    return {
        "mean": mean,
        "ci": [lo, hi],
        "ci_includes_zero": bool(lo <= 0.0 <= hi),
        "seeds": seeds,
        "n_items": len(ids),
        "n_boot": n_boot,
        "method": "paired_bootstrap_items_and_seeds",
    }


def _seed_values(by_seed: Mapping[int, Outcomes], seeds: Sequence[int], type_: str | None) -> list[float]:
    """Each seed's metric: the job's own, or for one item type the mean of that type's items."""
    out = []
    for s in seeds:
        o = by_seed[s]
        if type_ is None and o.value is not None:
            out.append(float(o.value))
            continue
        types = o.types or [None] * len(o.values)
        vals = [v for v, t in zip(o.values, types, strict=True) if v is not None and (type_ is None or t == type_)]
        out.append(float(np.mean(vals)) if vals else math.nan)
    return out


def _level(by_seed: Mapping[int, Outcomes], type_: str | None) -> dict[str, Any] | None:
    seeds = sorted(by_seed)
    if not seeds:
        return None
    values = _seed_values(by_seed, seeds, type_)
    kept = [(s, v) for s, v in zip(seeds, values, strict=True) if math.isfinite(v)]
    if not kept:
        return None
    seeds, values = [s for s, _ in kept], [v for _, v in kept]
    mean = float(np.mean(values))
    if len(values) >= 2:
        lo, hi = t_interval(values)
        method = "t_over_seeds"
    else:
        only = by_seed[seeds[0]]
        types = only.types or [None] * len(only.values)
        items = np.array(
            [v for v, t in zip(only.values, types, strict=True) if v is not None and (type_ is None or t == type_)],
            dtype=np.float64,
        )
        _, (lo, hi), _ = paired_bootstrap(items[None, :])
        method = "bootstrap_items"
    o = by_seed[seeds[0]]
    types = o.types or [None] * len(o.values)
    n_items = sum(v is not None and (type_ is None or t == type_) for v, t in zip(o.values, types, strict=True))
    return {"mean": mean, "ci": [lo, hi], "ci_method": method, "per_seed": values, "seeds": seeds, "n_items": n_items}


def arm_summary(
    by_seed: Mapping[int, Outcomes], control: Mapping[int, Outcomes] | None, vs_arm_id: int | None
) -> dict[str, Any] | None:
    """Mean, CI and per-seed values of one (arm, suite, metric), its delta against `control` (when given), and
    the same per item type (``by_type``) when the suite's items have types. None when no job has a value."""
    top = _level(by_seed, None)
    if top is None:
        return None
    top["delta"] = None
    if control:
        d = paired_delta(by_seed, control)
        top["delta"] = None if d is None else {"vs_arm_id": vs_arm_id, **d}
    types = sorted({t for o in by_seed.values() for t in (o.types or ()) if t is not None})
    by_type: dict[str, Any] = {}
    for t in types:
        level = _level(by_seed, t)
        if level is None:
            continue
        level["delta"] = None
        if control:
            d = paired_delta(by_seed, control, type_=t)
            level["delta"] = None if d is None else {"vs_arm_id": vs_arm_id, **d}
        by_type[t] = level
    top["by_type"] = by_type
    return top
