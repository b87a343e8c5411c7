"""The data map beside the quality plane, linked: a finished `projection` run's `map_x`, `map_y` drawn like the plane
(same colours and filters, same lasso and box tools), and the current selection highlighted on both views.

Linking is membership, decided by the server: a lasso on the map puts its polygon *with the map's axes* in the
page's region store (assets/overlay.js), so the selection panel, gallery, save and exports resolve that recipe;
whatever the last selection was (map lasso, plane lasso, a preset), its member ids come from
`POST /datasets/{ds}/selections/members` and are laid over both views as one trace each.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from dash import Dash, Input, Output, Patch, State, dcc, html
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.api_shapes import ApiError
from frontend.callbacks import browser_callback, named_callback
from frontend.context import UiContext, mask_for
from frontend.errors import Outputs
from frontend.figures import GRAPH_CONFIG, empty_figure
from frontend.figures.overlay import LINK_COLOR, map_figure, overlay_trace
from frontend.pages.explore.colours import cluster_labels, cluster_run, colour_kwargs
from frontend.pages.explore.query import points_for, selection_body
from frontend.pages.explore.viewport import is_sampled, total_in_view

MAP_METRICS = ("map_x", "map_y")
HIDDEN = {"display": "none"}


def projection_axes(options: list[dict[str, str]]) -> dict[str, Any] | None:
    """The newest run with both `map_x` and `map_y` among the axis options: {x, y, run}, or None."""
    by_run: dict[int, set[str]] = {}
    for o in options:
        run, _, metric = str(o.get("value", "")).partition(":")
        if run.isdigit() and metric in MAP_METRICS:
            by_run.setdefault(int(run), set()).add(metric)
    runs = [r for r, metrics in by_run.items() if metrics == set(MAP_METRICS)]
    if not runs:
        return None
    newest = max(runs)
    return {"x": f"{newest}:map_x", "y": f"{newest}:map_y", "run": newest}


def map_toggle() -> html.Div:
    """'show data map' (shown only when the dataset has a finished projection run)."""
    return html.Div(
        dcc.Checklist(
            id=ids.EX_MAP_SHOW,
            options=[{"label": "show data map (linked: a lasso on either selects on both)", "value": "on"}],
            value=[],
            className="checklist toggle",
            inputClassName="check",
        ),
        id=ids.EX_MAP_TOGGLE,
        className="map-toggle",
        style=HIDDEN,
    )


def map_block() -> html.Div:
    """The map graph and its caption (hidden until shown), and the stores of the linked overlays."""
    return html.Div(
        [
            dcc.Store(id=ids.EX_MAP_AXES, data=None),
            dcc.Store(id=ids.EX_LINK, data=None),
            dcc.Store(id=ids.EX_OVERLAY_ACK, data=None),
            dcc.Graph(
                id=ids.EX_MAP,
                figure=empty_figure("Loading the data map…"),
                config={**GRAPH_CONFIG, "toImageButtonOptions": {"format": "png", "filename": "qspace-map"}},
                className="plane data-map",
                style={"height": "660px"},
            ),
            html.Div(id=ids.EX_MAP_INFO, className="plot-info"),
        ],
        id=ids.EX_MAP_WRAP,
        className="map-col",
        style=HIDDEN,
    )


def overlay_key(*parts: Any) -> str:
    """A short fingerprint of what an overlay was drawn from (the browser redraws only when it changes)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def plane_revision(setup: dict[str, Any], x: str, y: str) -> str:
    return f"{setup['ds']}|{x}|{y}"  # the plane figure's uirevision (explore/callbacks.py)


def map_revision(setup: dict[str, Any], axes: dict[str, Any]) -> str:
    return f"map|{setup['ds']}|{axes['x']}|{axes['y']}"


def register(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output={"axes": Output(ids.EX_MAP_AXES, "data"), "toggle_style": Output(ids.EX_MAP_TOGGLE, "style")},
        inputs={"setup": Input(ids.EX_SETUP, "data")},
    )
    def find_map(setup: dict[str, Any] | None) -> Outputs:
        if not setup:
            raise PreventUpdate
        axes = projection_axes(setup.get("axis_options") or [])
        return {"axes": axes, "toggle_style": {"display": "block"} if axes else HIDDEN}

    @named_callback(
        app,
        output={
            "figure": Output(ids.EX_MAP, "figure"),
            "caption": Output(ids.EX_MAP_INFO, "children"),
            "wrap_style": Output(ids.EX_MAP_WRAP, "style"),
            "views_class": Output(ids.EX_VIEWS, "className"),
        },
        inputs={
            "show": Input(ids.EX_MAP_SHOW, "value"),
            "axes": Input(ids.EX_MAP_AXES, "data"),
            "color": Input(ids.EX_COLOR, "value"),
            "tasks": Input(ids.EX_TASKS, "value"),
            "meta_values": Input(ids.EX_META_VALUES, "value"),
        },
        state={"setup": State(ids.EX_SETUP, "data")},
        alert="caption",
    )
    def draw_map(
        show: list[str] | None,
        axes: dict[str, Any] | None,
        color: str | None,
        tasks: list[str] | None,
        meta_values: list[str] | None,
        setup: dict[str, Any] | None,
    ) -> Outputs:
        if not setup or not show or not axes:
            return {"wrap_style": HIDDEN, "views_class": "views", "caption": None}
        points, scratch = points_for(ctx, setup, axes["x"], axes["y"], color)
        meta_on = bool(color and color.startswith("meta:"))
        mask = mask_for(points, tasks, meta_values if meta_on else None)
        sel = (lambda a: a) if mask is None else (lambda a: a[mask])
        run = cluster_run(color)
        names = cluster_labels(ctx, run, scratch) if run is not None else None
        fig, stats = map_figure(
            sel(points.x),
            sel(points.y),
            sel(points.ids),
            axes=axes,
            x_label=f"map x (projection run {axes['run']})",
            y_label="map y",
            uirevision=map_revision(setup, axes),
            **colour_kwargs(points, color, setup.get("labels") or {}, sel, names),
        )
        if mask is not None:
            stats.notes.append(f"filtered from {len(points):,}")
        if is_sampled(points):  # above the UI's point budget: say so, the dataset is bigger than what is drawn
            stats.notes.append(f"a density-aware sample of {total_in_view(points):,}")
        caption = [html.Span(f"data map · projection run {axes['run']} · {stats.caption()}")]
        return {"figure": fig, "caption": caption, "wrap_style": {"display": "block"}, "views_class": "views with-map"}

    @named_callback(
        app,
        output={"figure": Output(ids.EX_MAP, "figure", allow_duplicate=True)},
        inputs={"region": Input(ids.EX_REGION, "data")},
        prevent_initial_call=True,
    )
    def map_outline(region: dict[str, Any] | None) -> Outputs:
        """A selection made elsewhere (the plane, a preset, Clear) drops the map's drawn outline."""
        if region and region.get("view") == "map":
            raise PreventUpdate  # the browser shows exactly the drawn outline
        patch = Patch()
        patch["layout"]["shapes"] = []
        # The drawn outline never reached the figure prop (qspace.js keeps it out, to spare a whole redraw),
        # so Plotly would keep it as an analyst's edit while the edit revision stays: a new one drops it.
        patch["layout"]["editrevision"] = uuid.uuid4().hex
        return {"figure": patch}

    @named_callback(
        app,
        output={"link": Output(ids.EX_LINK, "data")},
        inputs={
            "region": Input(ids.EX_REGION, "data"),
            "tasks": Input(ids.EX_TASKS, "value"),
            "meta_values": Input(ids.EX_META_VALUES, "value"),
            "show": Input(ids.EX_MAP_SHOW, "value"),
            "axes": Input(ids.EX_MAP_AXES, "data"),
            "x": Input(ids.EX_X, "value"),
            "y": Input(ids.EX_Y, "value"),
        },
        state={
            "color": State(ids.EX_COLOR, "value"),
            "setup": State(ids.EX_SETUP, "data"),
            "token": State(ids.TOKEN, "value"),
            "meta": State(ids.EX_META, "data"),
        },
        prevent_initial_call=True,
    )
    def link(
        region: dict[str, Any] | None,
        tasks: list[str] | None,
        meta_values: list[str] | None,
        show: list[str] | None,
        axes: dict[str, Any] | None,
        x: str | None,
        y: str | None,
        color: str | None,
        setup: dict[str, Any] | None,
        token: str | None,
        meta: dict[str, Any] | None,
    ) -> Outputs:
        """The current selection's members, highlighted on the plane and on the map (while the map is shown)."""
        if not setup or not x or not y:
            raise PreventUpdate
        whole = not region or ((region.get("region") or {}).get("type") in (None, "all"))
        if not show or not axes or whole:
            return {"link": None}
        body = selection_body({**setup, "meta_fields": meta or {}}, x, y, region, tasks, color, meta_values)
        name = str((region or {}).get("label") or "selection")
        out: dict[str, Any] = {}
        try:
            members = ctx.api.recipe_members(int(setup["ds"]), body, token=token or None)
            for graph, (gx, gy), rev in (
                (ids.EX_GRAPH, (x, y), plane_revision(setup, x, y)),
                (ids.EX_MAP, (axes["x"], axes["y"]), map_revision(setup, axes)),
            ):
                points = points_for(ctx, setup, gx, gy, color)[0]
                trace, _ = overlay_trace(
                    points.x, points.y, points.ids, members, name=name, color=LINK_COLOR, group="link"
                )
                out[graph] = {"key": overlay_key(body, gx, gy, len(members)), "uirevision": rev, "traces": [trace]}
        except ApiError:
            return {"link": None}  # the selection panel says what is wrong with this recipe (its preview fails too)
        return {"link": out}

    browser_callback(
        app,
        "overlay",
        output=Output(ids.EX_OVERLAY_ACK, "data"),
        inputs={"link": Input(ids.EX_LINK, "data"), "compare": Input(ids.CMP_OVERLAY, "data")},
    )
