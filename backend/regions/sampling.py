"""Reproducible random draws and the paper's staged curriculum builder."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from backend.regions.arrays import IntArray, population, unique_sorted, xy


def _draw(candidates: IntArray, n: int, rng: np.random.Generator) -> IntArray:
    # Random-priority sampling: each candidate gets a uniform key, the n smallest keys win. With
    # candidates sorted, the result depends only on the set, n and the stream, and a smaller n with
    # the same seed gives a subset of a larger one.
    if n >= candidates.size:
        return candidates.copy()
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    keys = rng.random(candidates.size)
    return np.sort(candidates[np.argpartition(keys, n - 1)[:n]])


def _rng(seed: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.Generator(np.random.PCG64(int(seed)))


def sample_indices(indices: npt.ArrayLike, n: int, seed: int) -> IntArray:
    """``n`` of ``indices`` uniformly at random without replacement, reproducible from ``seed``; sorted.

    Input order and duplicates do not matter (the set is used); ``n >= len`` returns them all.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    cand = unique_sorted(np.asarray(indices, dtype=np.int64))
    return _draw(cand, n, _rng(seed))


def balanced_counts(sizes: npt.ArrayLike, n: int, mode: str) -> IntArray:
    """How many points to draw from each group (cluster) of ``sizes`` points, ``n`` in all (capped at the total).

    - ``proportional``: largest remainder (Hamilton): each group gets ``floor(n * size / total)``, and the
      points left over go one each to the groups with the largest fractional parts (ties: the lower group);
      no group gets more than it has, since ``n <= total``.
    - ``uniform``: water-filling: every group gets ``min(size, L)`` for the largest level ``L`` that keeps
      the total within ``n``, and the few points still missing go one each to the first groups (in group
      order) with more than ``L`` points. So a group too small for its even share gives all it has, and the
      shares of the others differ by at most one.
    """
    sz = np.asarray(sizes, dtype=np.int64)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if (sz < 0).any():
        raise ValueError("group sizes must be >= 0")
    total = int(sz.sum())
    n = min(n, total)
    out = np.zeros(sz.size, dtype=np.int64)
    if n == 0:
        return out
    if mode == "proportional":
        exact = sz * n  # integer arithmetic: floor and remainders are exact
        out = exact // total
        rem = exact - out * total
        left = n - int(out.sum())
        order = np.lexsort((np.arange(sz.size), -rem))  # largest remainder first, then the lower group
        out[order[:left]] += 1
        return out
    if mode != "uniform":
        raise ValueError(f"mode must be 'proportional' or 'uniform', got {mode!r}")
    # Water level: the largest L with sum(min(size, L)) <= n; then one more each to the first groups that
    # still have points, for what is left (fewer than the number of such groups, by the choice of L).
    lo, hi = 0, int(sz.max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int(np.minimum(sz, mid).sum()) <= n:
            lo = mid
        else:
            hi = mid - 1
    out = np.minimum(sz, lo)
    left = n - int(out.sum())
    out[np.flatnonzero(sz > lo)[:left]] += 1
    return out


def balanced_indices(indices: npt.ArrayLike, groups: npt.ArrayLike, n: int, seed: int, mode: str) -> IntArray:
    """``n`` of ``indices`` spread over their ``groups`` (one label per index; a negative label = no group,
    never drawn) by :func:`balanced_counts`, each group's share drawn as :func:`sample_indices` draws, from one
    PCG64(seed) stream in group order; sorted. Same inputs and seed, same result."""
    idx = np.asarray(indices, dtype=np.int64)
    lab = np.asarray(groups, dtype=np.int64)
    if idx.shape != lab.shape:
        raise ValueError(f"indices {idx.shape} and groups {lab.shape} differ in shape")
    keep = lab >= 0
    idx, lab = idx[keep], lab[keep]
    if idx.size == 0:
        return np.empty(0, dtype=np.int64)
    uniq, inverse = np.unique(lab, return_inverse=True)
    sizes = np.bincount(inverse, minlength=uniq.size)
    counts = balanced_counts(sizes, n, mode)
    rng = _rng(seed)
    out = [_draw(unique_sorted(idx[inverse == g]), int(c), rng) for g, c in enumerate(counts)]
    return np.sort(np.concatenate(out)) if out else np.empty(0, dtype=np.int64)


def curriculum_stages(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    eligible: npt.ArrayLike | None,
    stages: int,
    x_min: float | None,
    y_min: float | None,
    dx: float,
    dy: float,
    per_stage: int,
    seed: int,
    disjoint: bool = True,
) -> list[IntArray]:
    """The paper's builder: stage k keeps ``x >= x_min + k*dx and y >= y_min + k*dy`` (k from 0).

    Candidates are eligible points with finite x and y; ``x_min``/``y_min`` default to their minima.
    Each stage draws ``per_stage`` of its candidates (all if fewer) from one PCG64(seed) stream, stages in
    order; with ``disjoint`` a point drawn earlier is no longer a candidate. Returns sorted indices.
    """
    xa, ya = (a.astype(np.float64, copy=False) for a in xy(x, y))
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    if per_stage < 0:
        raise ValueError(f"per_stage must be >= 0, got {per_stage}")
    for name, v in (("dx", dx), ("dy", dy), ("x_min", x_min), ("y_min", y_min)):
        if v is not None and not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
    base = population(xa, ya)
    if eligible is not None:
        el = np.asarray(eligible, dtype=bool)
        if el.shape != xa.shape:
            raise ValueError(f"eligible has shape {el.shape}, expected {xa.shape}")
        base &= el
    rng = _rng(seed)
    out: list[IntArray] = []
    if not base.any():
        return [np.empty(0, dtype=np.int64) for _ in range(stages)]
    x0 = float(xa[base].min()) if x_min is None else float(x_min)
    y0 = float(ya[base].min()) if y_min is None else float(y_min)
    free = base.copy()
    for k in range(stages):
        keep = free & (xa >= x0 + k * dx) & (ya >= y0 + k * dy)
        drawn = _draw(np.flatnonzero(keep).astype(np.int64), per_stage, rng)
        out.append(drawn)
        if disjoint:
            free[drawn] = False
    return out
