"""The curriculum builder's plane: every point, and each stage's region toward high x and high y."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go

from frontend.figures.density import finite_range
from frontend.figures.plane import density_heatmap, empty_figure
from frontend.figures.style import GREY_SCALE, STAGE_COLORS, base_layout


def curriculum_thresholds(stages: int, x_min: float, y_min: float, dx: float, dy: float) -> list[tuple[float, float]]:
    """Stage k keeps x >= x_min + k*dx and y >= y_min + k*dy (the paper's builder): the lower corners."""
    return [(x_min + k * dx, y_min + k * dy) for k in range(max(0, int(stages)))]


def curriculum_figure(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    x_label: str,
    y_label: str,
    thresholds: Sequence[tuple[float, float]],
    sizes: Sequence[str] = (),
    names: Sequence[str] = (),
    uirevision: str | None = None,
) -> go.Figure:
    """Every point (as a density layer above 20k), with each stage's region: a quadrant toward high x, y."""
    xa = np.asarray(x, dtype=np.float32)
    ya = np.asarray(y, dtype=np.float32)
    finite = np.isfinite(xa) & np.isfinite(ya)
    if not finite.any():
        return empty_figure("No scored points for these axes yet.")
    layout = base_layout(x_label, y_label, uirevision)
    layout["xaxis"]["domain"] = [0.0, 1.0]
    layout["yaxis"]["domain"] = [0.0, 1.0]
    layout["dragmode"] = "pan"
    layout["showlegend"] = False
    layout["margin"] = {"l": 64, "r": 16, "t": 16, "b": 56}
    fig = go.Figure(layout=layout)
    xr = finite_range(xa[finite])
    yr = finite_range(ya[finite])
    if int(finite.sum()) > 20_000:
        fig.add_trace(density_heatmap(xa, ya, xr, yr, 120, GREY_SCALE, "all points"))
    else:
        fig.add_trace(
            go.Scattergl(
                x=xa[finite], y=ya[finite], mode="markers", name="samples", hoverinfo="skip",
                marker={"size": 4, "color": "#8C96A5", "opacity": 0.55},
            )
        )  # fmt: skip
    shapes = []
    annotations = []
    for k, (tx, ty) in enumerate(thresholds):
        color = STAGE_COLORS[min(k, len(STAGE_COLORS) - 1)]
        x0 = max(tx, xr[0])
        y0 = max(ty, yr[0])
        shapes.append(
            {
                "type": "rect", "xref": "x", "yref": "y", "x0": x0, "x1": xr[1], "y0": y0, "y1": yr[1],
                "line": {"width": 0}, "fillcolor": color, "opacity": 0.14, "layer": "above",
            }
        )  # fmt: skip
        shapes.append(
            {
                "type": "rect", "xref": "x", "yref": "y", "x0": x0, "x1": xr[1], "y0": y0, "y1": yr[1],
                "line": {"color": color, "width": 2.2}, "fillcolor": "rgba(0,0,0,0)", "layer": "above",
            }
        )  # fmt: skip
        name = names[k] if k < len(names) and names[k] else f"stage {k + 1}"
        label = name + (f" · {sizes[k]}" if k < len(sizes) and sizes[k] else "")
        annotations.append(
            {
                "x": x0, "y": y0, "xref": "x", "yref": "y", "text": label, "showarrow": False,
                "xanchor": "left", "yanchor": "bottom", "xshift": 4, "yshift": 4,
                "font": {"size": 12, "color": "#FFFFFF"}, "bgcolor": color, "borderpad": 3, "opacity": 0.95,
            }
        )  # fmt: skip
    fig.update_layout(shapes=shapes, annotations=annotations)
    fig.update_xaxes(range=list(xr))
    fig.update_yaxes(range=list(yr))
    return fig
