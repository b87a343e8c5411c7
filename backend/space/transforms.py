"""Axis transforms: ``AXIS@log``, ``AXIS@type_z``, ``AXIS@type_rank`` (e.g. ``2:loss_sum@type_rank``).

A transform maps a metric column (every sample of the run that has a value) to another column; the plane,
density, summary, colours, selections and curricula then use the transformed values, so what a selection
keeps is what the plane draws. Transforms chain left to right (``loss_sum@log@type_z``).

- ``log``: natural logarithm. A value <= 0 has none: the sample is dropped from the axis, as a sample without
  the metric is (never a NaN, and not log1p, which would change the scale of small positive values).
- ``type_z``: z-score within the sample's task type: (v - mean) / std of the values of that type (population
  std). A type whose values are all equal gets 0.
- ``type_rank``: quantile rank within the sample's task type: (rank + 0.5) / n, ranks from 0, ties sharing
  their mean rank; so in (0, 1), 0.5 on average in every type, uniform for distinct values. Per-type
  normalisation removes what task types differ by (loss_sum mostly measures length, and types differ in
  length), leaving how a sample stands among its peers.

Per-type statistics are over the whole column (every sample of the run with a value), not the points that
survive a plane's other axis or a task-type filter: a sample's transformed value does not depend on the view.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Codes = npt.NDArray[np.int8]

TRANSFORMS: dict[str, str] = {
    "log": "natural log; values <= 0 are left out",
    "type_z": "z-score within the sample's task type",
    "type_rank": "quantile rank (rank + 0.5) / n within the sample's task type",
}
PER_TYPE = frozenset({"type_z", "type_rank"})


class TransformError(ValueError):
    """An axis transform that does not exist; the message lists those that do."""


def split_spec(spec: str) -> tuple[str, tuple[str, ...]]:
    """``'2:loss_sum@log@type_z'`` -> ``('2:loss_sum', ('log', 'type_z'))``; TransformError for an unknown name."""
    base, *names = spec.split("@")
    for name in names:
        if name not in TRANSFORMS:
            known = ", ".join(f"@{t}" for t in TRANSFORMS)
            raise TransformError(f"axis {spec!r}: unknown transform {'@' + name!r}; use one of {known}")
    return base.strip(), tuple(names)


def needs_task_types(transforms: tuple[str, ...]) -> bool:
    return any(t in PER_TYPE for t in transforms)


def apply(
    transforms: tuple[str, ...], values: FloatArray, codes: Codes | None
) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    """(which values are kept, the transformed kept values). ``codes``: each value's task-type code (needed
    by the per-type transforms)."""
    keep = np.ones(len(values), dtype=bool)
    out = np.asarray(values, dtype=np.float64).copy()
    for name in transforms:
        if name == "log":
            ok = out > 0
            keep[keep] = ok  # positions of the values still kept
            out = np.log(out[ok])
            codes = codes[ok] if codes is not None else None
        else:
            if codes is None:
                raise ValueError(f"transform {name!r} needs the task types")
            out = _type_z(out, codes) if name == "type_z" else _type_rank(out, codes)
    return keep, out


def _groups(codes: Codes) -> list[npt.NDArray[np.intp]]:
    """Indices of each task type's values."""
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    return [g for g in np.split(order, bounds) if len(g)]


def _type_z(values: FloatArray, codes: Codes) -> FloatArray:
    out = np.zeros(len(values), dtype=np.float64)
    for idx in _groups(codes):
        v = values[idx]
        std = float(v.std())
        out[idx] = (v - v.mean()) / std if std > 0 else 0.0
    return out


def _type_rank(values: FloatArray, codes: Codes) -> FloatArray:
    out = np.empty(len(values), dtype=np.float64)
    for idx in _groups(codes):
        out[idx] = (_mean_ranks(values[idx]) + 0.5) / len(idx)
    return out


def _mean_ranks(v: FloatArray) -> FloatArray:
    """0-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(v)]
    mean_rank = (starts + ends - 1) / 2.0
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks
