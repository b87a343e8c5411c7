"""Regions of the quality plane and the paper's selection recipes, as pure maths.

Every sample is a point (x, y) (e.g. x = loss, y = CLIP score). This package decides which points a
region holds, draws reproducible random subsets and builds the paper's staged curriculum. It knows no
database and no web framework: the API resolves axes to float arrays and calls in here.

Modules: :mod:`~backend.regions.models` (the REST shapes: regions, range filters, the curriculum builder),
:mod:`~backend.regions.polygon` (point in polygon, numba kernels, and lasso simplification),
:mod:`~backend.regions.masks` (which points a region holds: boxes, quantile bands, grid cells, top-k) and
:mod:`~backend.regions.sampling` (reproducible draws and the staged curriculum); :mod:`~backend.regions.arrays`
holds the array types and coercions they share.

Two regions are not decided on the plane: ``combine`` (union, intersection or difference of saved selections)
and ``ids`` (one saved selection's stored ids, e.g. an imported subset) read the store, so
:mod:`backend.selection_combine` resolves them; :func:`region_mask` refuses them.

Rules shared by every region except ``all``, ``combine`` and ``ids``:

- A point with a non-finite coordinate (NaN, +-inf) on either axis is outside. Quantiles, ranks and
  default minima are computed over the points that are finite on both axes (the *population*).
- Polygon boundary (half-open rule): a point on an edge or vertex is inside iff the points just to its
  right (+x, then +y for horizontal edges) are inside. Left and bottom edges are in, right and top edges
  out, like ``[lo, hi)``. Every edge is evaluated in one canonical orientation (from its lower end), so
  for polygons A and B that share an edge (same vertex coordinates) ``in(A) xor in(B) == in(A u B)``
  holds exactly, in floats too: a point on the shared edge goes to exactly one of them.
- Box: closed on both sides, ``lo <= v <= hi``; ``None`` leaves that side open.
- Quantile band ``[qlo, qhi]``: half-open on the value edges, ``e(qlo) <= v < e(qhi)``, except that
  ``qhi == 1`` is closed, where ``e(q) = numpy.quantile(population, q)`` (linear). Bands that meet at a
  cut and the cells of a grid therefore partition the population exactly, whatever the ties.
- ``top``: exactly ``round_half_up(percent/100 * m)`` points of the ``m`` in the population; ties at the
  threshold go to the lower index.
"""

from __future__ import annotations

from backend.regions.masks import grid_cells, quantile_edges, region_mask
from backend.regions.models import (
    MAX_COMBINED,
    MAX_GRID_N,
    MAX_POLYGON_VERTICES,
    SET_REGIONS,
    AllRegion,
    BoxRegion,
    CombineRegion,
    CurriculumBuilder,
    GridRegion,
    IdsRegion,
    PolygonRegion,
    QuantilesRegion,
    RangeFilter,
    Region,
    Sample,
    TopRegion,
    parse_region,
)
from backend.regions.polygon import points_in_polygon, simplify_polygon
from backend.regions.sampling import balanced_counts, balanced_indices, curriculum_stages, sample_indices

__all__ = [
    "MAX_COMBINED",
    "MAX_GRID_N",
    "MAX_POLYGON_VERTICES",
    "SET_REGIONS",
    "AllRegion",
    "BoxRegion",
    "CombineRegion",
    "CurriculumBuilder",
    "GridRegion",
    "IdsRegion",
    "PolygonRegion",
    "QuantilesRegion",
    "RangeFilter",
    "Region",
    "Sample",
    "TopRegion",
    "balanced_counts",
    "balanced_indices",
    "curriculum_stages",
    "grid_cells",
    "parse_region",
    "points_in_polygon",
    "quantile_edges",
    "region_mask",
    "sample_indices",
    "simplify_polygon",
]
