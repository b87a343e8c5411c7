"""Pure figure builders: numpy arrays in, plotly figures (or plain data) out. No I/O, no Dash.

The plane stays fluid at 1M points because the browser never gets 1M markers: above
`DENSITY_THRESHOLD` points it gets a 2D-histogram layer over every point plus a *density-aware* sample
(sparse cells keep every point, dense cores are thinned). Counts never come from here: selections are
resolved by the server over every point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go

__all__ = [
    "DENSITY_THRESHOLD",
    "PALETTE",
    "SAMPLE_BUDGET",
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

DENSITY_THRESHOLD = 150_000
SAMPLE_BUDGET = 20_000
MAX_CATEGORY_TRACES = 24

# Colour-blind-aware categorical palette (Tableau 10 order, then a few more).
PALETTE = (
    "#4C78A8",
    "#F58518",
    "#54A24B",
    "#E45756",
    "#72B7B2",
    "#B279A2",
    "#EECA3B",
    "#9D755D",
    "#FF9DA6",
    "#5E6AD2",
    "#2F9E8F",
    "#C44E9C",
)
NEUTRAL = "#A0A7B4"
NEUTRAL_NAMES = frozenset({"none", "clean", "", "null", "None", "ok", "unknown", "(none)"})
STAGE_COLORS = ("#7FB3E0", "#3B82C4", "#1D4F91", "#0B2E5E", "#06193A")
FONT = "Inter, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
DENSITY_SCALE = ((0.0, "#E3EBF6"), (0.3, "#A9C1E0"), (0.65, "#4F7DB8"), (1.0, "#132C55"))
GREY_SCALE = ((0.0, "#F1F3F6"), (0.5, "#B8C0CC"), (1.0, "#4B5563"))
ALL_GROUP = (0, "all", "#8C9AB0")

FloatArray = npt.NDArray[np.floating[Any]]
IntArray = npt.NDArray[np.integer[Any]]


# --------------------------------------------------------------------------------------------------
# small numeric helpers
# --------------------------------------------------------------------------------------------------


def category_colors(names: Sequence[str]) -> dict[str, str]:
    """A colour per category name that depends only on the set of names (assigned in sorted order), so
    the plot, its legend, the filters and the gallery agree; 'none'-like names (clean samples) are grey."""
    out: dict[str, str] = {}
    k = 0
    for name in sorted(set(names), key=str):
        if str(name) in NEUTRAL_NAMES:
            out[name] = NEUTRAL
        else:
            out[name] = PALETTE[k % len(PALETTE)]
            k += 1
    return out


def finite_range(v: npt.ArrayLike, pad: float = 0.02) -> tuple[float, float]:
    """(lo, hi) of the finite values, widened by `pad` of the span; (0, 1) when there are none."""
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return 0.0, 1.0
    lo, hi = float(a.min()), float(a.max())
    span = hi - lo
    if span <= 0:
        span = abs(lo) * 0.1 or 1.0
        return lo - span, hi + span
    return lo - pad * span, hi + pad * span


def quantile_edges(v: npt.ArrayLike, n: int) -> list[float]:
    """The n+1 edges of an n-quantile partition of the finite values (linear, as the server does)."""
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return [0.0] * (n + 1)
    return [float(e) for e in np.quantile(a, np.linspace(0.0, 1.0, n + 1))]


def _bin_index(v: npt.ArrayLike, lo: float, hi: float, bins: int) -> npt.NDArray[np.int64]:
    """Bin of each value on `bins` equal bins over [lo, hi] (hi falls in the last bin); -1 outside or NaN."""
    a = np.asarray(v, dtype=np.float64)
    span = hi - lo if hi > lo else 1.0
    with np.errstate(invalid="ignore"):
        idx = np.floor((a - lo) * (bins / span))
        inside = np.isfinite(a) & (a >= lo) & (a <= hi)
    out = np.where(inside, np.minimum(idx, bins - 1), -1)
    return out.astype(np.int64)


def histogram2d(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    bins: int,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
) -> tuple[npt.NDArray[np.int64], FloatArray, FloatArray]:
    """Counts as (ny, nx) (rows = y, the way plotly's heatmap wants them) and the bin edges.

    The same bins as numpy.histogram2d (the last one closed on the right), in one bincount pass.
    """
    ix = _bin_index(x, *x_range, bins)
    iy = _bin_index(y, *y_range, bins)
    ok = (ix >= 0) & (iy >= 0)
    counts = np.bincount(iy[ok] * bins + ix[ok], minlength=bins * bins).reshape(bins, bins)
    xe = np.linspace(x_range[0], x_range[1], bins + 1)
    ye = np.linspace(y_range[0], y_range[1], bins + 1)
    return counts.astype(np.int64), xe, ye


def _water_level(counts: npt.NDArray[np.int64], budget: int) -> float:
    """The cap c with sum(min(counts, c)) == budget (for counts that sum above budget)."""
    cs = np.sort(counts[counts > 0]).astype(np.float64)
    m = cs.size
    prefix = np.concatenate([[0.0], np.cumsum(cs)])
    k = np.arange(m)
    total_at = prefix[:-1] + cs * (m - k)  # sum(min(counts, cs[k]))
    first = int(np.searchsorted(total_at, budget, side="right"))
    if first >= m:
        return float(cs[-1])
    return float((budget - prefix[first]) / (m - first))


def density_sample(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    budget: int,
    bins: int = 128,
    seed: int = 0,
) -> npt.NDArray[np.int64]:
    """Indices of at most `budget` points, thinned where the plane is dense and kept where it is sparse.

    On a `bins` x `bins` grid, a cell with `k` points keeps each with probability min(1, c / k), where
    the water level `c` makes the expected total equal `budget`: sparse cells (k <= c) keep every point,
    so outliers always show; dense cores are thinned. Deterministic for a seed, O(n), returned sorted.
    Points with a non-finite coordinate are never drawn.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(xa) & np.isfinite(ya))
    if ok.size <= budget:
        return ok.astype(np.int64)
    if budget <= 0:
        return np.empty(0, dtype=np.int64)
    xr = finite_range(xa[ok], 0.0)
    yr = finite_range(ya[ok], 0.0)
    cell = _bin_index(xa[ok], *xr, bins) * bins + _bin_index(ya[ok], *yr, bins)
    counts = np.bincount(cell, minlength=bins * bins)
    level = _water_level(counts, budget)
    rng = np.random.default_rng(seed)
    keep = rng.random(ok.size) * counts[cell] < level
    chosen = ok[keep]
    if chosen.size > budget:  # the draw overshot its expectation: drop a random few
        chosen = np.sort(rng.choice(chosen, size=budget, replace=False))
    return chosen.astype(np.int64)


def hdr_levels(counts: npt.ArrayLike, fractions: Sequence[float] = (0.5, 0.9)) -> list[float]:
    """Density thresholds whose super-level sets hold each fraction of the mass (highest-density regions).

    Returned in the order of `fractions`; a larger fraction gives a lower (or equal) threshold.
    """
    c = np.sort(np.asarray(counts, dtype=np.float64).ravel())[::-1]
    total = c.sum()
    if total <= 0:
        return [0.0 for _ in fractions]
    cum = np.cumsum(c) / total
    out = []
    for f in fractions:
        k = int(np.searchsorted(cum, min(max(f, 0.0), 1.0), side="left"))
        out.append(float(c[min(k, c.size - 1)]))
    return out


def _smooth(z: FloatArray) -> FloatArray:
    """A 3x3 binomial blur (edges padded), enough to make contours of a coarse histogram readable."""
    k = np.array([1.0, 2.0, 1.0]) / 4.0
    p = np.pad(z, 1, mode="edge")
    rows = k[0] * p[:-2, :] + k[1] * p[1:-1, :] + k[2] * p[2:, :]
    return np.asarray(k[0] * rows[:, :-2] + k[1] * rows[:, 1:-1] + k[2] * rows[:, 2:], dtype=np.float64)


def top_corner(x: npt.ArrayLike, y: npt.ArrayLike, percent: float, axes: str) -> tuple[float | None, float | None]:
    """Where the paper's top-p% region starts, for drawing: (x threshold, y threshold); None = free axis.

    `axes` "x" (DIL), "y" (DIS) or "both" (DIQ: by the smaller of the two ranks, so the region is the
    quadrant above both thresholds). Display only; the server decides membership.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    m = xa.size
    if m == 0:
        return None, None
    k = max(1, min(m, math.floor(percent / 100.0 * m + 0.5)))
    if axes == "x":
        return float(np.partition(xa, m - k)[m - k]), None
    if axes == "y":
        return None, float(np.partition(ya, m - k)[m - k])
    xs = np.sort(xa)
    ys = np.sort(ya)
    rx = np.searchsorted(xs, xa, side="left")
    ry = np.searchsorted(ys, ya, side="left")
    score = np.minimum(rx, ry)
    s = int(np.partition(score, m - k)[m - k])
    return float(xs[s]), float(ys[s])


def shares(by_task_type: Mapping[str, int], dataset_task_types: Mapping[str, int]) -> list[dict[str, Any]]:
    """Rows {task_type, count, share, base_share, lift} for the selection panel, largest first.

    `share` is the type's part of the selection, `base_share` its part of the dataset, `lift` their ratio.
    """
    total = sum(by_task_type.values())
    base_total = sum(dataset_task_types.values())
    names = list(dict.fromkeys([*by_task_type, *dataset_task_types]))
    rows: list[dict[str, Any]] = []
    for name in names:
        n = int(by_task_type.get(name, 0))
        share = n / total if total else 0.0
        base = dataset_task_types.get(name, 0) / base_total if base_total else 0.0
        rows.append(
            {"task_type": name, "count": n, "share": share, "base_share": base, "lift": share / base if base else None}
        )
    rows.sort(key=lambda r: (-int(r["count"]), str(r["task_type"])))
    return rows


def log_colorscale(stops: Sequence[tuple[float, str]], zmax: float) -> list[list[Any]]:
    """A colour scale over counts 1..zmax that looks logarithmic (plotly scales are linear in z).

    Each colour stop sits where log(count) reaches its fraction, so z can stay the plain count (readable
    on hover) while the colours follow its logarithm.
    """
    zmax = max(float(zmax), 2.0)
    out: list[list[Any]] = []
    for frac, color in stops:
        count = math.exp(frac * math.log(zmax))  # 1 .. zmax, log-spaced
        out.append([(count - 1.0) / (zmax - 1.0), color])
    out[0][0], out[-1][0] = 0.0, 1.0
    return out


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


# --------------------------------------------------------------------------------------------------
# the plane
# --------------------------------------------------------------------------------------------------


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


def _base_layout(x_label: str, y_label: str, uirevision: str | None) -> dict[str, Any]:
    title_font = {"font": {"size": 13, "color": "#2B3445"}}
    axis: dict[str, Any] = {
        "zeroline": False,
        "showline": True,
        "linecolor": "#CBD2DC",
        "gridcolor": "#EEF1F5",
        "ticks": "outside",
        "tickcolor": "#CBD2DC",
    }
    return {
        "template": "none",
        "font": {"family": FONT, "size": 12, "color": "#3A4455"},
        "paper_bgcolor": "#FFFFFF",
        "plot_bgcolor": "#FFFFFF",
        "margin": {"l": 64, "r": 16, "t": 28, "b": 96},
        "xaxis": {**axis, "domain": [0.0, 0.85], "title": {**title_font, "text": x_label}, "anchor": "y"},
        "yaxis": {**axis, "domain": [0.0, 0.84], "title": {**title_font, "text": y_label}, "anchor": "x"},
        # The lasso and the box are Plotly's shape-drawing tools: drawing costs nothing per point (its
        # select mode would re-test every marker on every mouse move and hand all of them back).
        "dragmode": "drawclosedpath",
        "hovermode": "closest",
        "uirevision": uirevision,
        "showlegend": True,
        "legend": {
            "orientation": "h",
            "x": 0.0,
            "xanchor": "left",
            "y": -0.1,
            "yanchor": "top",
            "bgcolor": "rgba(255,255,255,0.85)",
            "itemclick": False,
            "itemdoubleclick": False,
            "itemsizing": "constant",
            "font": {"size": 12},
        },
        "hoverlabel": {"font": {"family": FONT, "size": 12}},
        "newshape": {
            "line": {"color": "#111827", "width": 1.6, "dash": "dot"},
            "fillcolor": "rgba(59,130,196,0.10)",
            "opacity": 1,
            "layer": "above",
        },
        "activeshape": {"fillcolor": "#3B82C4", "opacity": 0.12},
    }


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
    bx = _bin_index(xa, *x_range, nbins)
    by = _bin_index(ya, *y_range, nbins)
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
    layout = _base_layout(x_label, y_label, uirevision)
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
        z = _smooth(_smooth(counts.astype(np.float64)))
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


# --------------------------------------------------------------------------------------------------
# regions drawn on the plane
# --------------------------------------------------------------------------------------------------


def _rect(
    x0: float, x1: float, y0: float, y1: float, color: str = "#111827", fill: float = 0.06, drawn: bool = False
) -> dict[str, Any]:
    """A region outline; `drawn` ones (the analyst's box) stay editable, preset outlines do not."""
    shape: dict[str, Any] = {"type": "rect", "xref": "x", "yref": "y", "x0": x0, "x1": x1, "y0": y0, "y1": y1,
                             "layer": "above"}  # fmt: skip
    if drawn:
        shape.update(
            line={"color": color, "width": 1.6, "dash": "dot"},
            fillcolor="rgba(59,130,196,0.10)",
            name="qspace-region",
            editable=True,
        )
    else:
        shape.update(
            line={"color": color, "width": 1.6, "dash": "dash"},
            fillcolor=f"rgba(17,24,39,{fill})",
            name="qspace-preset",
            editable=False,
        )
    return shape


def _line(x0: float, x1: float, y0: float, y1: float) -> dict[str, Any]:
    return {
        "type": "line",
        "xref": "x",
        "yref": "y",
        "x0": x0,
        "x1": x1,
        "y0": y0,
        "y1": y1,
        "line": {"color": "#6B7280", "width": 1, "dash": "dot"},
        "layer": "above",
        "name": "qspace-preset",
    }


def region_shapes(
    region: Mapping[str, Any] | None,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
) -> list[dict[str, Any]]:
    """Layout shapes that outline a region recipe on the plane (display only; the server decides).

    Drawn regions (polygon, box) come back as editable shapes named "qspace-region"; preset outlines
    (grid cells, top p%, quantile bands) as fixed shapes named "qspace-preset".
    """
    if not region:
        return []
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    if xa.size == 0:
        return []
    xr = finite_range(xa)
    yr = finite_range(ya)
    kind = region.get("type")
    if kind == "polygon":
        pts = region.get("points") or []
        if len(pts) < 3:
            return []
        path = "M " + " L ".join(f"{float(px)!r},{float(py)!r}" for px, py in pts) + " Z"
        return [
            {
                "type": "path",
                "xref": "x",
                "yref": "y",
                "path": path,
                "line": {"color": "#111827", "width": 1.6, "dash": "dot"},
                "fillcolor": "rgba(59,130,196,0.10)",
                "layer": "above",
                "name": "qspace-region",
                "editable": True,
            }
        ]
    if kind == "box":
        bx = region.get("x") or [None, None]
        by = region.get("y") or [None, None]
        return [
            _rect(
                xr[0] if bx[0] is None else bx[0],
                xr[1] if bx[1] is None else bx[1],
                yr[0] if by[0] is None else by[0],
                yr[1] if by[1] is None else by[1],
                drawn=True,
            )
        ]
    if kind == "grid":
        n = int(region.get("n", 3))
        i, j = (int(c) for c in region.get("cell", (0, 0)))
        ex = quantile_edges(xa, n)
        ey = quantile_edges(ya, n)
        lines = [_line(e, e, yr[0], yr[1]) for e in ex[1:-1]] + [_line(xr[0], xr[1], e, e) for e in ey[1:-1]]
        x0 = xr[0] if i == 0 else ex[i]
        x1 = xr[1] if i == n - 1 else ex[i + 1]
        y0 = yr[0] if j == 0 else ey[j]
        y1 = yr[1] if j == n - 1 else ey[j + 1]
        return [*lines, _rect(x0, x1, y0, y1, fill=0.1)]
    if kind == "top":
        tx, ty = top_corner(xa, ya, float(region.get("percent", 5)), str(region.get("axes", "both")))
        return [_rect(xr[0] if tx is None else tx, xr[1], yr[0] if ty is None else ty, yr[1], fill=0.1)]
    if kind == "quantiles":
        qx = region.get("x") or (0.0, 1.0)
        qy = region.get("y") or (0.0, 1.0)
        ex2 = np.quantile(xa, [qx[0], qx[1]])
        ey2 = np.quantile(ya, [qy[0], qy[1]])
        return [
            _rect(
                xr[0] if qx[0] == 0 else float(ex2[0]),
                xr[1] if qx[1] == 1 else float(ex2[1]),
                yr[0] if qy[0] == 0 else float(ey2[0]),
                yr[1] if qy[1] == 1 else float(ey2[1]),
            )
        ]
    return []


# --------------------------------------------------------------------------------------------------
# the curriculum builder's plane
# --------------------------------------------------------------------------------------------------


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
    layout = _base_layout(x_label, y_label, uirevision)
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
