"""The quality space: axes resolved to runs, score columns loaded once and cached per process, and the plane
served from them.

Modules: :mod:`~backend.space.axes` (an axis spec to a run and a metric), :mod:`~backend.space.columns` (the
cached columns: the space store) and :mod:`~backend.space.plane` (one view of the plane, its Arrow/JSON
payloads, density and summary). The API's routes parse parameters and build responses; the work is here.
"""

from __future__ import annotations

from backend.space.axes import MAIN_METRIC, SHORTCUTS, Axis, AxisError, list_axes, metric_names, resolve_axis
from backend.space.columns import (
    LRU,
    Column,
    DatasetColumns,
    FloatArray,
    IdArray,
    Space,
    SpaceStore,
    is_postgres,
    raw_rows,
)
from backend.space.plane import (
    Colour,
    Plane,
    UnknownTaskType,
    align,
    arrow_bytes,
    categorise,
    density,
    open_plane,
    plane_arrow,
    plane_json,
    resolve_colour,
    summary,
)

__all__ = [
    "LRU",
    "MAIN_METRIC",
    "SHORTCUTS",
    "Axis",
    "AxisError",
    "Colour",
    "Column",
    "DatasetColumns",
    "FloatArray",
    "IdArray",
    "Plane",
    "Space",
    "SpaceStore",
    "UnknownTaskType",
    "align",
    "arrow_bytes",
    "categorise",
    "density",
    "is_postgres",
    "list_axes",
    "metric_names",
    "open_plane",
    "plane_arrow",
    "plane_json",
    "raw_rows",
    "resolve_axis",
    "resolve_colour",
    "summary",
]
