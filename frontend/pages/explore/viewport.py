"""The plane of a dataset bigger than the UI's point budget: the server's density grid of the view (over every
point in it) with a density-aware sample of at most `point_budget` points above it, both asked again when the
analyst zooms or pans (Plotly's relayoutData). Neither the browser nor this Dash server ever holds every point;
counts and memberships stay the server's (the selection preview), as everywhere.

Below the budget the page draws every point as before (callbacks.figure); the API says which case a plane is
(`sampled` in the points' meta, see UiContext.points)."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go
from dash import Dash, Input, Output, State, html
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.api_shapes import ApiError, Points
from frontend.callbacks import named_callback
from frontend.context import UiContext, mask_for
from frontend.errors import Outputs
from frontend.figures import category_colors, plane_figure, region_shapes
from frontend.figures.density import hdr_levels, smooth
from frontend.figures.plane import DENSITY_THRESHOLD
from frontend.figures.style import ALL_GROUP, DENSITY_SCALE, PALETTE, log_colorscale
from frontend.pages.explore.colours import cluster_labels, cluster_run, colour_kwargs
from frontend.pages.explore.query import api_color, axis_label, points_for

Range = tuple[float, float]
GRID_BINS = 200  # the density layer's cells per axis (as plane_figure's own layer)
CONTOUR_BINS = 56
MARKER = {"size": 2.0, "opacity": 0.32}  # over a density layer markers stay small and light, as plane_figure's
_COUNT_SUFFIX = re.compile(r" \([\d,]+\)$")


@dataclass(frozen=True)
class Viewport:
    """The axis ranges in view; None on an axis: its whole extent."""

    x_range: Range | None = None
    y_range: Range | None = None

    @property
    def whole(self) -> bool:
        return self.x_range is None and self.y_range is None


def _pair(value: Any) -> Range | None:
    """(lo, hi) of a Plotly range ([a, b] in either order); None when it is not two finite, distinct numbers."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    try:
        a, b = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(a) and math.isfinite(b)) or a == b:
        return None
    return (a, b) if a < b else (b, a)


def viewport_from_relayout(relayout: Mapping[str, Any] | None, current: Viewport | None = None) -> Viewport | None:
    """The view after a Plotly relayout event: a zoom or pan gives its ranges, a reset (autorange, a double
    click) the whole extent; an axis the event leaves alone keeps `current`'s range. None when the event is no
    change of view (a drawn lasso, autosize, the legend)."""
    if not isinstance(relayout, Mapping):
        return None
    cur = current or Viewport()
    out: dict[str, Range | None] = {"x": cur.x_range, "y": cur.y_range}
    touched = False
    for axis, key in (("xaxis", "x"), ("yaxis", "y")):
        if relayout.get(f"{axis}.autorange") is True:
            out[key], touched = None, True
            continue
        rng = _pair(relayout.get(f"{axis}.range"))
        if rng is None and f"{axis}.range[0]" in relayout and f"{axis}.range[1]" in relayout:
            rng = _pair([relayout[f"{axis}.range[0]"], relayout[f"{axis}.range[1]"]])
        if rng is not None:
            out[key], touched = rng, True
    return Viewport(out["x"], out["y"]) if touched else None


def view_key(setup: Mapping[str, Any], x: str, y: str) -> str:
    """Which plane a stored view belongs to: a view of other axes (or another dataset) is no view of this one."""
    return f"{setup.get('ds')}|{x}|{y}"


def view_data(view: Viewport, key: str) -> dict[str, Any]:
    """The view as the page's store keeps it (JSON)."""
    return {"key": key, "x_range": view.x_range and list(view.x_range), "y_range": view.y_range and list(view.y_range)}


def stored_view(data: Any, key: str) -> Viewport:
    """The stored view of the plane `key` names; the whole plane when the store holds another's (or nothing)."""
    if not isinstance(data, Mapping) or data.get("key") != key:
        return Viewport()
    return Viewport(_pair(data.get("x_range")), _pair(data.get("y_range")))


def is_sampled(points: Points) -> bool:
    """Whether the API sent a sample of the plane (it held more points than the budget asked for)."""
    return str(points.meta.get("sampled", "false")).strip().lower() == "true"


def total_in_view(points: Points) -> int:
    """How many points the view holds on the server (the API's `total_in_view`); the points sent otherwise."""
    raw = points.meta.get("total_in_view")
    try:
        return int(json.loads(raw)) if raw is not None else len(points)
    except (TypeError, ValueError):
        return len(points)


def grid_layer(
    grid: Mapping[str, Any],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The server's density grid as (counts with rows = y, as a heatmap wants them; x centres; y centres)."""
    counts = np.asarray(grid.get("counts") or [], dtype=np.int64)  # counts[i][j]: x bin i, y bin j
    xe = np.asarray(grid.get("x_edges") or [], dtype=np.float64)
    ye = np.asarray(grid.get("y_edges") or [], dtype=np.float64)
    if counts.ndim != 2 or counts.size == 0 or len(xe) != counts.shape[0] + 1 or len(ye) != counts.shape[1] + 1:
        return np.zeros((0, 0), np.int64), np.zeros(0), np.zeros(0)
    return counts.T, (xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2


def grid_heatmap(grid: Mapping[str, Any]) -> go.Heatmap | None:
    """Every point in view as counts on the server's grid (empty cells transparent, log-like colours)."""
    counts, xc, yc = grid_layer(grid)
    if counts.size == 0:
        return None
    z = counts.astype(np.float32)
    z[counts == 0] = np.nan
    top = max(int(counts.max()), 2)
    return go.Heatmap(
        z=z, x=xc.astype(np.float32), y=yc.astype(np.float32), zmin=1, zmax=top,
        colorscale=log_colorscale(DENSITY_SCALE, top), showscale=False, zsmooth=False, showlegend=False,
        hovertemplate="%{z:,} points here<extra></extra>", name="density (all points in view)",
    )  # fmt: skip


def grid_marginals(fig: go.Figure, grid: Mapping[str, Any]) -> None:
    """Histograms of x (top) and y (right) from the grid: over every point in view, not the sample."""
    counts, xc, yc = grid_layer(grid)
    if counts.size == 0:
        return
    hidden = {"showticklabels": False, "showgrid": False, "zeroline": False, "showline": False, "ticks": ""}
    fig.update_layout(
        xaxis2={**hidden, "domain": [0.87, 1.0], "anchor": "y", "fixedrange": True},
        yaxis2={**hidden, "domain": [0.86, 1.0], "anchor": "x", "fixedrange": True},
        bargap=0.04,
    )
    _, name, color = ALL_GROUP
    common = {"marker": {"color": color, "line": {"width": 0}}, "showlegend": False, "name": name, "opacity": 0.9}
    wx = float(xc[1] - xc[0]) if len(xc) > 1 else None
    wy = float(yc[1] - yc[0]) if len(yc) > 1 else None
    fig.add_trace(go.Bar(x=xc, y=counts.sum(axis=0), width=wx, xaxis="x", yaxis="y2",
                         hovertemplate="%{x:.4g}: %{y:,}<extra>all in view</extra>", **common))  # fmt: skip
    fig.add_trace(go.Bar(y=yc, x=counts.sum(axis=1), width=wy, orientation="h", xaxis="x2", yaxis="y",
                         hovertemplate="%{y:.4g}: %{x:,}<extra>all in view</extra>", **common))  # fmt: skip


def coarsen(
    counts: npt.NDArray[np.int64], xc: npt.NDArray[np.float64], yc: npt.NDArray[np.float64], n: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """A grid merged by whole blocks of cells to about the bins plane_figure's contours give `n` points
    (sqrt(n) * 0.6, 8 to CONTOUR_BINS): a few hundred points give one smooth outline, not islands."""
    ny, nx = counts.shape
    target = int(np.clip(round(math.sqrt(max(n, 0)) * 0.6), 8, CONTOUR_BINS))
    size = math.gcd(ny, nx)
    f = min((d for d in range(1, size + 1) if size % d == 0), key=lambda d: abs(max(ny, nx) / d - target))
    if f == 1:
        return counts, xc, yc
    merged = counts.reshape(ny // f, f, nx // f, f).sum(axis=(1, 3))
    return merged, xc.reshape(-1, f).mean(axis=1), yc.reshape(-1, f).mean(axis=1)


def contour_traces(
    grids: Mapping[str, Mapping[str, Any]], colors: Mapping[str, str], levels: tuple[float, float] = (0.5, 0.9)
) -> list[go.Contour]:
    """Per task type, the 50% / 90% highest-density outlines of its server grid (every point of the type)."""
    out = []
    for k, (name, grid) in enumerate(grids.items()):
        counts, xc, yc = grid_layer(grid)
        if counts.size == 0 or int(counts.sum()) < 10:
            continue
        counts, xc, yc = coarsen(counts, xc, yc, int(counts.sum()))
        z = smooth(smooth(counts.astype(np.float64)))
        t50, t90 = hdr_levels(z, levels)
        if t50 <= 0:
            continue
        out.append(
            go.Contour(
                z=z.astype(np.float32), x=xc.astype(np.float32), y=yc.astype(np.float32), showscale=False,
                contours={"coloring": "none", "start": t90, "end": t50, "size": max(t50 - t90, t50 * 1e-6),
                          "showlabels": False},
                line={"color": colors.get(name, PALETTE[k % len(PALETTE)]), "width": 2.2, "smoothing": 1.0},
                name=f"{name}: 50% / 90% of its samples", legendgroup=f"contour-{name}", showlegend=True,
                hoverinfo="skip",
            )
        )  # fmt: skip
    return out


def sampled_plane(
    ctx: UiContext,
    setup: dict[str, Any],
    x: str,
    y: str,
    color: str | None,
    tasks: list[str] | None,
    meta_values: list[str] | None,
    contours: list[str] | None,
    region: Any,
    view: Viewport,
) -> Outputs:
    """The figure and caption of a plane above the budget, for `view`: the server's grid, a sample of at most
    the budget, marginals from the grid, task-type contours from per-type server grids. A view that holds no
    more points than the budget comes whole and is drawn as a plane below the budget is (every point)."""
    t0 = time.perf_counter()
    ds = int(setup["ds"])
    whole, scratch = points_for(ctx, setup, x, y, color)
    points = (
        whole
        if view.whole
        else ctx.api.space(
            ds, x, y, color=api_color(color), max_points=ctx.point_budget, x_range=view.x_range, y_range=view.y_range
        )
    )
    exact = not is_sampled(points)  # every point of the view is here
    labels = setup.get("labels") or {}
    meta_on = bool(color and color.startswith("meta:"))
    mask = mask_for(points, tasks, meta_values if meta_on else None)
    sel = (lambda a: a) if mask is None else (lambda a: a[mask])
    run = cluster_run(color)
    names = cluster_labels(ctx, run, scratch) if run is not None else None
    kw: dict[str, Any] = colour_kwargs(points, color, labels, sel, names)
    palette = category_colors(list((setup.get("task_counts") or {}).keys()))
    if contours and exact:
        kw.update(contour_codes=sel(points.task_type), contour_names=points.task_types, contour_colors=palette)
    on_plane = region and region.get("view") != "map"  # a new figure drops the old one's outline: draw it again
    shapes = region_shapes(region.get("region"), whole.x, whole.y) if on_plane else []
    fig, stats = plane_figure(
        sel(points.x), sel(points.y), sel(points.ids),
        x_label=axis_label(labels, x), y_label=axis_label(labels, y), shapes=shapes,
        uirevision=f"{ds}|{x}|{y}", marginals=exact, density_threshold=DENSITY_THRESHOLD if exact else 2**62, **kw,
    )  # fmt: skip
    grid = None if exact else ctx.api.density(ds, x, y, bins=GRID_BINS, x_range=view.x_range, y_range=view.y_range)
    heat = None if grid is None else grid_heatmap(grid)
    if grid is not None and heat is not None and fig.data:
        marker = dict(MARKER, opacity=MARKER["opacity"] * (0.45 if contours else 1.0))
        fig.update_traces(marker=marker, selector={"type": "scattergl"})
        for trace in fig.data:  # a legend count of the sample would read as the dataset's: the server counts
            trace.name = _COUNT_SUFFIX.sub("", trace.name or "")
        fig.add_trace(heat)
        fig.data = (fig.data[-1], *fig.data[:-1])
        grid_marginals(fig, grid)
        if contours:
            wanted = [t for t in points.task_types if tasks is None or t in set(tasks)]
            per_type = {
                t: ctx.api.density(ds, x, y, bins=CONTOUR_BINS, task_type=t, x_range=view.x_range, y_range=view.y_range)
                for t in wanted
            }
            for trace in contour_traces(per_type, palette):
                fig.add_trace(trace)
        stats.total, stats.density = total_in_view(points), True
        stats.notes.append(f"at most {ctx.point_budget:,} points sent")
        if mask is not None:
            stats.notes.append("markers filtered, density layer of every point")
    elif mask is not None:
        stats.notes.append(f"filtered from {len(points):,}")
    for axis, r in (("xaxis", view.x_range), ("yaxis", view.y_range)):
        if r is not None:
            fig.layout[axis].range = list(r)
    if not view.whole:
        stats.notes.append("in this view")
    caption = [
        html.Span(stats.caption()),
        html.Span(f"figure built in {1000 * (time.perf_counter() - t0):,.0f} ms", className="muted small"),
    ]
    return {"figure": fig, "caption": caption, "alert": None}


def plane_reference(ctx: UiContext, setup: dict[str, Any], x: str, y: str) -> dict[str, dict[str, float]]:
    """Each axis's median over every point of the plane, from the server's summary (a sample's would be off)."""
    try:
        quantiles = ctx.api.summary(int(setup["ds"]), x, y).get("quantiles") or {}
    except ApiError:
        return {}
    out: dict[str, dict[str, float]] = {}
    for key in ("x", "y"):
        median = (quantiles.get(key) or {}).get("0.5")
        if isinstance(median, (int, float)) and math.isfinite(median):
            out[key] = {"median": float(median)}
    return out


def register(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output={
            "figure": Output(ids.EX_GRAPH, "figure", allow_duplicate=True),
            "caption": Output(ids.EX_PLOT_INFO, "children", allow_duplicate=True),
            "alert": Output(ids.EX_ALERT, "children", allow_duplicate=True),
            "view": Output(ids.EX_VIEW, "data"),
        },
        inputs={"relayout": Input(ids.EX_GRAPH, "relayoutData")},
        state={
            "x": State(ids.EX_X, "value"),
            "y": State(ids.EX_Y, "value"),
            "color": State(ids.EX_COLOR, "value"),
            "tasks": State(ids.EX_TASKS, "value"),
            "meta_values": State(ids.EX_META_VALUES, "value"),
            "contours": State(ids.EX_CONTOURS, "value"),
            "setup": State(ids.EX_SETUP, "data"),
            "region": State(ids.EX_REGION, "data"),
            "current": State(ids.EX_VIEW, "data"),
        },
        alert="alert",
        prevent_initial_call=True,
    )
    def rezoom(
        relayout: dict[str, Any] | None,
        x: str,
        y: str,
        color: str,
        tasks: list[str],
        meta_values: list[str],
        contours: list[str],
        setup: dict[str, Any],
        region: Any,
        current: Any,
    ) -> Outputs:
        """A zoom or pan of a plane above the budget: its grid and sample again, for the new view (kept in the
        page's store, so a change of colour or filter redraws this view, not the whole plane)."""
        if not setup or not x or not y:
            raise PreventUpdate
        key = view_key(setup, x, y)
        view = viewport_from_relayout(relayout, stored_view(current, key))
        if view is None:
            raise PreventUpdate
        if not is_sampled(points_for(ctx, setup, x, y, color)[0]):
            raise PreventUpdate  # every point is already on the page: Plotly zooms on its own
        out = sampled_plane(ctx, setup, x, y, color, tasks, meta_values, contours, region, view)
        return {**out, "view": view_data(view, key)}
