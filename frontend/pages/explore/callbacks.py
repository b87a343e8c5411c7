"""Explore's callbacks: the region and the detail id (in the browser), the plane and its outline, the metadata
filter, the selection panel and gallery, saving. Every output, input and state by name (frontend.callbacks)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from dash import ALL, Dash, Input, Output, Patch, State, callback_context, html
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.api_shapes import ApiError
from frontend.callbacks import browser_callback, named_callback
from frontend.components import alert, sample_detail
from frontend.context import UiContext, mask_for
from frontend.errors import Outputs, describe
from frontend.figures import category_colors, plane_figure, region_shapes
from frontend.pages.explore import compare, map_view, neighbours, panels, search, viewport
from frontend.pages.explore.colours import cluster_labels, cluster_run, colour_kwargs
from frontend.pages.explore.query import (
    PAGE_SIZE,
    axis_label,
    color_options,
    points_for,
    preview_page,
    scaled_axis,
    scaled_options,
    selection_body,
)
from frontend.pages.explore.waiting import register_waiting

MAX_META_VALUES = 24  # a metadata field with more values than this is not offered as a colour


def register(app: Dash, ctx: UiContext) -> None:
    _register_browser_side(app)
    _register_scales(app)
    _register_plane(app, ctx)
    _register_selection(app, ctx)
    _register_detail(app, ctx)
    register_waiting(app, ctx)
    map_view.register(app, ctx)
    compare.register(app, ctx)
    viewport.register(app, ctx)
    neighbours.register(app, ctx)
    search.register(app, ctx)


def _register_browser_side(app: Dash) -> None:
    browser_callback(
        app,
        "region",
        output=Output(ids.EX_REGION, "data"),
        inputs={
            "preset_clicks": Input({"type": ids.EX_PRESET, "key": ALL}, "n_clicks"),
            "grid_clicks": Input({"type": ids.EX_GRID, "i": ALL, "j": ALL}, "n_clicks"),
            "clear_clicks": Input(ids.EX_CLEAR, "n_clicks"),
            "x": Input(ids.EX_X, "value"),
            "y": Input(ids.EX_Y, "value"),
        },
        state={"percent": State(ids.EX_TOP_PERCENT, "value")},
        prevent_initial_call=True,
    )
    browser_callback(
        app,
        "detail",
        output=Output(ids.DETAIL_ID, "data"),
        inputs={
            "click_data": Input(ids.EX_GRAPH, "clickData"),
            "card_clicks": Input({"type": ids.GALLERY_CARD, "id": ALL}, "n_clicks"),
            "close_clicks": Input(ids.DETAIL_CLOSE, "n_clicks"),
        },
        prevent_initial_call=True,
    )


def _register_scales(app: Dash) -> None:
    """An axis's scale choice rewrites its dropdown (options and value) to the transformed axes: every other
    callback, the region's included, then sees the axis the API transforms, as if picked from the list."""
    for axis_id, scale_id in ((ids.EX_X, ids.EX_X_SCALE), (ids.EX_Y, ids.EX_Y_SCALE)):

        @named_callback(
            app,
            output={"options": Output(axis_id, "options"), "value": Output(axis_id, "value")},
            inputs={"scale": Input(scale_id, "value")},
            state={"axis": State(axis_id, "value"), "setup": State(ids.EX_SETUP, "data")},
            prevent_initial_call=True,
        )
        def rescale(scale: str | None, axis: str | None, setup: dict[str, Any] | None) -> Outputs:
            if not axis or not setup:
                raise PreventUpdate
            return {
                "options": scaled_options(setup.get("axis_options") or [], scale or ""),
                "value": scaled_axis(axis, scale or ""),
            }


def _register_plane(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output={"meta": Output(ids.EX_META, "data"), "color_options": Output(ids.EX_COLOR, "options")},
        inputs={"setup": Input(ids.EX_SETUP, "data")},
    )
    def load_meta(setup: dict[str, Any]) -> Outputs:
        """Metadata fields come after the page: the API scans every sample's metadata for them."""
        if not setup:
            raise PreventUpdate
        try:
            fields = ctx.api.metadata_fields(int(setup["ds"]))
        except ApiError:
            return {"meta": {}}  # colouring by metadata is a nicety: the page works without it
        # Categorical fields only: a label like `defect` colours and filters; near-unique ones do not.
        meta = {k: v for k, v in fields.items() if 2 <= len(v) <= MAX_META_VALUES}
        return {"meta": meta, "color_options": color_options(meta, setup.get("axis_options") or [])}

    @named_callback(
        app,
        output={
            "options": Output(ids.EX_META_VALUES, "options"),
            "kept": Output(ids.EX_META_VALUES, "value"),
            "wrap_style": Output(ids.EX_META_WRAP, "style"),
        },
        inputs={"color": Input(ids.EX_COLOR, "value")},
        state={"meta": State(ids.EX_META, "data")},
        prevent_initial_call=True,
    )
    def meta_values(color: str | None, meta: dict[str, Any] | None) -> Outputs:
        if not color or not color.startswith("meta:"):
            return {"options": [], "kept": [], "wrap_style": {"display": "none"}}
        values = (meta or {}).get(color.removeprefix("meta:")) or []
        return {
            "options": panels.meta_value_options(values),
            "kept": [str(v) for v in values],
            "wrap_style": {"display": "block"},
        }

    @named_callback(
        app,
        output={
            "figure": Output(ids.EX_GRAPH, "figure"),
            "caption": Output(ids.EX_PLOT_INFO, "children"),
            "alert": Output(ids.EX_ALERT, "children"),
        },
        inputs={
            "x": Input(ids.EX_X, "value"),
            "y": Input(ids.EX_Y, "value"),
            "color": Input(ids.EX_COLOR, "value"),
            "tasks": Input(ids.EX_TASKS, "value"),
            "meta_values": Input(ids.EX_META_VALUES, "value"),
            "contours": Input(ids.EX_CONTOURS, "value"),
        },
        state={
            "setup": State(ids.EX_SETUP, "data"),
            "region": State(ids.EX_REGION, "data"),
            "view": State(ids.EX_VIEW, "data"),
        },
        alert="alert",
    )
    def figure(
        x: str,
        y: str,
        color: str,
        tasks: list[str],
        meta_values: list[str],
        contours: list[str],
        setup: dict[str, Any],
        region: Any,
        view: Any,
    ) -> Outputs:
        if not setup or not x or not y:
            raise PreventUpdate
        t0 = time.perf_counter()
        points, scratch = points_for(ctx, setup, x, y, color)
        if viewport.is_sampled(points):  # above the UI's point budget: the server's grid + a sample, per view
            axes_moved = callback_context.triggered_id in (ids.EX_X, ids.EX_Y)
            shown = viewport.Viewport() if axes_moved else viewport.stored_view(view, viewport.view_key(setup, x, y))
            return viewport.sampled_plane(
                ctx, setup, x, y, color, tasks, meta_values, contours, None if axes_moved else region, shown
            )
        labels = setup.get("labels") or {}
        meta_on = bool(color and color.startswith("meta:"))
        mask = mask_for(points, tasks, meta_values if meta_on else None)
        sel = (lambda a: a) if mask is None else (lambda a: a[mask])
        run = cluster_run(color)  # a clusters run's `cluster`: categories, named by the run's labels
        names = cluster_labels(ctx, run, scratch) if run is not None else None
        kw: dict[str, Any] = colour_kwargs(points, color, labels, sel, names)
        if contours:
            kw["contour_codes"] = sel(points.task_type)
            kw["contour_names"] = points.task_types
            kw["contour_colors"] = category_colors(list((setup.get("task_counts") or {}).keys()))
        # New axes void the region (the browser resets it at the same moment): never outline a stale one.
        axes_changed = callback_context.triggered_id in (ids.EX_X, ids.EX_Y)
        on_plane = region and region.get("view") != "map"  # a map lasso is outlined on the map only
        shapes = region_shapes(region.get("region"), points.x, points.y) if on_plane and not axes_changed else []
        fig, stats = plane_figure(
            sel(points.x),
            sel(points.y),
            sel(points.ids),
            x_label=axis_label(labels, x),
            y_label=axis_label(labels, y),
            shapes=shapes,
            uirevision=f"{setup['ds']}|{x}|{y}",
            **kw,
        )
        if mask is not None:
            stats.notes.append(f"filtered from {len(points):,}")
        caption = [
            html.Span(stats.caption()),
            html.Span(f"figure built in {1000 * (time.perf_counter() - t0):,.0f} ms", className="muted small"),
        ]
        scratch["last_stats"] = stats
        return {"figure": fig, "caption": caption, "alert": None}

    @named_callback(
        app,
        output={"figure": Output(ids.EX_GRAPH, "figure", allow_duplicate=True)},
        inputs={"region": Input(ids.EX_REGION, "data")},
        state={
            "x": State(ids.EX_X, "value"),
            "y": State(ids.EX_Y, "value"),
            "color": State(ids.EX_COLOR, "value"),
            "setup": State(ids.EX_SETUP, "data"),
        },
        prevent_initial_call=True,
    )
    def overlay(region: Any, x: str, y: str, color: str, setup: dict[str, Any]) -> Outputs:
        """Outline a preset region; drop a stale lasso outline when the region came from elsewhere."""
        patch = Patch()
        if region and region.get("source") == "draw" and region.get("view") != "map":
            raise PreventUpdate  # the browser already shows exactly the drawn outline
        shapes: list[dict[str, Any]] = []
        if region and region.get("view") != "map":  # a map lasso drops the plane's outline, draws none here
            try:
                points, _ = points_for(ctx, setup, x, y, color)
                shapes = region_shapes(region.get("region"), points.x, points.y)
            except ApiError:
                shapes = []
        patch["layout"]["shapes"] = shapes
        patch["layout"]["selections"] = []
        # The drawn outline never reached the figure prop (qspace.js keeps it out, to spare a whole redraw),
        # so Plotly would keep it as an analyst's edit while the edit revision stays: a new one drops it.
        patch["layout"]["editrevision"] = uuid.uuid4().hex
        return {"figure": patch}


def _register_selection(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output={
            "title": Output(ids.SEL_TITLE, "children"),
            "count": Output(ids.SEL_COUNT, "children"),
            "shares": Output(ids.SEL_SHARES, "children"),
            "summary": Output(ids.SEL_SUMMARY, "children"),
            "cards": Output(ids.GALLERY, "children"),
            "info": Output(ids.GALLERY_INFO, "children"),
            "page": Output(ids.GALLERY_PAGE, "data"),
            "recipe": Output(ids.SEL_RECIPE, "data"),
            "alert": Output(ids.SEL_ALERT, "children"),
            "prev_disabled": Output(ids.GALLERY_PREV, "disabled"),
            "next_disabled": Output(ids.GALLERY_NEXT, "disabled"),
        },
        inputs={
            "region": Input(ids.EX_REGION, "data"),
            "tasks": Input(ids.EX_TASKS, "value"),
            "meta_values": Input(ids.EX_META_VALUES, "value"),
            "prev_clicks": Input(ids.GALLERY_PREV, "n_clicks"),
            "next_clicks": Input(ids.GALLERY_NEXT, "n_clicks"),
        },
        state={
            "x": State(ids.EX_X, "value"),
            "y": State(ids.EX_Y, "value"),
            "color": State(ids.EX_COLOR, "value"),
            "setup": State(ids.EX_SETUP, "data"),
            "current_page": State(ids.GALLERY_PAGE, "data"),
            "current_recipe": State(ids.SEL_RECIPE, "data"),
            "token": State(ids.TOKEN, "value"),
            "meta": State(ids.EX_META, "data"),
        },
        alert="alert",
    )
    def selection(
        region: Any,
        tasks: list[str],
        meta_values: list[str],
        prev_clicks: int,
        next_clicks: int,
        x: str,
        y: str,
        color: str,
        setup: dict[str, Any],
        current_page: int,
        current_recipe: Any,
        token: str | None,
        meta: dict[str, Any] | None,
    ) -> Outputs:
        if not setup or not x or not y:
            raise PreventUpdate
        setup = {**setup, "meta_fields": meta or {}}
        trig = callback_context.triggered_id
        if trig in (ids.GALLERY_PREV, ids.GALLERY_NEXT) and current_recipe:
            body = current_recipe["body"]
            page = max(0, int(current_page or 0) + (1 if trig == ids.GALLERY_NEXT else -1))
        else:
            body = selection_body(setup, x, y, region, tasks, color, meta_values)
            page = 0
        t0 = time.perf_counter()
        prev = preview_page(ctx, int(setup["ds"]), body, page, token or None)
        ms = 1000 * (time.perf_counter() - t0)
        count = int(prev.get("count", 0))
        label = (region or {}).get("label") or "Whole dataset"
        items = prev.get("items") or []
        total_items = int(prev.get("total", count))
        try:  # the axes the selection was drawn on: the plane's, or the data map's for a map lasso
            points, scratch = points_for(ctx, setup, body["x"], body["y"], color)
            if "reference" not in scratch:  # a sample's median is not the plane's: the server's then
                scratch["reference"] = (
                    viewport.plane_reference(ctx, setup, body["x"], body["y"])
                    if viewport.is_sampled(points)
                    else panels.plane_reference(points.x, points.y)
                )
            reference = scratch["reference"]
        except ApiError:
            reference = {}
        summary = prev.get("summary") or prev.get("stats")
        return {
            "title": panels.selection_title(label, body),
            "count": panels.count_block(count, int(setup.get("n") or 0), ms),
            "shares": panels.shares_block(prev, setup),
            "summary": panels.summary_block(summary, reference, setup.get("labels") or {}, body["x"], body["y"]),
            "cards": panels.gallery_cards(items, count, x, y, setup),
            "info": panels.gallery_info(page, len(items), total_items),
            "page": page,
            "recipe": {"body": body, "count": count, "label": label},
            "alert": None,
            "prev_disabled": page == 0,
            "next_disabled": (page + 1) * PAGE_SIZE >= total_items,
        }

    @named_callback(
        app,
        output={"rows": Output(ids.SEL_SAVED, "children")},
        # The page's setup is an input: the list fills when the page arrives by an in-app link too (the store
        # lives in the shell, so it does not change then).
        inputs={"saved_ids": Input(ids.SAVED_STORE, "data"), "setup": Input(ids.EX_SETUP, "data")},
        alert="rows",
    )
    def saved_list(saved_ids: list[int] | None, setup: dict[str, Any]) -> Outputs:
        if not setup:
            raise PreventUpdate
        return {"rows": panels.saved_rows(ctx, int(setup["ds"]), saved_ids)}

    @named_callback(
        app,
        output={"saved_ids": Output(ids.SAVED_STORE, "data"), "status": Output(ids.SEL_STATUS, "children")},
        inputs={"save_clicks": Input(ids.SEL_SAVE, "n_clicks"), "random_clicks": Input(ids.SEL_RANDOM, "n_clicks")},
        state={
            "recipe": State(ids.SEL_RECIPE, "data"),
            "name": State(ids.SEL_NAME, "value"),
            "seed": State(ids.SEL_SEED, "value"),
            "setup": State(ids.EX_SETUP, "data"),
            "saved_ids": State(ids.SAVED_STORE, "data"),
            "token": State(ids.TOKEN, "value"),
        },
        alert="status",
        prevent_initial_call=True,
    )
    def save(
        save_clicks: int,
        random_clicks: int,
        recipe: Any,
        name: str | None,
        seed: Any,
        setup: dict[str, Any],
        saved_ids: list[int] | None,
        token: str | None,
    ) -> Outputs:
        if not (callback_context.triggered and callback_context.triggered[0].get("value")):
            raise PreventUpdate
        if not recipe or not setup:
            return {"status": alert("Nothing to save yet: wait for the selection count.", "info")}
        ds = int(setup["ds"])
        body = dict(recipe["body"])
        if callback_context.triggered_id == ids.SEL_RANDOM:
            n = int(recipe.get("count") or 0)
            if n <= 0:
                return {"status": alert("The selection is empty: a random control of size 0 means nothing.", "info")}
            seed_v = int(seed) if seed not in (None, "") else 0
            base = name or recipe.get("label") or "selection"
            body = {
                "x": body["x"],
                "y": body["y"],
                "region": {"type": "all"},
                "sample": {"n": n, "seed": seed_v},
                "name": f"random control ({n:,}, seed {seed_v}) for {base}"[:200],
            }
        else:
            body["name"] = (name or recipe.get("label") or "selection")[:200]
        sel = ctx.api.create_selection(ds, body, token=token or None)
        msg = alert(f"Saved #{sel['id']} “{sel.get('name') or ''}” with {int(sel.get('count', 0)):,} samples.", "ok")
        return {"saved_ids": [*(saved_ids or []), int(sel["id"])], "status": msg}


def _register_detail(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output={"style": Output(ids.DETAIL, "style"), "body": Output(ids.DETAIL_BODY, "children")},
        inputs={"sample_id": Input(ids.DETAIL_ID, "data")},
        state={"setup": State(ids.EX_SETUP, "data")},
        prevent_initial_call=True,
    )
    def detail(sample_id: int | None, setup: dict[str, Any]) -> Outputs:
        if sample_id is None:
            return {"style": {"display": "none"}, "body": None}
        try:
            sample = ctx.api.sample(int(sample_id))
        except ApiError as exc:
            return {"style": {"display": "flex"}, "body": alert(describe(exc))}
        return {"style": {"display": "flex"}, "body": sample_detail(sample, (setup or {}).get("labels"))}
