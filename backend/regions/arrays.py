"""The array types and coercions every region module shares: coordinates, the population, closed ranges."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def as_coords(a: npt.ArrayLike, name: str) -> np.ndarray:
    """A contiguous one-dimensional float32 or float64 array (other dtypes become float64)."""
    arr = np.asarray(a)
    if arr.dtype != np.float32 and arr.dtype != np.float64:
        arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def xy(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both coordinate arrays, checked one-dimensional and of one length."""
    xa = as_coords(x, "x")
    ya = as_coords(y, "y")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.shape[0]} vs {ya.shape[0]}")
    return xa, ya


def population(x: np.ndarray, y: np.ndarray) -> BoolArray:
    """The points finite on both axes: what quantiles, ranks and default minima are computed over."""
    return np.isfinite(x) & np.isfinite(y)


def closed_mask(v: np.ndarray, lo: float | None, hi: float | None) -> BoolArray:
    """``lo <= v <= hi`` (``None``: that side is open); NaN never is."""
    m = ~np.isnan(v)
    if lo is not None:
        m &= v >= lo
    if hi is not None:
        m &= v <= hi
    return m


def unique_sorted(a: npt.ArrayLike) -> np.ndarray:
    """The distinct values of a one-dimensional integer array, sorted, in its own dtype. Not ``np.unique``: NumPy
    2.4's hash-based unique took 1.1-2.7 s for 665K int32 ids here, a sort ~25 ms (and arrays that are sorted and
    distinct already, as saved ids usually are, cost one pass)."""
    arr = np.asarray(a)
    if arr.size < 2 or bool(np.all(arr[1:] > arr[:-1])):
        return arr
    arr = np.sort(arr)
    return arr[np.concatenate(([True], arr[1:] != arr[:-1]))]
