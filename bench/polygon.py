"""Benchmark: lasso selection and quantile regions over 1,000,000 synthetic points.

Times ``backend.regions.points_in_polygon`` (numba, after JIT warm-up) for 64- and 1,000-vertex
lasso-like polygons against a plain vectorised NumPy crossing-number baseline run in the same process,
checks both give the same points, and times ``region_mask`` for grid / top / quantiles / box.

    .venv/bin/python bench/polygon.py [--n 1000000] [--reps 30] [--baseline-reps 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import numba
import numpy as np

from backend.regions import points_in_polygon, region_mask


def synthetic_points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(loss, CLIP)-like cloud: loss log-normal, CLIP score normal and mildly correlated with it."""
    rng = np.random.default_rng(seed)
    loss = rng.lognormal(mean=1.5, sigma=0.6, size=n)
    clip = 0.28 + 0.04 * rng.standard_normal(n) + 0.004 * (loss - loss.mean())
    return loss.astype(np.float32), clip.astype(np.float32)


def lasso(k: int, x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """A hand-drawn-looking closed lasso of ``k`` vertices: wobbly, concave in places, inside the cloud."""
    rng = np.random.default_rng(seed)
    theta = np.sort(rng.uniform(0.0, 2 * np.pi, k))
    r = np.ones(k)
    for m in range(2, 7):  # a few low harmonics make lobes and dents
        r += rng.uniform(0.0, 0.25 / m * 2) * np.cos(m * theta + rng.uniform(0, 2 * np.pi))
    r *= 1.0 + 0.01 * rng.standard_normal(k)  # hand jitter
    cx, cy = np.median(x), np.median(y)
    sx, sy = 0.8 * np.std(x), 1.2 * np.std(y)
    return np.c_[cx + sx * r * np.cos(theta), cy + sy * r * np.sin(theta)]


def numpy_crossing(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Baseline: the classic even-odd test, one vectorised pass over all points per edge."""
    px = x.astype(np.float64)
    py = y.astype(np.float64)
    inside = np.zeros(px.shape, dtype=bool)
    xa, ya = poly[:, 0], poly[:, 1]
    xb, yb = np.roll(xa, -1), np.roll(ya, -1)
    for x0, y0, x1, y1 in zip(xa, ya, xb, yb, strict=True):
        if y0 == y1:
            continue
        spans = (y0 > py) != (y1 > py)
        x_cross = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= spans & (px < x_cross)
    return inside


def timeit(fn: Callable[[], object], reps: int) -> tuple[float, float, object]:
    times = []
    out: object = None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--baseline-reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    x, y = synthetic_points(args.n, args.seed)
    t = time.perf_counter()
    points_in_polygon(x[:10], y[:10], lasso(8, x, y, 1))
    warm_ms = (time.perf_counter() - t) * 1e3

    rows: list[str] = []
    ok = True
    for k in (64, 1000):
        poly = lasso(k, x, y, args.seed + k)
        p50, p95, mask = timeit(lambda poly=poly: points_in_polygon(x, y, poly), args.reps)
        b50, _, ref = timeit(lambda poly=poly: numpy_crossing(x, y, poly), args.baseline_reps)
        assert isinstance(mask, np.ndarray) and isinstance(ref, np.ndarray)
        diff = int(np.count_nonzero(mask != ref))
        ok &= diff == 0
        rows.append(
            f"| points_in_polygon, {k} vertices | {p50:.1f} | {p95:.1f} | {b50:.0f} | {b50 / p50:.0f}x "
            f"| {int(mask.sum()):,} | {'equal' if diff == 0 else f'{diff} DIFFER'} |"
        )
        region = {"type": "polygon", "points": poly.tolist()}
        p50, p95, m = timeit(lambda region=region: region_mask(region, x, y), args.reps)
        assert isinstance(m, np.ndarray)
        rows.append(f"| region_mask polygon, {k} vertices | {p50:.1f} | {p95:.1f} | | | {int(m.sum()):,} | |")

    regions = {
        "grid 3x3 cell [2, 2]": {"type": "grid", "n": 3, "cell": [2, 2]},
        "top 5% x (DIL)": {"type": "top", "percent": 5, "axes": "x"},
        "top 5% both (DIQ)": {"type": "top", "percent": 5, "axes": "both"},
        "quantiles x [0.9, 1], y [0.9, 1]": {"type": "quantiles", "x": [0.9, 1], "y": [0.9, 1]},
        "box": {"type": "box", "x": [4.0, None], "y": [0.3, 0.35]},
    }
    for name, region in regions.items():
        p50, p95, m = timeit(lambda region=region: region_mask(region, x, y), max(5, args.reps // 3))
        assert isinstance(m, np.ndarray)
        rows.append(f"| region_mask {name} | {p50:.1f} | {p95:.1f} | | | {int(m.sum()):,} | |")

    print(f"`{' '.join([sys.executable.split('/work/main/')[-1], *sys.argv])}`")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"\n{args.n:,} points (float32), numba {numba.__version__} with {numba.get_num_threads()} threads "
        f"({numba.threading_layer()}), {os.cpu_count()} CPUs, load average {load}; first call (JIT or cache "
        f"load) {warm_ms:.0f} ms; reps {args.reps}, baseline {args.baseline_reps}.\n"
    )
    print("| case | p50 ms | p95 ms | numpy baseline p50 ms | speed-up | selected | check |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
