"""Explore's layout: the controls (axes, colour, task types, regions), the plane, and where the panels go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dash import dcc, html

from frontend import ids
from frontend.api_shapes import ApiError, Dataset, Job
from frontend.components import card, empty_state, number_input
from frontend.context import UiContext
from frontend.figures import GRAPH_CONFIG, category_colors, empty_figure
from frontend.pages.axes import axis_choices, default_axes
from frontend.pages.explore.compare import compare_panel
from frontend.pages.explore.map_view import map_block, map_toggle
from frontend.pages.explore.opened import Opened, opened_selection
from frontend.pages.explore.panels import computing_panel, detail_overlay, gallery, selection_panel
from frontend.pages.explore.query import SCALES, axis_scale, color_options, scaled_options
from frontend.pages.explore.search import search_panel
from frontend.pages.launch import launch_dialog
from frontend.pages.pending import awaited

WAIT_POLL_MS = 2000  # how often the waiting state asks whether the plane can be drawn


# The paper's three top-p% selections: (button label, what it ranks by).
PAPER_PRESETS = (
    ("DIS", "the y axis (the paper's CLIP band)"),
    ("DIL", "the x axis (the paper's loss band)"),
    ("DIQ", "both axes (the top-right corner)"),
)


def layout(ctx: UiContext, ds: int | None, all_ds: list[Dataset], query: Mapping[str, str] | None = None) -> Any:
    """The page for dataset `ds`; `?sel=ID` in the address (`query`) opens that saved selection on the plane."""
    if ds is None:
        return empty_state(
            "No dataset yet", "Ingest a LLaVA-format dataset first, then score it.", "/datasets", "Go to Datasets"
        )
    return explore_view(ctx, next(d for d in all_ds if int(d["id"]) == ds), query)


@dataclass
class PlaneAxes:
    """The axes the plane can draw: dropdown options of finished runs' metrics, their labels, the paper's
    shortcuts (clip, loss), and the default pair (None where it does not resolve)."""

    options: list[dict[str, str]]
    labels: dict[str, str]
    shortcut: dict[str, str]
    x: str | None
    y: str | None

    @property
    def resolvable(self) -> bool:
        return self.x is not None and self.y is not None


def plane_axes(ctx: UiContext, ds: int) -> PlaneAxes:
    options, labels, shortcut = axis_choices(ctx.api.axes(ds))
    return PlaneAxes(options, labels, shortcut, *default_axes(options, shortcut))


def still_computing(ctx: UiContext, ds: int, axes: PlaneAxes) -> list[str]:
    """What the default plane waits for, in words ([] when it can be drawn now; frontend.pages.pending)."""
    return awaited(axes.shortcut, ctx.api.runs(ds), dataset_jobs(ctx, ds), resolvable=axes.resolvable)


def explore_view(ctx: UiContext, dataset: Dataset, query: Mapping[str, str] | None = None) -> Any:
    """The plane page; or, while the work that gives the plane its axes is still going on (a scorer run, the
    demo's model training), the waiting state, which polls until it can draw the plane; or the way to a first
    run when nothing is scored."""
    ds = int(dataset["id"])
    axes = plane_axes(ctx, ds)
    parts = still_computing(ctx, ds, axes)
    if parts:
        return computing_panel(dataset, parts, can_show=bool(axes.options), poll_ms=WAIT_POLL_MS)
    return plane_page(dataset, axes, opened_selection(ctx, ds, query, axes.options))


def plane_page(dataset: Dataset, axes: PlaneAxes, opened: Opened | None = None) -> Any:
    """The controls, the plane, the selection column, the gallery (or, with no axis at all, the way to a run)."""
    ds = int(dataset["id"])
    if not axes.options:
        return empty_state(
            f"{dataset['name']}: nothing scored yet",
            "The plane needs at least one finished scorer run (CLIP and MLLM loss, as in the paper). "
            "Start one on the Datasets page; the plane appears as soon as a run is done.",
            f"/datasets?ds={ds}",
            "Start a scorer run",
        )
    task_types = list((dataset.get("task_types") or {}).keys())
    setup = {
        "ds": ds,
        "n": int(dataset.get("n_samples", 0)),
        "labels": axes.labels,
        "task_types": task_types,
        "task_counts": dataset.get("task_types") or {},
        "meta_fields": {},  # filled by the EX_META store once loaded (a scan of every sample's metadata)
        "axis_options": axes.options,
    }
    return html.Div(
        [
            dcc.Store(id=ids.EX_SETUP, data=setup),
            dcc.Store(id=ids.EX_META, data=None),
            dcc.Store(id=ids.EX_VIEW, data=None),
            dcc.Store(id=ids.EX_REGION, data=opened.region if opened else None),
            dcc.Store(id=ids.SEL_RECIPE, data=None),
            dcc.Store(id=ids.GALLERY_PAGE, data=0),
            dcc.Store(id=ids.DETAIL_ID, data=None),
            html.Div(
                [
                    controls(dataset, axes.options, opened.x, opened.y, opened.task_types)
                    if opened
                    else controls(dataset, axes.options, axes.x, axes.y),
                    plot(),
                    selection_panel(),
                ],
                className="explore-grid",
            ),
            compare_panel(),
            search_panel(),
            gallery(),
            detail_overlay(),
            launch_dialog(),
        ],
        className="explore",
    )


def dataset_jobs(ctx: UiContext, ds: int) -> list[Job]:
    """The dataset's active background jobs ([] from an API without jobs: the page works without them)."""
    try:
        return ctx.api.jobs(ds, active=True)
    except ApiError:
        return []


def scale_choice(id_: str, axis: str | None) -> dcc.RadioItems:
    """An axis's scale: linear, log, or normalised within each task type (the API's `AXIS@log`, `@type_z`,
    `@type_rank`), so that what a selection keeps is what the plane draws."""
    return dcc.RadioItems(
        id=id_,
        options=[{"label": name, "value": key} for key, name in SCALES.items()],
        value=axis_scale(axis),
        inline=True,
        className="checklist compact",
        inputClassName="check",
    )


def controls(
    dataset: Dataset, options: list[dict[str, str]], x: str | None, y: str | None, tasks: list[str] | None = None
) -> html.Div:
    """The left column: axes and colour, the task-type filter (`tasks` ticked; None: all), the region presets."""
    task_types = list((dataset.get("task_types") or {}).keys())
    return html.Div(
        [
            card(
                "Axes",
                html.Label("x", className="field-label"),
                dcc.Dropdown(
                    id=ids.EX_X, options=scaled_options(options, axis_scale(x)), value=x, clearable=False,
                    optionHeight=44,
                ),
                scale_choice(ids.EX_X_SCALE, x),
                html.Label("y", className="field-label"),
                dcc.Dropdown(
                    id=ids.EX_Y, options=scaled_options(options, axis_scale(y)), value=y, clearable=False,
                    optionHeight=44,
                ),
                scale_choice(ids.EX_Y_SCALE, y),
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
                    options=task_options(dataset),
                    value=task_types if tasks is None else [t for t in task_types if t in tasks],
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
                            label,
                            id={"type": ids.EX_PRESET, "key": label.lower()},
                            className="btn btn-preset",
                            title=f"top p% by {what}",
                            n_clicks=0,
                        )
                        for label, what in PAPER_PRESETS
                    ],
                    className="btn-row",
                ),
                html.Div([html.Span("3\u00d73 grid", className="muted small"), grid_buttons()], className="grid-wrap"),
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


def plot() -> html.Div:
    """The plane (filled by the figure callback), its caption and its alert area; beside it, when the dataset has a
    projection run and the toggle is on, the linked data map (explore/map_view.py)."""
    plane = html.Div(
        [
            dcc.Graph(
                id=ids.EX_GRAPH,
                figure=empty_figure("Loading the plane…"),
                config=GRAPH_CONFIG,
                className="plane",
                style={"height": "660px"},
            ),
            html.Div(id=ids.EX_PLOT_INFO, className="plot-info"),
        ],
        className="plane-col",
    )
    return html.Div(
        [map_toggle(), html.Div([plane, map_block()], id=ids.EX_VIEWS, className="views"), html.Div(id=ids.EX_ALERT)],
        className="plot-col",
    )


def task_options(dataset: Dataset) -> list[dict[str, Any]]:
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


def grid_buttons() -> html.Div:
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
