"""Pure figure builders: numpy arrays in, plotly figures (or plain data) out. No I/O, no Dash.

The plane stays fluid at 1M points because the browser never gets 1M markers: above
`DENSITY_THRESHOLD` points it gets a 2D-histogram layer over every point plus a *density-aware* sample
(sparse cells keep every point, dense cores are thinned). Counts never come from here: selections are
resolved by the server over every point.

- `density`: the maths (ranges, bins, the density-aware sample, HDR levels, top-p% corners, shares); pure numpy.
- `style`: palettes, category colours, colour scales, the base layout, the graphs' config; plain data.
- `plane`, `regions`, `curriculum`: the Plotly builders of the plane, region outlines and the builder's plane.
"""

from __future__ import annotations

from frontend.figures.curriculum import curriculum_figure, curriculum_thresholds
from frontend.figures.density import (
    density_sample,
    finite_range,
    hdr_levels,
    histogram2d,
    quantile_edges,
    shares,
    top_corner,
)
from frontend.figures.plane import (
    DENSITY_THRESHOLD,
    SAMPLE_BUDGET,
    PlaneStats,
    density_heatmap,
    empty_figure,
    plane_figure,
)
from frontend.figures.regions import region_shapes
from frontend.figures.style import (
    DENSITY_SCALE,
    GRAPH_CONFIG,
    NEUTRAL,
    PALETTE,
    STAGE_COLORS,
    category_colors,
    log_colorscale,
)

__all__ = [
    "DENSITY_SCALE",
    "DENSITY_THRESHOLD",
    "GRAPH_CONFIG",
    "NEUTRAL",
    "PALETTE",
    "SAMPLE_BUDGET",
    "STAGE_COLORS",
    "PlaneStats",
    "category_colors",
    "curriculum_figure",
    "curriculum_thresholds",
    "density_heatmap",
    "density_sample",
    "empty_figure",
    "finite_range",
    "hdr_levels",
    "histogram2d",
    "log_colorscale",
    "plane_figure",
    "quantile_edges",
    "region_shapes",
    "shares",
    "top_corner",
]
