"""Explore's panels: the selection column (what it holds, save and export), the gallery, the detail overlay,
and the contents the callbacks put in them."""

from __future__ import annotations

from typing import Any

import numpy as np
from dash import dcc, html

from frontend import ids
from frontend.api_shapes import Dataset, Sample, SelectionPreview
from frontend.components import card, data_attr, export_links, fmt_num, gallery_card, number_input, task_chip
from frontend.context import UiContext
from frontend.figures import category_colors, shares
from frontend.pages.axes import metric_name
from frontend.pages.explore.query import PAGE_SIZE
from frontend.pages.launch import launch_button
from frontend.pages.saved import saved_selections
from frontend.pages.tested import dataset_marks, saved_extras


def computing_panel(dataset: Dataset, parts: list[str], can_show: bool, poll_ms: int) -> html.Div:
    """What the page shows while the work that gives the plane its axes goes on: what is still being computed
    (refreshed by the waiting callback), where to watch it, and (when some axes are there) a way to look now.
    The page polls while it is shown; the plane replaces it, without a reload, when the scores are in."""
    ds = int(dataset["id"])
    return html.Div(
        [
            html.Div(
                [
                    html.H2(f"{dataset.get('name', ds)}: still computing"),
                    html.P(computing_status(parts), id=ids.EX_WAIT_STATUS, className="computing-status"),
                    html.P(
                        "The plane appears here by itself as soon as the scores are in; the Datasets page shows "
                        "the progress.",
                        className="hint",
                    ),
                    html.Div(
                        [
                            dcc.Link("Watch the progress", href=f"/datasets?ds={ds}", className="btn btn-primary"),
                            html.Button(
                                "Show what is scored so far",
                                id=ids.EX_WAIT_SHOW,
                                className="btn",
                                n_clicks=0,
                                style=show_now_style(can_show),
                            ),
                        ],
                        className="btn-row",
                    ),
                ],
                className="empty-state computing",
            ),
            dcc.Interval(id=ids.EX_WAIT_POLL, interval=poll_ms),
            dcc.Store(id=ids.EX_WAIT_DS, data=ds),
        ],
        id=ids.EX_BODY,
    )


def show_now_style(can_show: bool) -> dict[str, str]:
    """The "show what is scored so far" button: shown once some axis is there."""
    return {} if can_show else {"display": "none"}


def computing_status(parts: list[str]) -> str:
    """'still computing: training the demo models 40% · clip run #3 queued'."""
    return "still computing: " + " \u00b7 ".join(parts)


def selection_panel() -> html.Div:
    """The right column: what the selection holds (filled by the selection callback), save and export."""
    return html.Div(
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
                launch_button(ids.XP_OPEN_SELECTION),
                html.Div(id=ids.SEL_STATUS),
                html.Div(id=ids.SEL_SAVED, className="saved"),
            ),
        ],
        className="panel-col",
    )


def gallery() -> html.Div:
    """The samples of the selection, a page at a time."""
    return card(
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


def detail_overlay() -> html.Div:
    """One sample, whole, over the page (a marker or a gallery card clicked; Esc or the close button shuts it)."""
    return html.Div(
        html.Div(
            [
                html.Button("\u00d7", id=ids.DETAIL_CLOSE, className="detail-close", n_clicks=0, title="close (Esc)"),
                html.Div(id=ids.DETAIL_BODY),
                html.Div(id=ids.DETAIL_NEIGHBOURS),  # filled by pages/explore/neighbours.py
            ],
            className="detail-box",
        ),
        id=ids.DETAIL,
        className="detail-overlay",
        style={"display": "none"},
    )


# --------------------------------------------------------------------------------------------------
# what the callbacks put in them
# --------------------------------------------------------------------------------------------------


def selection_title(label: str, body: dict[str, Any]) -> list[Any]:
    """The region's name, then the filters in force."""
    filters = []
    if body.get("task_types") is not None:
        filters.append(f"{len(body['task_types'])} task type(s)")
    if body.get("metadata"):
        for f, v in body["metadata"].items():
            filters.append(f"{f} ∈ {{{', '.join(map(str, v))}}}")
    return [
        html.Span(label, className="sel-label"),
        *([html.Span(" · " + "; ".join(filters), className="muted")] if filters else []),
    ]


def count_block(count: int, total_n: int, ms: float) -> list[Any]:
    """The selection's count (from the server, over every point) and how long the server took."""
    return [
        html.Span(f"{count:,}", className="big-num", id="sel-count-value", **data_attr("count", count)),
        html.Span(f" of {total_n:,} samples ({(100 * count / total_n) if total_n else 0:.2f}%)", className="muted"),
        html.Div(f"server answered in {ms:.0f} ms", className="muted small"),
    ]


def gallery_cards(items: list[Sample], count: int, x: str, y: str, setup: dict[str, Any]) -> list[Any]:
    """A card per sample of the page, or a line saying the selection is empty."""
    colors = category_colors(list((setup.get("task_counts") or {}).keys()))
    meta_keys = set(setup.get("meta_fields") or {})
    cards: list[Any] = [gallery_card(s, x, y, metric_name(x), metric_name(y), colors, meta_keys) for s in items]
    if not cards:
        cards = [html.P("No samples in this selection." if count == 0 else "", className="hint")]
    return cards


def gallery_info(page: int, n_items: int, total_items: int) -> str:
    """'13-24 of 500' (an en dash) for a page that shows samples; nothing for an empty one."""
    first = page * PAGE_SIZE + 1 if n_items else 0
    return f"{first:,}\u2013{page * PAGE_SIZE + n_items:,} of {total_items:,}" if n_items else ""


def meta_value_options(values: list[Any]) -> list[dict[str, Any]]:
    """A checkbox per value of a metadata colour, with its colour dot."""
    colors = category_colors([str(v) for v in values])
    return [
        {
            "label": html.Span(
                [html.Span(className="dot", style={"background": colors[str(v)]}), str(v)], className="tt-line"
            ),
            "value": str(v),
        }
        for v in values
    ]


def saved_rows(ctx: UiContext, ds: int, session_ids: list[int] | None = None) -> list[Any]:
    """The dataset's saved selections, newest first (eight at most), with download links, a link that opens each
    on the plane, and a mark per experiment that has results for it."""
    saved = saved_selections(ctx, ds, session_ids)
    if not saved:
        return [html.P("Nothing saved yet. Saved selections become curriculum stages and downloads.", className="hint")]
    marks = dataset_marks(ctx, ds)
    rows = []
    for s in saved[:8]:
        name = s.get("name") or f"selection #{s['id']}"
        rows.append(export_links(int(s["id"]), f"#{s['id']} {name} · {int(s.get('count', 0)):,}"))
        rows.append(saved_extras(ds, int(s["id"]), marks))
    return rows


SUMMARY_COLUMNS = (("mean", ("mean",)), ("q25", ("q25", "p25")), ("median", ("median", "q50")), ("q75", ("q75", "p75")))


def summary_block(
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


def shares_block(prev: SelectionPreview, setup: dict[str, Any]) -> Any:
    """A bar per task type: its share of the selection, with its share of the dataset marked on the bar."""
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
