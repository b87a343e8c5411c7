"""The paper's curriculum builder as a form: its defaults from the plane, its request body from the fields."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def round_sig(v: float, sig: int = 3) -> float:
    """`v` to `sig` significant digits (defaults a person can read in the form)."""
    if v == 0 or not math.isfinite(v):
        return 0.0 if not math.isfinite(v) else v
    return round(v, sig - 1 - math.floor(math.log10(abs(v))))


def builder_defaults(x: np.ndarray, y: np.ndarray, stages: int = 3) -> dict[str, float]:
    """Stage thresholds from the 20th to the 60th percentile of each axis: a visible narrowing."""
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return {"x_min": 0.0, "y_min": 0.0, "dx": 0.0, "dy": 0.0}
    qx = np.quantile(x[ok].astype(np.float64), [0.2, 0.6])
    qy = np.quantile(y[ok].astype(np.float64), [0.2, 0.6])
    k = max(stages - 1, 1)
    return {
        "x_min": round_sig(float(qx[0])),
        "y_min": round_sig(float(qy[0])),
        "dx": round_sig(float(qx[1] - qx[0]) / k),
        "dy": round_sig(float(qy[1] - qy[0]) / k),
    }


def as_number(v: Any) -> float | None:
    """A form field as a finite number; None when it is empty or not one."""
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def builder_body(stages: Any, x_min: Any, y_min: Any, dx: Any, dy: Any, per_stage: Any, seed: Any) -> dict[str, Any]:
    """The `builder` of a curriculum request from the form; ValueError names a bad field."""
    k = as_number(stages)
    if k is None or k != int(k) or not 1 <= k <= 10:
        raise ValueError("stages: give a whole number from 1 to 10")
    n = as_number(per_stage)
    if n is None or n != int(n) or n < 1:
        raise ValueError("per stage: give a whole number of samples, at least 1")
    s = as_number(seed)
    out: dict[str, Any] = {
        "stages": int(k),
        "dx": as_number(dx) or 0.0,
        "dy": as_number(dy) or 0.0,
        "per_stage": int(n),
        "seed": int(s) if s is not None and s >= 0 else 0,
    }
    if as_number(x_min) is not None:
        out["x_min"] = as_number(x_min)
    if as_number(y_min) is not None:
        out["y_min"] = as_number(y_min)
    return out
