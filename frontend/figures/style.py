"""How the figures look: the palettes, a colour per category, log-like colour scales, the base layout,
and the plotly config of the plane graphs. Plain data, no Plotly objects."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

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

# The plane graphs' toolbar: Plotly's shape-drawing lasso and box instead of its select tools (see base_layout).
GRAPH_CONFIG: Any = {
    "displaylogo": False,
    "scrollZoom": True,
    "doubleClick": "reset+autosize",
    "modeBarButtonsToAdd": ["drawclosedpath", "drawrect", "eraseshape"],
    "modeBarButtonsToRemove": [
        "lasso2d",
        "select2d",
        "autoScale2d",
        "toggleSpikelines",
        "hoverClosestCartesian",
        "hoverCompareCartesian",
    ],
    "toImageButtonOptions": {"format": "png", "filename": "qspace-plane", "scale": 2},
}


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


def base_layout(x_label: str, y_label: str, uirevision: str | None) -> dict[str, Any]:
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
