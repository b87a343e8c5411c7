"""Explore: the quality plane, regions (lasso, box, the paper's presets), the selection panel, gallery."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from dash import ALL, ClientsideFunction, Dash, Input, Output, Patch, State, callback_context, dcc, html, no_update
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.api_client import ApiError, Axis, Dataset, Selection, SelectionPreview
from frontend.components import (
    alert,
    card,
    export_links,
    fmt_num,
    gallery_card,
    number_input,
    sample_detail,
    task_chip,
)
from frontend.context import UiContext, mask_for
from frontend.errors import describe, guarded
from frontend.figures import category_colors, empty_figure, plane_figure, region_shapes, shares

PAGE_SIZE = 12
MAX_META_VALUES = 24
MAX_PREVIEW = 200
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
SHORTCUTS = {"loss", "clip"}
MAIN_METRIC = {"clip": "similarity", "mllm_loss": "loss_sum", "lm_loss": "loss_sum", "ifd": "ifd", "length": "tokens"}


# --------------------------------------------------------------------------------------------------
# setup: axes, labels, colour options
# --------------------------------------------------------------------------------------------------


def axis_choices(axes: list[Axis]) -> tuple[list[dict[str, str]], dict[str, str], dict[str, str]]:
    """(dropdown options of finished runs' metrics, label per axis, shortcut -> concrete axis).

    Shortcuts follow the API: `clip` = the newest finished clip run's similarity, `loss` = the newest
    finished mllm_loss (else lm_loss) run's loss_sum. Options use concrete `RUN:METRIC` axes so a saved
    recipe names the run it was drawn from.
    """
    options: list[dict[str, str]] = []
    labels: dict[str, str] = {}
    shortcut: dict[str, str] = {}
    newest: dict[str, tuple[int, str]] = {}
    for a in axes:
        name = str(a.get("axis", ""))
        if a.get("status", "done") != "done":
            continue
        concrete = f"{a['run_id']}:{a['metric']}" if a.get("run_id") is not None and a.get("metric") else name
        label = str(a.get("label") or f"{a.get('kind', '')} {a.get('metric', '')} (run {a.get('run_id', '')})")
        if name in SHORTCUTS:  # an API that lists its shortcuts too
            shortcut[name] = concrete
            labels.setdefault(concrete, label)
            continue
        if concrete not in labels:
            options.append({"label": label, "value": concrete})
        labels[concrete] = label
        kind, metric, run = str(a.get("kind", "")), str(a.get("metric", "")), int(a.get("run_id") or 0)
        if MAIN_METRIC.get(kind) == metric and run >= newest.get(kind, (-1, ""))[0]:
            newest[kind] = (run, concrete)
    if "clip" not in shortcut and "clip" in newest:
        shortcut["clip"] = newest["clip"][1]
    if "loss" not in shortcut:
        for kind in ("mllm_loss", "lm_loss"):
            if kind in newest:
                shortcut["loss"] = newest[kind][1]
                break
    for short, concrete in shortcut.items():  # a shortcut whose run is not listed on its own
        if concrete not in {o["value"] for o in options}:
            options.append({"label": labels.get(concrete, short), "value": concrete})
    return options, labels, shortcut


def default_axes(options: list[dict[str, str]], shortcut: dict[str, str]) -> tuple[str | None, str | None]:
    """x = the paper's loss, y = its CLIP score; otherwise the first two axes there are."""
    values = [o["value"] for o in options]
    x = shortcut.get("loss")
    y = shortcut.get("clip")
    rest = [v for v in values if v not in (x, y)]
    if x is None and rest:
        x = rest.pop(0)
    if y is None:
        y = rest.pop(0) if rest else x
    return x, y


def metric_name(axis: str) -> str:
    """'3:loss_sum' -> 'loss_sum' (what a gallery card shows beside each value)."""
    return axis.partition(":")[2] or axis


def _data(name: str, value: Any) -> dict[str, Any]:
    """A data-* attribute for a component (tests read counts from them)."""
    return {f"data-{name}": str(value)}


def short_label(label: str) -> str:
    return label if len(label) <= 48 else label[:47] + "…"


def color_options(meta_fields: dict[str, list[Any]], axis_options: list[dict[str, str]]) -> list[dict[str, str]]:
    opts = [{"label": "Task type", "value": "task_type"}]
    opts += [{"label": f"Metadata: {f}", "value": f"meta:{f}"} for f in meta_fields]
    opts += [{"label": f"Metric: {o['label']}", "value": f"metric:{o['value']}"} for o in axis_options]
    opts.append({"label": "None", "value": "none"})
    return opts


def api_color(color: str | None) -> str | None:
    """The `color` query parameter of /space for a colour choice (None: task type or nothing)."""
    if not color or color in ("task_type", "none"):
        return None
    if color.startswith("meta:"):
        return color
    if color.startswith("metric:"):
        return color.removeprefix("metric:")
    return None


# --------------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------------


def _no_data(title: str, text: str, link: str, link_text: str) -> html.Div:
    return html.Div(
        [html.H2(title), html.P(text), dcc.Link(link_text, href=link, className="btn btn-primary")],
        className="empty-state",
    )


def _task_options(dataset: Dataset) -> list[dict[str, Any]]:
    counts = dataset.get("task_types") or {}
    prompts = dataset.get("task_type_prompts") or {}
    colors = category_colors(list(counts))
    opts = []
    for name, n in counts.items():
        label: list[Any] = [
            html.Span(
                [
                    html.Span(className="dot", style={"background": colors[name]}),
                    html.Span(name, className="tt-name"),
                    html.Span(f"{n:,}", className="tt-count"),
                ],
                className="tt-line",
            ),
        ]
        if prompts.get(name):
            label.append(
                html.Details(
                    [html.Summary("prompt"), html.Div(prompts[name], className="tt-prompt-text")], className="tt-prompt"
                )
            )
        opts.append({"label": html.Div(label, className="tt-label"), "value": name})
    return opts


def _grid_buttons() -> html.Div:
    rows = []
    for j in (2, 1, 0):  # top row = high y
        rows.append(
            html.Div(
                [
                    html.Button(
                        f"{i},{j}",
                        id={"type": ids.EX_GRID, "i": i, "j": j},
                        className="grid-cell",
                        title=f"3\u00d73 quantile grid cell ({i}, {j}): x tercile {i + 1}, y tercile {j + 1}",
                        n_clicks=0,
                    )
                    for i in range(3)
                ],
                className="grid-row",
            )
        )
    return html.Div(rows, className="grid-buttons")


def layout(ctx: UiContext, ds: int | None, all_ds: list[Dataset]) -> Any:
    if ds is None:
        return _no_data(
            "No dataset yet", "Ingest a LLaVA-format dataset first, then score it.", "/datasets", "Go to Datasets"
        )
    dataset = next(d for d in all_ds if int(d["id"]) == ds)
    axes = ctx.api.axes(ds)
    options, labels, shortcut = axis_choices(axes)
    if not options:
        return _no_data(
            f"{dataset['name']}: nothing scored yet",
            "The plane needs at least one finished scorer run (CLIP and MLLM loss, as in the paper). "
            "Start one on the Datasets page; the plane appears as soon as a run is done.",
            f"/datasets?ds={ds}",
            "Start a scorer run",
        )
    x, y = default_axes(options, shortcut)
    task_types = list((dataset.get("task_types") or {}).keys())
    setup = {
        "ds": ds,
        "n": int(dataset.get("n_samples", 0)),
        "labels": labels,
        "task_types": task_types,
        "task_counts": dataset.get("task_types") or {},
        "meta_fields": {},  # filled by the EX_META store once loaded (a scan of every sample's metadata)
        "axis_options": options,
    }
    controls = html.Div(
        [
            card(
                "Axes",
                html.Label("x", className="field-label"),
                dcc.Dropdown(id=ids.EX_X, options=options, value=x, clearable=False, optionHeight=44),
                html.Label("y", className="field-label"),
                dcc.Dropdown(id=ids.EX_Y, options=options, value=y, clearable=False, optionHeight=44),
                html.Label("colour", className="field-label"),
                dcc.Dropdown(id=ids.EX_COLOR, options=color_options({}, options), value="task_type", clearable=False),
                html.Div(
                    [
                        html.Label("show values", className="field-label"),
                        dcc.Checklist(
                            id=ids.EX_META_VALUES,
                            options=[],
                            value=[],
                            className="checklist compact",
                            inputClassName="check",
                        ),
                    ],
                    id=ids.EX_META_WRAP,
                    style={"display": "none"},
                ),
            ),
            card(
                "Task types",
                dcc.Checklist(
                    id=ids.EX_TASKS,
                    options=_task_options(dataset),
                    value=task_types,
                    className="checklist",
                    inputClassName="check",
                ),
                dcc.Checklist(
                    id=ids.EX_CONTOURS,
                    options=[{"label": "compare types: density contours (50% / 90%)", "value": "on"}],
                    value=[],
                    className="checklist toggle",
                    inputClassName="check",
                ),
            ),
            card(
                "Regions",
                html.Div(
                    [
                        html.Span("top", className="muted"),
                        number_input(ids.EX_TOP_PERCENT, 5, step="any", min=0.01, max=100, style={"width": "64px"}),
                        html.Span("%", className="muted"),
                    ],
                    className="inline",
                ),
                html.Div(
                    [
                        html.Button(
                            "DIS",
                            id={"type": ids.EX_PRESET, "key": "dis"},
                            className="btn btn-preset",
                            title="top p% by the y axis (the paper's CLIP band)",
                            n_clicks=0,
                        ),
                        html.Button(
                            "DIL",
                            id={"type": ids.EX_PRESET, "key": "dil"},
                            className="btn btn-preset",
                            title="top p% by the x axis (the paper's loss band)",
                            n_clicks=0,
                        ),
                        html.Button(
                            "DIQ",
                            id={"type": ids.EX_PRESET, "key": "diq"},
                            className="btn btn-preset",
                            title="top p% by both axes (the top-right corner)",
                            n_clicks=0,
                        ),
                    ],
                    className="btn-row",
                ),
                html.Div([html.Span("3\u00d73 grid", className="muted small"), _grid_buttons()], className="grid-wrap"),
                html.Div(
                    [
                        html.Button(
                            "All", id={"type": ids.EX_PRESET, "key": "all"}, className="btn btn-ghost", n_clicks=0
                        ),
                        html.Button("Clear", id=ids.EX_CLEAR, className="btn btn-ghost", n_clicks=0),
                    ],
                    className="btn-row",
                ),
                html.P(
                    "Or draw on the plane: a freeform lasso (the default tool) or a box, from the plot's toolbar. "
                    "Click an outline to drag its corners; Clear (or the eraser) goes back to the whole dataset.",
                    className="hint",
                ),
            ),
        ],
        className="controls",
    )
    plot = html.Div(
        [
            dcc.Graph(
                id=ids.EX_GRAPH,
                figure=empty_figure("Loading the plane…"),
                config=GRAPH_CONFIG,
                className="plane",
                style={"height": "660px"},
            ),
            html.Div(id=ids.EX_PLOT_INFO, className="plot-info"),
            html.Div(id=ids.EX_ALERT),
        ],
        className="plot-col",
    )
    panel = html.Div(
        [
            card(
                None,
                html.Div(id=ids.SEL_TITLE, className="sel-title", children="Whole dataset"),
                html.Div(id=ids.SEL_COUNT, className="sel-count"),
                html.Div(id=ids.SEL_SHARES, className="shares"),
                html.Div(id=ids.SEL_SUMMARY, className="summary"),
                html.Div(id=ids.SEL_ALERT),
                class_name="sel-card",
            ),
            card(
                "Save & export",
                html.Div(
                    [
                        dcc.Input(
                            id=ids.SEL_NAME,
                            placeholder="name (optional)",
                            className="input",
                            debounce=False,
                            maxLength=200,
                        ),
                        html.Button("Save selection", id=ids.SEL_SAVE, className="btn btn-primary", n_clicks=0),
                    ],
                    className="inline",
                ),
                html.Div(
                    [
                        html.Button(
                            "Random control (same size)",
                            id=ids.SEL_RANDOM,
                            className="btn",
                            n_clicks=0,
                            title="n samples drawn uniformly from the whole dataset, n = this selection's count",
                        ),
                        html.Span("seed", className="muted"),
                        number_input(ids.SEL_SEED, 0, step=1, min=0, style={"width": "70px"}),
                    ],
                    className="inline",
                ),
                html.Div(id=ids.SEL_STATUS),
                html.Div(id=ids.SEL_SAVED, className="saved"),
            ),
        ],
        className="panel-col",
    )
    gallery = card(
        "Samples in the selection",
        html.Div(id=ids.GALLERY, className="gallery"),
        html.Div(
            [
                html.Button("\u2039 Prev", id=ids.GALLERY_PREV, className="btn btn-ghost", n_clicks=0, disabled=True),
                html.Span(id=ids.GALLERY_INFO, className="muted"),
                html.Button("Next \u203a", id=ids.GALLERY_NEXT, className="btn btn-ghost", n_clicks=0, disabled=True),
            ],
            className="pager",
        ),
        class_name="gallery-card",
    )
    detail = html.Div(
        html.Div(
            [
                html.Button("\u00d7", id=ids.DETAIL_CLOSE, className="detail-close", n_clicks=0, title="close (Esc)"),
                html.Div(id=ids.DETAIL_BODY),
            ],
            className="detail-box",
        ),
        id=ids.DETAIL,
        className="detail-overlay",
        style={"display": "none"},
    )
    return html.Div(
        [
            dcc.Store(id=ids.EX_SETUP, data=setup),
            dcc.Store(id=ids.EX_META, data=None),
            dcc.Store(id=ids.EX_REGION, data=None),
            dcc.Store(id=ids.SEL_RECIPE, data=None),
            dcc.Store(id=ids.GALLERY_PAGE, data=0),
            dcc.Store(id=ids.DETAIL_ID, data=None),
            html.Div([controls, plot, panel], className="explore-grid"),
            gallery,
            detail,
        ],
        className="explore",
    )


def saved_selections(ctx: UiContext, ds: int, session_ids: list[int] | None = None) -> list[Selection]:
    """The dataset's saved selections, newest first."""
    try:
        saved = list(ctx.api.selections(ds))
    except ApiError as exc:
        if exc.status not in (404, 405):
            raise
        saved = []  # an API without the list route: the ones saved in this browser session
        for sid in dict.fromkeys(session_ids or []):
            try:
                sel = ctx.api.selection(int(sid))
            except ApiError:
                continue
            if int(sel.get("dataset_id", ds)) == ds:
                saved.append(sel)
    return sorted(saved, key=lambda s: -int(s["id"]))


def _saved_rows(ctx: UiContext, ds: int, session_ids: list[int] | None = None) -> list[Any]:
    """The dataset's saved selections, newest first, with download links."""
    saved = saved_selections(ctx, ds, session_ids)
    if not saved:
        return [html.P("Nothing saved yet. Saved selections become curriculum stages and downloads.", className="hint")]
    rows = []
    for s in saved[:8]:
        name = s.get("name") or f"selection #{s['id']}"
        rows.append(export_links(int(s["id"]), f"#{s['id']} {name} · {int(s.get('count', 0)):,}"))
    return rows


def preview_page(ctx: UiContext, ds: int, body: dict[str, Any], page: int, token: str | None) -> SelectionPreview:
    """One gallery page of an unsaved selection (count and shares always cover the whole selection)."""
    if page <= 0:
        return ctx.api.preview(ds, body, limit=PAGE_SIZE, token=token)
    try:
        return ctx.api.preview(ds, body, limit=PAGE_SIZE, offset=page * PAGE_SIZE, token=token)
    except ApiError as exc:
        if exc.status != 422 or "offset" not in exc.message:
            raise
    # An API whose preview has no offset: ask for the first pages and keep the last one.
    need = (page + 1) * PAGE_SIZE
    if need > MAX_PREVIEW:
        raise ApiError(
            f"Unsaved selections page up to {MAX_PREVIEW} samples here; save the selection to browse "
            "all of it (or download it)."
        )
    prev = ctx.api.preview(ds, body, limit=need, token=token)
    prev["items"] = (prev.get("items") or [])[page * PAGE_SIZE :]
    return prev


# --------------------------------------------------------------------------------------------------
# callbacks
# --------------------------------------------------------------------------------------------------


def _body(
    setup: dict[str, Any],
    x: str,
    y: str,
    region: Any,
    tasks: list[str] | None,
    color: str | None,
    meta_values: list[Any] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"x": x, "y": y, "region": (region or {}).get("region") or {"type": "all"}}
    all_types = setup.get("task_types") or []
    if tasks is not None and set(tasks) != set(all_types):
        body["task_types"] = list(tasks)
    if color and color.startswith("meta:") and meta_values is not None:
        field = color.removeprefix("meta:")
        values = (setup.get("meta_fields") or {}).get(field) or []
        if {str(v) for v in meta_values} != {str(v) for v in values}:
            body["metadata"] = {field: [v for v in values if str(v) in {str(m) for m in meta_values}]}
    return body


SUMMARY_COLUMNS = (("mean", ("mean",)), ("q25", ("q25", "p25")), ("median", ("median", "q50")), ("q75", ("q75", "p75")))


def _summary_block(
    summary: dict[str, Any] | None, reference: dict[str, dict[str, float]], labels: dict[str, str], x: str, y: str
) -> Any:
    """The selection's metric summary (from the server) beside the whole plane's median."""
    summary = summary or {}
    per_axis = {k: summary.get(k) or summary.get(a) for k, a in (("x", x), ("y", y))}
    cols = [
        (name, keys)
        for name, keys in SUMMARY_COLUMNS
        if any(isinstance(s, dict) and any(k in s for k in keys) for s in per_axis.values())
    ]
    rows = []
    for axis_key, axis in (("x", x), ("y", y)):
        s = per_axis.get(axis_key)
        s = s if isinstance(s, dict) else {}
        cells = [html.Td(fmt_num(next((s[k] for k in keys if k in s), None)), className="num") for _, keys in cols]
        ref = reference.get(axis_key, {}).get("median")
        rows.append(
            html.Tr(
                [
                    html.Td(metric_name(axis), className="sum-axis", title=labels.get(axis, axis)),
                    *cells,
                    html.Td(fmt_num(ref), className="num muted"),
                ]
            )
        )
    head = html.Thead(
        html.Tr(
            [
                html.Th("metric"),
                *[html.Th(name, className="num") for name, _ in cols],
                html.Th("all: median", className="num"),
            ]
        )
    )
    return html.Table([head, html.Tbody(rows)], className="table compact summary-table")


def plane_reference(x: Any, y: Any) -> dict[str, dict[str, float]]:
    """Median of each axis over every finite point of the plane (the whole-dataset reference)."""
    out: dict[str, dict[str, float]] = {}
    for key, v in (("x", x), ("y", y)):
        a = np.asarray(v, dtype=np.float64)
        a = a[np.isfinite(a)]
        if a.size:
            out[key] = {"median": float(np.median(a))}
    return out


def _shares_block(prev: SelectionPreview, setup: dict[str, Any]) -> Any:
    rows = shares(prev.get("by_task_type") or {}, setup.get("task_counts") or {})
    colors = category_colors(list((setup.get("task_counts") or {}).keys()))
    out = []
    for r in rows:
        lift = r["lift"]
        lift_txt = "" if lift is None else f"{lift:.2f}\u00d7 dataset share"
        out.append(
            html.Div(
                [
                    html.Div(
                        [
                            task_chip(r["task_type"], colors.get(r["task_type"])),
                            html.Span(f"{r['count']:,} · {100 * r['share']:.1f}%", className="share-num"),
                        ],
                        className="share-head",
                    ),
                    html.Div(
                        [
                            html.Div(
                                className="share-fill",
                                style={
                                    "width": f"{100 * r['share']:.1f}%",
                                    "background": colors.get(r["task_type"], "#A0A7B4"),
                                },
                            ),
                            html.Div(
                                className="share-base",
                                style={"left": f"{100 * r['base_share']:.1f}%"},
                                title=f"dataset share {100 * r['base_share']:.1f}%",
                            ),
                        ],
                        className="share-bar",
                        title=lift_txt,
                    ),
                ],
                className="share-row",
            )
        )
    return out


def _points_for(ctx: UiContext, setup: dict[str, Any], x: str, y: str, color: str | None) -> Any:
    return ctx.points.entry(int(setup["ds"]), x, y, api_color(color))


def register(app: Dash, ctx: UiContext) -> None:
    app.clientside_callback(
        ClientsideFunction(namespace="qspace", function_name="region"),
        Output(ids.EX_REGION, "data"),
        Input({"type": ids.EX_PRESET, "key": ALL}, "n_clicks"),
        Input({"type": ids.EX_GRID, "i": ALL, "j": ALL}, "n_clicks"),
        Input(ids.EX_CLEAR, "n_clicks"),
        Input(ids.EX_X, "value"),
        Input(ids.EX_Y, "value"),
        State(ids.EX_TOP_PERCENT, "value"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction(namespace="qspace", function_name="detail"),
        Output(ids.DETAIL_ID, "data"),
        Input(ids.EX_GRAPH, "clickData"),
        Input({"type": ids.GALLERY_CARD, "id": ALL}, "n_clicks"),
        Input(ids.DETAIL_CLOSE, "n_clicks"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output(ids.EX_META, "data"),
        Output(ids.EX_COLOR, "options"),
        Input(ids.EX_SETUP, "data"),
    )
    def load_meta(setup: dict[str, Any]) -> tuple[Any, ...]:
        """Metadata fields come after the page: the API scans every sample's metadata for them."""
        if not setup:
            raise PreventUpdate
        try:
            fields = ctx.api.metadata_fields(int(setup["ds"]))
        except ApiError:
            return {}, no_update  # colouring by metadata is a nicety: the page works without it
        # Categorical fields only: a label like `defect` colours and filters; near-unique ones do not.
        meta = {k: v for k, v in fields.items() if 2 <= len(v) <= MAX_META_VALUES}
        return meta, color_options(meta, setup.get("axis_options") or [])

    @app.callback(
        Output(ids.EX_META_VALUES, "options"),
        Output(ids.EX_META_VALUES, "value"),
        Output(ids.EX_META_WRAP, "style"),
        Input(ids.EX_COLOR, "value"),
        State(ids.EX_META, "data"),
        prevent_initial_call=True,
    )
    def meta_values(color: str | None, meta: dict[str, Any] | None) -> tuple[Any, ...]:
        if not color or not color.startswith("meta:"):
            return [], [], {"display": "none"}
        values = (meta or {}).get(color.removeprefix("meta:")) or []
        colors = category_colors([str(v) for v in values])
        opts = [
            {
                "label": html.Span(
                    [html.Span(className="dot", style={"background": colors[str(v)]}), str(v)], className="tt-line"
                ),
                "value": str(v),
            }
            for v in values
        ]
        return opts, [str(v) for v in values], {"display": "block"}

    @app.callback(
        Output(ids.EX_GRAPH, "figure"),
        Output(ids.EX_PLOT_INFO, "children"),
        Output(ids.EX_ALERT, "children"),
        Input(ids.EX_X, "value"),
        Input(ids.EX_Y, "value"),
        Input(ids.EX_COLOR, "value"),
        Input(ids.EX_TASKS, "value"),
        Input(ids.EX_META_VALUES, "value"),
        Input(ids.EX_CONTOURS, "value"),
        State(ids.EX_SETUP, "data"),
        State(ids.EX_REGION, "data"),
    )
    @guarded(3, 2)
    def figure(
        x: str,
        y: str,
        color: str,
        tasks: list[str],
        meta_values: list[str],
        contours: list[str],
        setup: dict[str, Any],
        region: Any,
    ) -> tuple[Any, ...]:
        if not setup or not x or not y:
            raise PreventUpdate
        t0 = time.perf_counter()
        points, scratch = _points_for(ctx, setup, x, y, color)
        labels = setup.get("labels") or {}
        meta_on = bool(color and color.startswith("meta:"))
        mask = mask_for(points, tasks, meta_values if meta_on else None)
        sel = (lambda a: a) if mask is None else (lambda a: a[mask])
        kw: dict[str, Any] = {}
        if color == "task_type":
            kw = {"codes": sel(points.task_type), "categories": points.task_types}
        elif points.color is not None and points.color_categories is not None:
            kw = {"codes": sel(points.color), "categories": points.color_categories}
        elif points.color is not None:
            kw = {
                "values": sel(points.color),
                "value_label": short_label(labels.get(color.removeprefix("metric:"), color)),
            }
        if contours:
            kw["contour_codes"] = sel(points.task_type)
            kw["contour_names"] = points.task_types
            kw["contour_colors"] = category_colors(list((setup.get("task_counts") or {}).keys()))
        # New axes void the region (the browser resets it at the same moment): never outline a stale one.
        axes_changed = callback_context.triggered_id in (ids.EX_X, ids.EX_Y)
        shapes = region_shapes(region.get("region"), points.x, points.y) if region and not axes_changed else []
        fig, stats = plane_figure(
            sel(points.x),
            sel(points.y),
            sel(points.ids),
            x_label=labels.get(x, x),
            y_label=labels.get(y, y),
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
        return fig, caption, None

    @app.callback(
        Output(ids.EX_GRAPH, "figure", allow_duplicate=True),
        Input(ids.EX_REGION, "data"),
        State(ids.EX_X, "value"),
        State(ids.EX_Y, "value"),
        State(ids.EX_COLOR, "value"),
        State(ids.EX_SETUP, "data"),
        prevent_initial_call=True,
    )
    def overlay(region: Any, x: str, y: str, color: str, setup: dict[str, Any]) -> Any:
        """Outline a preset region; drop a stale lasso outline when the region came from elsewhere."""
        patch = Patch()
        if region and region.get("source") == "draw":
            raise PreventUpdate  # the browser already shows exactly the drawn outline
        shapes: list[dict[str, Any]] = []
        if region:
            try:
                points, _ = _points_for(ctx, setup, x, y, color)
                shapes = region_shapes(region.get("region"), points.x, points.y)
            except ApiError:
                shapes = []
        patch["layout"]["shapes"] = shapes
        patch["layout"]["selections"] = []
        return patch

    @app.callback(
        Output(ids.SEL_TITLE, "children"),
        Output(ids.SEL_COUNT, "children"),
        Output(ids.SEL_SHARES, "children"),
        Output(ids.SEL_SUMMARY, "children"),
        Output(ids.GALLERY, "children"),
        Output(ids.GALLERY_INFO, "children"),
        Output(ids.GALLERY_PAGE, "data"),
        Output(ids.SEL_RECIPE, "data"),
        Output(ids.SEL_ALERT, "children"),
        Output(ids.GALLERY_PREV, "disabled"),
        Output(ids.GALLERY_NEXT, "disabled"),
        Input(ids.EX_REGION, "data"),
        Input(ids.EX_TASKS, "value"),
        Input(ids.EX_META_VALUES, "value"),
        Input(ids.GALLERY_PREV, "n_clicks"),
        Input(ids.GALLERY_NEXT, "n_clicks"),
        State(ids.EX_X, "value"),
        State(ids.EX_Y, "value"),
        State(ids.EX_COLOR, "value"),
        State(ids.EX_SETUP, "data"),
        State(ids.GALLERY_PAGE, "data"),
        State(ids.SEL_RECIPE, "data"),
        State(ids.TOKEN, "value"),
        State(ids.EX_META, "data"),
    )
    @guarded(11, 8)
    def selection(
        region: Any,
        tasks: list[str],
        meta_values: list[str],
        _prev: int,
        _next: int,
        x: str,
        y: str,
        color: str,
        setup: dict[str, Any],
        page: int,
        recipe: Any,
        token: str | None,
        meta: dict[str, Any] | None,
    ) -> tuple[Any, ...]:
        if not setup or not x or not y:
            raise PreventUpdate
        setup = {**setup, "meta_fields": meta or {}}
        trig = callback_context.triggered_id
        if trig in (ids.GALLERY_PREV, ids.GALLERY_NEXT) and recipe:
            body = recipe["body"]
            page = max(0, int(page or 0) + (1 if trig == ids.GALLERY_NEXT else -1))
        else:
            body = _body(setup, x, y, region, tasks, color, meta_values)
            page = 0
        t0 = time.perf_counter()
        prev = preview_page(ctx, int(setup["ds"]), body, page, token or None)
        ms = 1000 * (time.perf_counter() - t0)
        count = int(prev.get("count", 0))
        total_n = int(setup.get("n") or 0)
        label = (region or {}).get("label") or "Whole dataset"
        filters = []
        if body.get("task_types") is not None:
            filters.append(f"{len(body['task_types'])} task type(s)")
        if body.get("metadata"):
            for f, v in body["metadata"].items():
                filters.append(f"{f} ∈ {{{', '.join(map(str, v))}}}")
        title = [
            html.Span(label, className="sel-label"),
            *([html.Span(" · " + "; ".join(filters), className="muted")] if filters else []),
        ]
        count_block = [
            html.Span(f"{count:,}", className="big-num", id="sel-count-value", **_data("count", count)),
            html.Span(f" of {total_n:,} samples ({(100 * count / total_n) if total_n else 0:.2f}%)", className="muted"),
            html.Div(f"server answered in {ms:.0f} ms", className="muted small"),
        ]
        labels = setup.get("labels") or {}
        colors = category_colors(list((setup.get("task_counts") or {}).keys()))
        items = prev.get("items") or []
        meta_keys = set(setup.get("meta_fields") or {})
        cards: list[Any] = [gallery_card(s, x, y, metric_name(x), metric_name(y), colors, meta_keys) for s in items]
        if not cards:
            cards = [html.P("No samples in this selection." if count == 0 else "", className="hint")]
        total_items = int(prev.get("total", count))
        first = page * PAGE_SIZE + 1 if items else 0
        info = f"{first:,}\u2013{page * PAGE_SIZE + len(items):,} of {total_items:,}" if items else ""
        new_recipe = {"body": body, "count": count, "label": label}
        try:
            points, scratch = _points_for(ctx, setup, x, y, color)
            if "reference" not in scratch:
                scratch["reference"] = plane_reference(points.x, points.y)
            reference = scratch["reference"]
        except ApiError:
            reference = {}
        return (
            title,
            count_block,
            _shares_block(prev, setup),
            _summary_block(prev.get("summary") or prev.get("stats"), reference, labels, x, y),
            cards,
            info,
            page,
            new_recipe,
            None,
            page == 0,
            (page + 1) * PAGE_SIZE >= total_items,
        )

    @app.callback(
        Output(ids.SEL_SAVED, "children"),
        Input(ids.SAVED_STORE, "data"),
        State(ids.EX_SETUP, "data"),
    )
    @guarded(1, 0)
    def saved_list(saved_ids: list[int] | None, setup: dict[str, Any]) -> Any:
        if not setup:
            raise PreventUpdate
        return _saved_rows(ctx, int(setup["ds"]), saved_ids)

    @app.callback(
        Output(ids.SAVED_STORE, "data"),
        Output(ids.SEL_STATUS, "children"),
        Input(ids.SEL_SAVE, "n_clicks"),
        Input(ids.SEL_RANDOM, "n_clicks"),
        State(ids.SEL_RECIPE, "data"),
        State(ids.SEL_NAME, "value"),
        State(ids.SEL_SEED, "value"),
        State(ids.EX_SETUP, "data"),
        State(ids.SAVED_STORE, "data"),
        State(ids.TOKEN, "value"),
        prevent_initial_call=True,
    )
    @guarded(2, 1)
    def save(
        _save: int,
        _random: int,
        recipe: Any,
        name: str | None,
        seed: Any,
        setup: dict[str, Any],
        saved_ids: list[int] | None,
        token: str | None,
    ) -> tuple[Any, ...]:
        if not (callback_context.triggered and callback_context.triggered[0].get("value")):
            raise PreventUpdate
        if not recipe or not setup:
            return no_update, alert("Nothing to save yet: wait for the selection count.", "info")
        ds = int(setup["ds"])
        body = dict(recipe["body"])
        if callback_context.triggered_id == ids.SEL_RANDOM:
            n = int(recipe.get("count") or 0)
            if n <= 0:
                return no_update, alert("The selection is empty: a random control of size 0 means nothing.", "info")
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
        ids_now = [*(saved_ids or []), int(sel["id"])]
        msg = alert(f"Saved #{sel['id']} “{sel.get('name') or ''}” with {int(sel.get('count', 0)):,} samples.", "ok")
        return ids_now, msg

    @app.callback(
        Output(ids.DETAIL, "style"),
        Output(ids.DETAIL_BODY, "children"),
        Input(ids.DETAIL_ID, "data"),
        State(ids.EX_SETUP, "data"),
        prevent_initial_call=True,
    )
    def detail(sample_id: int | None, setup: dict[str, Any]) -> tuple[Any, ...]:
        if sample_id is None:
            return {"display": "none"}, None
        try:
            sample = ctx.api.sample(int(sample_id))
        except ApiError as exc:
            return {"display": "flex"}, alert(describe(exc))
        return {"display": "flex"}, sample_detail(sample, (setup or {}).get("labels"))
