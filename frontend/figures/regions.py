"""Region recipes outlined on the plane: drawn ones (editable) and the presets' outlines (fixed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from frontend.figures.density import finite_range, quantile_edges, top_corner


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
