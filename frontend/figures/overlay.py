"""Selections drawn over a plane or the data map: member markers as extra traces, in plain JSON-ready dicts.

A view shows which of its points belong to a selection the server resolved (the linked lasso of the other view,
or a saved selection being compared): the member ids come from the API, these functions only place them. The
browser lays the traces over the figure it already has (assets/overlay.js), so the base figure is never sent
again. Each trace carries `meta.qspace` (its group) and the sample ids as customdata.

Also here: the data map's figure (the plane's builder, without marginals) and cluster labels as categories.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go

from frontend.figures.plane import PlaneStats, plane_figure

OVERLAY_BUDGET = 20_000  # markers per overlay trace; more members are drawn as an even random subset
LINK_COLOR = "#111827"
COMPARE_COLORS = ("#E4572E", "#17A398", "#7B2CBF")  # one per compared selection (2-3)
MAX_CLUSTER_CATEGORIES = 24  # more clusters than this colour by a scale (plane.MAX_CATEGORY_TRACES)


def member_positions(point_ids: npt.ArrayLike, members: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Positions of the points whose id is a member (members need not be sorted; ids absent there are ignored)."""
    ids = np.asarray(point_ids, dtype=np.int64)
    m = np.unique(np.asarray(members, dtype=np.int64))
    if m.size == 0 or ids.size == 0:
        return np.empty(0, dtype=np.intp)
    pos = np.clip(np.searchsorted(m, ids), 0, m.size - 1)
    return np.flatnonzero(m[pos] == ids)


def overlay_trace(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    ids: npt.ArrayLike,
    members: npt.ArrayLike,
    *,
    name: str,
    color: str,
    group: str,
    outline: bool = False,
    budget: int = OVERLAY_BUDGET,
    seed: int = 0,
) -> tuple[dict[str, Any], int]:
    """One trace of the members among the points (x, y, ids) with finite coordinates, and how many there are.

    `outline` draws open rings (saved selections compared: several can overlap and stay readable); otherwise
    filled markers with a white edge (the linked selection). Above `budget` members a seeded random subset is drawn.
    """
    xa, ya, ia = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32), np.asarray(ids)
    pos = member_positions(ia, members)
    pos = pos[np.isfinite(xa[pos]) & np.isfinite(ya[pos])]
    total = int(pos.size)
    if total > budget:
        pos = np.sort(np.random.default_rng(seed).choice(pos, size=budget, replace=False))
    marker: dict[str, Any] = (
        {"symbol": "circle-open", "size": 9, "color": color, "line": {"width": 1.6, "color": color}}
        if outline
        else {"size": 6, "color": color, "opacity": 0.95, "line": {"width": 0.8, "color": "#FFFFFF"}}
    )
    label = f"{name} ({total:,}{', ' + format(budget, ',') + ' drawn' if total > budget else ''})"
    trace = {
        "type": "scattergl",
        "mode": "markers",
        "x": xa[pos].astype(float).tolist(),
        "y": ya[pos].astype(float).tolist(),
        "customdata": ia[pos].astype(int).tolist(),
        "name": label,
        "legendgroup": f"{group}-{name}",
        "showlegend": True,
        "marker": marker,
        "hovertemplate": "id %{customdata}<br>x %{x:.4g}<br>y %{y:.4g}<extra>" + name + "</extra>",
        "meta": {"qspace": group},
    }
    return trace, total


def compare_traces(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    ids: npt.ArrayLike,
    selections: Sequence[tuple[str, npt.ArrayLike]],
    budget: int = OVERLAY_BUDGET,
) -> list[dict[str, Any]]:
    """An outline trace per (name, member ids) of 2-3 saved selections, each in its own colour."""
    return [
        overlay_trace(x, y, ids, members, name=name, color=COMPARE_COLORS[k % len(COMPARE_COLORS)],
                      group="compare", outline=True, budget=budget, seed=k)[0]
        for k, (name, members) in enumerate(selections)
    ]  # fmt: skip


def cluster_categories(
    values: npt.ArrayLike, labels: Sequence[str] | None = None
) -> tuple[npt.NDArray[np.int16], list[str]]:
    """A `cluster` metric (0..k-1 as floats, NaN for none) as category codes (-1: none) and their names,
    "3" or "3 · dog frisbee" when the clusters run has labels."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v) & (v >= 0)
    codes = np.full(v.shape, -1, dtype=np.int16)
    codes[ok] = v[ok].astype(np.int16)
    k = int(codes.max()) + 1 if ok.any() else 0
    names = [f"{c} · {labels[c]}" if labels and c < len(labels) and labels[c] else str(c) for c in range(k)]
    return codes, names


def map_figure(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    ids: npt.ArrayLike,
    *,
    axes: dict[str, str],
    x_label: str = "map x",
    y_label: str = "map y",
    uirevision: str | None = None,
    **colour: Any,
) -> tuple[go.Figure, PlaneStats]:
    """The data map: the plane's builder over map coordinates (same colours, density layer and lasso tools), no
    marginals, square-ish axes; `layout.meta.axes` names its axes for the browser's lasso (assets/overlay.js)."""
    fig, stats = plane_figure(
        x, y, ids, x_label=x_label, y_label=y_label, uirevision=uirevision, marginals=False, **colour
    )
    if stats.drawn and len(fig.data):
        fig.update_layout(
            xaxis={"domain": [0.0, 1.0], "showticklabels": False, "ticks": "", "showgrid": False},
            yaxis={"domain": [0.0, 1.0], "showticklabels": False, "ticks": "", "showgrid": False},
            meta={"axes": {"x": axes["x"], "y": axes["y"]}, "view": "map"},
        )
    return fig, stats
