"""What every page's callbacks share: the API client, whether the API wants a token, a points cache."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from frontend.api_client import REQUEST_TOKEN, ApiClient
from frontend.api_shapes import Points

# The most points the UI's server asks the API for at once (settings.ui_point_budget): a bigger plane comes as a
# density-aware sample of this many, drawn over the server's density grid (frontend/pages/explore/viewport.py).
DEFAULT_POINT_BUDGET = 200_000


class PointsCache:
    """A small LRU of decoded planes, keyed by (dataset, x, y, color), each entry alive `ttl` seconds.

    One plane of 1M points is ~15 MB; the API already caches the query, this saves the transfer and
    decode when the analyst changes only the colour, the task-type filter or the region. A short ttl
    keeps the `clip` / `loss` shortcuts fresh when a newer run finishes.
    """

    def __init__(self, fetch: Callable[[int, str, str, str | None], Points], size: int = 4, ttl: float = 30.0) -> None:
        self._fetch = fetch
        self._size = size
        self._ttl = ttl
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[Any, ...], tuple[float, Points, dict[str, Any]]] = OrderedDict()
        self._inflight: dict[tuple[Any, ...], threading.Event] = {}

    def get(self, ds: int, x: str, y: str, color: str | None = None) -> Points:
        return self.entry(ds, x, y, color)[0]

    def entry(self, ds: int, x: str, y: str, color: str | None = None) -> tuple[Points, dict[str, Any]]:
        """The points and a per-entry scratch dict (for derived arrays such as a density sample)."""
        key = (REQUEST_TOKEN.get(), ds, x, y, color)  # one user's plane is never served on another's token
        while True:
            with self._lock:
                hit = self._entries.get(key)
                if hit is not None and time.monotonic() - hit[0] < self._ttl:
                    self._entries.move_to_end(key)
                    return hit[1], hit[2]
                waiter = self._inflight.get(key)
                if waiter is None:
                    waiter = threading.Event()
                    self._inflight[key] = waiter
                    owner = True
                else:
                    owner = False
            if not owner:  # another callback is fetching the same plane: wait for it, then re-check
                waiter.wait(timeout=300)
                continue
            try:
                points = self._fetch(ds, x, y, color)
                scratch: dict[str, Any] = {}
                with self._lock:
                    self._entries[key] = (time.monotonic(), points, scratch)
                    self._entries.move_to_end(key)
                    while len(self._entries) > self._size:
                        self._entries.popitem(last=False)
                return points, scratch
            finally:
                with self._lock:
                    self._inflight.pop(key, None)
                waiter.set()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def drop_dataset(self, ds: int) -> None:
        """Forget a deleted dataset's planes: SQLite gives a new dataset the id of a deleted one (no AUTOINCREMENT),
        and its plane must not be the old one's for the rest of the ttl."""
        with self._lock:
            for key in [k for k in self._entries if k[1] == ds]:
                del self._entries[key]


@dataclass
class UiContext:
    api: ApiClient
    auth_required: bool = False
    point_budget: int = DEFAULT_POINT_BUDGET
    points: PointsCache = field(init=False)

    def __post_init__(self) -> None:
        # Never every point of a huge plane: at most the budget, a density-aware sample when there are more (the
        # API says so in the points' meta: `sampled`, `total_in_view`); below the budget, every point as before.
        self.points = PointsCache(lambda ds, x, y, c: self.api.space(ds, x, y, color=c, max_points=self.point_budget))


def mask_for(
    points: Points,
    task_types: list[str] | None,
    color_values: list[Any] | None = None,
) -> npt.NDArray[np.bool_] | None:
    """Which points pass the task-type filter (and the kept values of a categorical colour); None = all."""
    mask: npt.NDArray[np.bool_] | None = None
    if task_types is not None and set(task_types) != set(points.task_types):
        wanted = [i for i, t in enumerate(points.task_types) if t in set(task_types)]
        mask = np.isin(points.task_type, np.asarray(wanted, dtype=np.int8))
    if color_values is not None and points.color is not None and points.color_categories is not None:
        cats = points.color_categories
        if set(map(str, color_values)) != set(cats):
            keep = [i for i, c in enumerate(cats) if c in set(map(str, color_values))]
            cm = np.isin(points.color, np.asarray(keep, dtype=np.int16))
            mask = cm if mask is None else (mask & cm)
    return mask
