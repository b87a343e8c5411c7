"""The quality plane as a Plotly figure: scatter, or a density layer over every point plus a density-aware
sample above `DENSITY_THRESHOLD` points; stacked marginals; per-group density contours; the caption's stats."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go

from frontend.figures.density import (
    FloatArray,
    bin_index,
    density_sample,
    finite_range,
    hdr_levels,
    histogram2d,
    smooth,
)
from frontend.figures.style import (
    ALL_GROUP,
    DENSITY_SCALE,
    FONT,
    NEUTRAL,
    PALETTE,
    base_layout,
    category_colors,
    log_colorscale,
)

DENSITY_THRESHOLD = 150_000
SAMPLE_BUDGET = 20_000
MAX_CATEGORY_TRACES = 24


def density_heatmap(
    xa: npt.ArrayLike,
    ya: npt.ArrayLike,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    bins: int,
    stops: Sequence[tuple[float, str]],
    name: str,
) -> go.Heatmap:
    """Every point as counts on a `bins` x `bins` grid (empty cells transparent, log-like colours)."""
    counts, xe, ye = histogram2d(xa, ya, bins, x_range, y_range)
    z = counts.astype(np.float32)
    z[counts == 0] = np.nan
    top = max(int(counts.max()), 2)
    return go.Heatmap(
        z=z,
        x=((xe[:-1] + xe[1:]) / 2).astype(np.float32),
        y=((ye[:-1] + ye[1:]) / 2).astype(np.float32),
        zmin=1,
        zmax=top,
        colorscale=log_colorscale(stops, top),
        showscale=False,
        hovertemplate="%{z:,} points here<extra></extra>",
        name=name,
        showlegend=False,
        zsmooth=False,
    )


@dataclass
class PlaneStats:
    """What the plot shows, for the caption under it."""

    total: int
    drawn: int
    density: bool
    non_finite: int = 0
    notes: list[str] = field(default_factory=list)

    def caption(self) -> str:
        parts = [f"{self.total:,} points"]
        if self.density:
            parts.append(f"density layer over all of them + {self.drawn:,} sampled markers (sparse regions kept)")
        if self.non_finite:
            parts.append(f"{self.non_finite:,} without a finite value not drawn")
        return " · ".join(parts + self.notes)


def _marginal_axes(layout: dict[str, Any]) -> None:
    hidden = {"showticklabels": False, "showgrid": False, "zeroline": False, "showline": False, "ticks": ""}
    layout["xaxis2"] = {**hidden, "domain": [0.87, 1.0], "anchor": "y", "fixedrange": True}
    layout["yaxis2"] = {**hidden, "domain": [0.86, 1.0], "anchor": "x", "fixedrange": True}
    layout["barmode"] = "stack"
    layout["bargap"] = 0.04


def _marginals(
    fig: go.Figure,
    xa: FloatArray,
    ya: FloatArray,
    codes: npt.NDArray[Any] | None,
    groups: Sequence[tuple[int, str, str]],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    nbins: int = 60,
) -> None:
    """Stacked histograms of x (top) and y (right), one bar trace per (code, name, colour) group."""
    bx = bin_index(xa, *x_range, nbins)
    by = bin_index(ya, *y_range, nbins)
    ngroups = max([g[0] for g in groups], default=0) + 1
    gcodes = np.zeros(len(xa), dtype=np.int64) if codes is None else np.asarray(codes, dtype=np.int64)
    valid = (gcodes >= 0) & (gcodes < ngroups)
    okx = valid & (bx >= 0)
    oky = valid & (by >= 0)
    hx_all = np.bincount(gcodes[okx] * nbins + bx[okx], minlength=ngroups * nbins).reshape(ngroups, nbins)
    hy_all = np.bincount(gcodes[oky] * nbins + by[oky], minlength=ngroups * nbins).reshape(ngroups, nbins)
    xe = np.linspace(*x_range, nbins + 1)
    ye = np.linspace(*y_range, nbins + 1)
    xc = ((xe[:-1] + xe[1:]) / 2).astype(np.float32)
    yc = ((ye[:-1] + ye[1:]) / 2).astype(np.float32)
    for code, name, color in groups:
        common = {
            "marker": {"color": color, "line": {"width": 0}},
            "showlegend": False,
            "legendgroup": name,
            "name": name,
            "opacity": 0.9,
        }
        fig.add_trace(
            go.Bar(
                x=xc, y=hx_all[code].astype(np.int32), width=float(xe[1] - xe[0]), xaxis="x", yaxis="y2",
                hovertemplate="%{x:.4g}: %{y:,}<extra>" + name + "</extra>", **common,
            )
        )  # fmt: skip
        fig.add_trace(
            go.Bar(
                y=yc, x=hy_all[code].astype(np.int32), width=float(ye[1] - ye[0]), orientation="h", xaxis="x2",
                yaxis="y", hovertemplate="%{y:.4g}: %{x:,}<extra>" + name + "</extra>", **common,
            )
        )  # fmt: skip


def _marker_size(n: int) -> float:
    if n <= 2_000:
        return 7.0
    if n <= 20_000:
        return 5.0
    if n <= 80_000:
        return 3.5
    return 2.5


def plane_figure(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    ids: npt.ArrayLike,
    *,
    x_label: str,
    y_label: str,
    codes: npt.ArrayLike | None = None,
    categories: Sequence[str] | None = None,
    values: npt.ArrayLike | None = None,
    value_label: str = "",
    contour_codes: npt.ArrayLike | None = None,
    contour_names: Sequence[str] | None = None,
    contour_colors: Mapping[str, str] | None = None,
    shapes: Sequence[dict[str, Any]] = (),
    uirevision: str | None = None,
    density_threshold: int = DENSITY_THRESHOLD,
    sample_budget: int = SAMPLE_BUDGET,
    marginals: bool = True,
) -> tuple[go.Figure, PlaneStats]:
    """The quality plane: scatter (or density layer + density-aware sample), marginals, contours.

    Colour by category (`codes` into `categories`, e.g. task types or a metadata field) or by a metric
    (`values`, a colour scale); `contour_codes`/`contour_names` add per-group 50% / 90% highest-density
    contours. Markers carry the sample id as customdata, for the detail view.
    """
    xa = np.asarray(x, dtype=np.float32)
    ya = np.asarray(y, dtype=np.float32)
    ia = np.asarray(ids)
    n = int(xa.size)
    finite = np.isfinite(xa) & np.isfinite(ya)
    n_finite = int(finite.sum())
    density = n_finite > density_threshold
    stats = PlaneStats(total=n, drawn=n_finite, density=density, non_finite=n - n_finite)
    if n_finite == 0:
        return empty_figure("No scored points for these axes yet."), stats
    layout = base_layout(x_label, y_label, uirevision)
    if marginals:
        _marginal_axes(layout)
    fig = go.Figure(layout=layout)
    x_range = finite_range(xa[finite])
    y_range = finite_range(ya[finite])

    if density:
        fig.add_trace(density_heatmap(xa, ya, x_range, y_range, 200, DENSITY_SCALE, "density (all points)"))
        keep = density_sample(xa, ya, sample_budget)
        stats.drawn = int(keep.size)
    else:
        keep = np.flatnonzero(finite)

    # Over a density layer, markers stay small and light so the layer's shading shows through the core.
    size = 2.0 if density else _marker_size(int(keep.size))
    opacity = 0.32 if density else (0.75 if keep.size < 20_000 else 0.6)
    if contour_codes is not None:
        opacity *= 0.45
    hover = "id %{customdata}<br>x %{x:.4g}<br>y %{y:.4g}<extra>%{fullData.name}</extra>"
    xk, yk, ik = xa[keep], ya[keep], ia[keep]
    groups: list[tuple[int, str, str]] = [ALL_GROUP]  # marginal histograms: (code, name, colour)
    group_codes: npt.NDArray[Any] | None = None

    if values is not None:
        va = np.asarray(values, dtype=np.float32)
        vk = va[keep]
        ok = np.isfinite(vk)
        lo, hi = finite_range(va[np.isfinite(va)], 0.0)
        fig.add_trace(
            go.Scattergl(
                x=xk[ok], y=yk[ok], customdata=ik[ok], mode="markers", name=value_label or "value",
                marker={
                    "size": size, "opacity": opacity, "color": vk[ok], "colorscale": "Viridis", "cmin": lo, "cmax": hi,
                    "colorbar": {"title": {"text": value_label, "side": "right"}, "thickness": 10, "len": 0.6,
                                 "x": 1.01, "xanchor": "left", "y": 0.42, "outlinewidth": 0},
                },
                hovertemplate="id %{customdata}<br>x %{x:.4g}<br>y %{y:.4g}<br>" + (value_label or "value")
                + " %{marker.color:.4g}<extra></extra>",
                showlegend=False,
            )
        )  # fmt: skip
        fig.update_layout(margin={"r": 72})
        if (~ok).any():
            fig.add_trace(
                go.Scattergl(
                    x=xk[~ok], y=yk[~ok], customdata=ik[~ok], mode="markers", name="no value",
                    marker={"size": size, "opacity": opacity, "color": NEUTRAL}, hovertemplate=hover,
                )
            )  # fmt: skip
    elif codes is not None and categories is not None and 0 < len(categories) <= MAX_CATEGORY_TRACES:
        ca = np.asarray(codes)
        colors = category_colors(list(categories))
        ck = ca[keep]
        valid = (ca >= 0) & (ca < len(categories))
        totals = np.bincount(ca[valid].astype(np.int64), minlength=len(categories))
        groups, group_codes = [], ca
        for code, name in enumerate(categories):
            if int(totals[code]) == 0:
                continue
            sel = ck == code
            fig.add_trace(
                go.Scattergl(
                    x=xk[sel], y=yk[sel], customdata=ik[sel], mode="markers", name=f"{name} ({int(totals[code]):,})",
                    legendgroup=name, hovertemplate=hover,
                    marker={"size": size, "opacity": opacity, "color": colors[name], "line": {"width": 0}},
                )
            )  # fmt: skip
            groups.append((code, name, colors[name]))
        other = ~np.isin(ck, np.arange(len(categories)))
        if other.any():
            fig.add_trace(
                go.Scattergl(
                    x=xk[other], y=yk[other], customdata=ik[other], mode="markers", name="(none)",
                    marker={"size": size, "opacity": opacity, "color": NEUTRAL}, hovertemplate=hover,
                )
            )  # fmt: skip
    else:
        fig.add_trace(
            go.Scattergl(
                x=xk, y=yk, customdata=ik, mode="markers", name="samples", hovertemplate=hover, showlegend=False,
                marker={"size": size, "opacity": opacity, "color": PALETTE[0]},
            )
        )  # fmt: skip

    if contour_codes is not None and contour_names:
        _add_contours(fig, xa, ya, np.asarray(contour_codes), list(contour_names), contour_colors, x_range, y_range)
    if marginals:
        _marginals(fig, xa, ya, group_codes, groups or [ALL_GROUP], x_range, y_range)
    if shapes:
        fig.update_layout(shapes=list(shapes))
    return fig, stats


def _add_contours(
    fig: go.Figure,
    xa: FloatArray,
    ya: FloatArray,
    codes: npt.NDArray[Any],
    names: list[str],
    colors: Mapping[str, str] | None,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    max_bins: int = 56,
) -> None:
    palette = dict(colors) if colors else category_colors(names)
    valid = (codes >= 0) & (codes < len(names))
    sizes = np.bincount(codes[valid].astype(np.int64), minlength=len(names))
    for code, name in enumerate(names):
        n = int(sizes[code])
        if n < 10:
            continue
        mask = codes == code
        # Coarser grids for small groups: a few hundred points give one smooth outline, not islands.
        bins = int(np.clip(round(math.sqrt(n) * 0.6), 8, max_bins))
        counts, xe, ye = histogram2d(xa[mask], ya[mask], bins, x_range, y_range)
        z = smooth(smooth(counts.astype(np.float64)))
        t50, t90 = hdr_levels(z, (0.5, 0.9))
        if t50 <= 0:
            continue
        step = max(t50 - t90, t50 * 1e-6)
        color = palette.get(name, PALETTE[code % len(PALETTE)])
        fig.add_trace(
            go.Contour(
                z=z.astype(np.float32),
                x=((xe[:-1] + xe[1:]) / 2).astype(np.float32),
                y=((ye[:-1] + ye[1:]) / 2).astype(np.float32),
                contours={"coloring": "none", "start": t90, "end": t50, "size": step, "showlabels": False},
                line={"color": color, "width": 2.2, "smoothing": 1.0},
                showscale=False,
                name=f"{name}: 50% / 90% of its samples",
                legendgroup=f"contour-{name}",
                showlegend=True,
                hoverinfo="skip",
            )
        )


def empty_figure(message: str) -> go.Figure:
    """A blank plane with a message in the middle (no data yet, or an error in words)."""
    return go.Figure(
        layout={
            "template": "none",
            "font": {"family": FONT, "size": 13, "color": "#5B6577"},
            "xaxis": {"visible": False},
            "yaxis": {"visible": False},
            "margin": {"l": 16, "r": 16, "t": 16, "b": 16},
            "annotations": [
                {
                    "text": message,
                    "xref": "paper",
                    "yref": "paper",
                    "x": 0.5,
                    "y": 0.5,
                    "showarrow": False,
                    "font": {"size": 15, "color": "#5B6577"},
                }
            ],
            "dragmode": False,
        }
    )
