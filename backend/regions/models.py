"""The REST contract's shapes of the quality plane: regions, range filters, sampling and the curriculum builder.

Validation only; which points a region holds is :func:`backend.regions.masks.region_mask`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, TypeAdapter, field_validator, model_validator

from backend.regions.arrays import BoolArray, FloatArray, closed_mask

MAX_POLYGON_VERTICES = 1000
MAX_GRID_N = 100


class _Strict(BaseModel):
    # Unknown keys are a typo in a saved recipe, better rejected than silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolygonRegion(_Strict):
    """A lasso: 3..1000 vertices ``[[x, y], ...]``, implicitly closed; see the boundary rule in backend.regions."""

    type: Literal["polygon"] = "polygon"
    points: list[tuple[FiniteFloat, FiniteFloat]]

    @field_validator("points", mode="before")
    @classmethod
    def _count_first(cls, v: Any) -> Any:
        # Checked before element validation so a 10^6-vertex payload is refused in O(1).
        if isinstance(v, list | tuple):
            if len(v) < 3:
                raise ValueError(f"a polygon needs at least 3 vertices, got {len(v)}")
            if len(v) > MAX_POLYGON_VERTICES:
                raise ValueError(
                    f"a polygon may have at most {MAX_POLYGON_VERTICES} vertices, got {len(v)}; "
                    "simplify the lasso first"
                )
        return v

    def array(self) -> FloatArray:
        """The vertices as a float64 ``(k, 2)`` array."""
        return np.asarray(self.points, dtype=np.float64).reshape(-1, 2)


def _check_interval(v: tuple[float | None, float | None] | None, what: str) -> None:
    if v is not None and v[0] is not None and v[1] is not None and v[0] > v[1]:
        raise ValueError(f"{what}: lower bound {v[0]} is above upper bound {v[1]}")


class BoxRegion(_Strict):
    """``lo <= x <= hi and lo <= y <= hi`` (closed); ``null`` leaves a side open, an omitted axis is free."""

    type: Literal["box"] = "box"
    x: tuple[FiniteFloat | None, FiniteFloat | None] = (None, None)
    y: tuple[FiniteFloat | None, FiniteFloat | None] = (None, None)

    @model_validator(mode="after")
    def _ordered(self) -> BoxRegion:
        _check_interval(self.x, "box.x")
        _check_interval(self.y, "box.y")
        return self


_Q = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class QuantilesRegion(_Strict):
    """A quantile band per axis, ``[qlo, qhi]`` with ``0 <= qlo < qhi <= 1``; either axis may be omitted."""

    type: Literal["quantiles"] = "quantiles"
    x: tuple[_Q, _Q] | None = None
    y: tuple[_Q, _Q] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> QuantilesRegion:
        if self.x is None and self.y is None:
            raise ValueError("quantiles: give a band for x, y or both")
        for name, band in (("x", self.x), ("y", self.y)):
            if band is not None and not band[0] < band[1]:
                raise ValueError(f"quantiles.{name}: need qlo < qhi, got {list(band)}")
        return self


class GridRegion(_Strict):
    """Cell ``(i, j)`` of an ``n x n`` quantile grid; ``i`` along x, ``j`` along y, 0 = lowest values."""

    type: Literal["grid"] = "grid"
    n: int = Field(default=3, ge=1, le=MAX_GRID_N)
    cell: tuple[int, int]

    @model_validator(mode="after")
    def _in_grid(self) -> GridRegion:
        i, j = self.cell
        if not (0 <= i < self.n and 0 <= j < self.n):
            raise ValueError(f"grid: cell {list(self.cell)} is outside a {self.n} x {self.n} grid (0-based)")
        return self


class TopRegion(_Strict):
    """The top ``percent`` % by x (DIL), y (DIS) or both (DIQ: by the smaller of the two quantile ranks)."""

    type: Literal["top"] = "top"
    percent: float = Field(gt=0.0, le=100.0, allow_inf_nan=False)
    axes: Literal["x", "y", "both"] = "both"


class AllRegion(_Strict):
    """Every point, non-finite ones included (with ``sample``: the random control)."""

    type: Literal["all"] = "all"


MAX_COMBINED = 32
_SelectionId = Annotated[int, Field(ge=1, le=2_147_483_647)]


class CombineRegion(_Strict):
    """Set algebra over saved selections' stored sample ids: ``union``, ``intersection`` or ``difference`` (the
    first minus all the others). Resolved by :mod:`backend.selection_combine`, not on the plane."""

    type: Literal["combine"] = "combine"
    op: Literal["union", "intersection", "difference"]
    selections: list[_SelectionId] = Field(min_length=1, max_length=MAX_COMBINED)

    @model_validator(mode="after")
    def _distinct(self) -> CombineRegion:
        if len(set(self.selections)) != len(self.selections):
            raise ValueError(f"combine: selections must be distinct, got {self.selections}")
        if self.op != "union" and len(self.selections) < 2:
            raise ValueError(f"combine: {self.op} needs at least 2 selections")
        return self


class IdsRegion(_Strict):
    """The sample ids stored with saved selection ``selection`` (an imported subset names itself here)."""

    type: Literal["ids"] = "ids"
    selection: _SelectionId


# Regions decided from saved selections rather than from the points' coordinates.
SET_REGIONS = (CombineRegion, IdsRegion)

Region = Annotated[
    PolygonRegion | BoxRegion | QuantilesRegion | GridRegion | TopRegion | AllRegion | CombineRegion | IdsRegion,
    Field(discriminator="type"),
]
_REGION_ADAPTER: TypeAdapter[Region] = TypeAdapter(Region)


def parse_region(obj: Any) -> Region:
    """Validate a region dict (or re-validate a model); raises ``pydantic.ValidationError``, a ValueError."""
    if isinstance(obj, BaseModel):
        return _REGION_ADAPTER.validate_python(obj.model_dump())
    return _REGION_ADAPTER.validate_python(obj)


class Balance(_Strict):
    """Spread a sample over a clusters run's clusters (see :func:`backend.regions.sampling.balanced_counts`)."""

    run: int = Field(ge=1, le=2_147_483_647, description="a finished clusters run of the dataset")
    mode: Literal["proportional", "uniform"] = "proportional"


class Sample(_Strict):
    """Keep ``n`` points drawn uniformly at random with ``seed`` (see :func:`sample_indices`); with
    ``balance``, drawn per cluster of a clusters run (:func:`backend.regions.sampling.balanced_indices`)."""

    n: int = Field(ge=1)
    seed: int = Field(default=0, ge=0)
    balance: Balance | None = None


class RangeFilter(_Strict):
    """``min <= value <= max`` on an axis (``"RUN:METRIC"``, ``"clip"``, ``"loss"``); a bound may be null."""

    axis: str = Field(min_length=1)
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None

    @model_validator(mode="after")
    def _bounded(self) -> RangeFilter:
        if self.min is None and self.max is None:
            raise ValueError(f"range on {self.axis!r}: give min, max or both")
        _check_interval((self.min, self.max), f"range on {self.axis!r}")
        return self

    def mask(self, values: npt.ArrayLike) -> BoolArray:
        """Which values lie in the closed range; NaN never does."""
        return closed_mask(np.asarray(values, dtype=np.float64), self.min, self.max)


class CurriculumBuilder(_Strict):
    """The paper's builder, ``{stages, x_min?, y_min?, dx, dy, per_stage, seed}``: see curriculum_stages."""

    stages: int = Field(ge=1, le=100)
    x_min: FiniteFloat | None = None
    y_min: FiniteFloat | None = None
    dx: FiniteFloat
    dy: FiniteFloat
    per_stage: int = Field(ge=1)
    seed: int = Field(default=0, ge=0)
    disjoint: bool = True
