"""Small reusable pieces of layout. Dataset text is always passed as plain strings (React escapes them)."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from dash import dcc, html

from frontend import ids
from frontend.api_client import ApiClient
from frontend.api_shapes import Sample
from frontend.figures.style import category_colors

EXPORT_FORMATS = (
    ("llava", "LLaVA JSON"),
    ("jsonl", "JSONL + scores"),
    ("parquet", "Parquet"),
    ("ids", "id list"),
)


def alert(message: str | None, kind: str = "error") -> Any:
    """A message in words; `None` renders nothing."""
    if not message:
        return None
    icon = {"error": "⚠", "ok": "✓", "info": "\u2139", "warn": "⚠"}.get(kind, "")
    return html.Div(
        [html.Span(icon, className="alert-icon"), html.Span(str(message))],
        className=f"alert alert-{kind}",
        role="alert",
    )


def card(title: str | None, *children: Any, class_name: str = "", id: str | None = None, extra: Any = None) -> html.Div:
    head = (
        [
            html.Div(
                [html.H3(title, className="card-title"), extra]
                if extra is not None
                else [html.H3(title, className="card-title")],
                className="card-head",
            )
        ]
        if title
        else []
    )
    kw: dict[str, Any] = {"className": f"card {class_name}".strip()}
    if id is not None:
        kw["id"] = id
    return html.Div([*head, *children], **kw)


def empty_state(title: str, text: str, link: str, link_text: str) -> html.Div:
    """What a page shows instead of itself when there is nothing to show yet, with the way forward."""
    return html.Div(
        [html.H2(title), html.P(text), dcc.Link(link_text, href=link, className="btn btn-primary")],
        className="empty-state",
    )


def data_attr(name: str, value: Any) -> dict[str, Any]:
    """A data-* attribute for a component (tests read counts from them)."""
    return {f"data-{name}": str(value)}


def fmt_num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "\u2013"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "NaN"
    if f != 0 and (abs(f) >= 1e5 or abs(f) < 1e-3):
        return f"{f:.{digits - 1}e}"
    return f"{f:.{digits}g}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "\u2013"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def progress_bar(done: int, total: int, status: str, run_id: int | None = None) -> html.Div:
    pct = 0.0 if not total else max(0.0, min(100.0, 100.0 * done / total))
    attrs: dict[str, Any] = {
        "aria-valuenow": f"{pct:.1f}",
        "aria-valuemin": "0",
        "aria-valuemax": "100",
        "data-run": str(run_id or ""),
    }
    return html.Div(
        html.Div(className=f"progress-fill progress-{status}", style={"width": f"{pct:.1f}%"}),
        className="progress",
        role="progressbar",
        **attrs,
    )


def task_chip(name: str, color: str | None = None, count: int | None = None) -> html.Span:
    label = name if count is None else f"{name} · {count:,}"
    return html.Span(
        [html.Span(className="dot", style={"background": color or "#A0A7B4"}), label], className="chip", title=name
    )


def _score_value(sample: Sample, axis: str | None) -> Any:
    """The value of `axis` ("RUN:METRIC") in the sample's scores, if it has one."""
    if not axis or ":" not in axis:
        return None
    run, _, metric = axis.partition(":")
    entry = (sample.get("scores") or {}).get(run)
    if not entry:
        return None
    return (entry.get("metrics") or {}).get(metric)


def _turns(conversations: Sequence[Mapping[str, str]], limit: int | None = None, clip: int | None = None) -> list[Any]:
    out = []
    for k, turn in enumerate(conversations):
        if limit is not None and k >= limit:
            out.append(html.Div(f"+ {len(conversations) - limit} more turn(s)", className="turn-more"))
            break
        role = str(turn.get("from", ""))
        human = role.lower() in ("human", "user")
        text = str(turn.get("value", ""))
        if clip is not None and len(text) > clip:
            text = text[: clip - 1] + "…"
        out.append(
            html.Div(
                [
                    html.Div(
                        "human" if human else ("gpt" if role.lower() in ("gpt", "assistant") else role),
                        className="turn-role",
                    ),
                    html.Div(text, className="turn-text"),
                ],
                className=f"turn {'turn-human' if human else 'turn-gpt'}",
            )
        )
    return out


def thumb(sample: Sample, max_side: int = 256, class_name: str = "thumb") -> Any:
    image = sample.get("image")
    if not image:
        return html.Div("text only", className=f"{class_name} thumb-empty")
    n = 1 if isinstance(image, str) else len(image)
    badge = html.Span(f"{n} images", className="thumb-badge") if n > 1 else None
    return html.Div(
        [
            html.Img(
                src=ApiClient.image_path(int(sample["id"]), 0, max_side),
                alt=f"sample {sample.get('id')}",
            ),
            badge,
        ],
        className=class_name,
    )


def gallery_card(
    sample: Sample,
    x_axis: str | None,
    y_axis: str | None,
    x_name: str,
    y_name: str,
    colors: Mapping[str, str],
    meta_keys: Collection[str] | None = None,
) -> html.Div:
    """One image-text pair: thumbnail, task type, the two axis values, the first turns, label chips.

    `meta_keys` limits the chips to categorical metadata fields (e.g. a defect label)."""
    tt = str(sample.get("task_type", ""))
    meta = sample.get("metadata") or {}
    meta_chips = [
        html.Span(f"{k}: {v}", className="meta-chip")
        for k, v in meta.items()
        if (meta_keys is None or k in meta_keys) and isinstance(v, str | int | float | bool) and len(str(v)) <= 40
    ][:3]
    return html.Div(
        [
            thumb(sample),
            html.Div(
                [
                    html.Div(
                        [task_chip(tt, colors.get(tt)), html.Span(f"#{sample.get('id')}", className="card-id")],
                        className="gcard-head",
                    ),
                    html.Div(
                        [
                            html.Span([html.B(x_name), " ", fmt_num(_score_value(sample, x_axis))], className="score"),
                            html.Span([html.B(y_name), " ", fmt_num(_score_value(sample, y_axis))], className="score"),
                        ],
                        className="gcard-scores",
                    ),
                    html.Div(_turns(sample.get("conversations") or [], limit=2, clip=180), className="gcard-chat"),
                    html.Div(meta_chips, className="gcard-meta") if meta_chips else None,
                ],
                className="gcard-body",
            ),
        ],
        id={"type": ids.GALLERY_CARD, "id": int(sample["id"])},
        className="gcard",
        n_clicks=0,
        title="Open the detail view",
    )


def sample_detail(sample: Sample, axis_labels: Mapping[str, str] | None = None) -> list[Any]:
    """The detail view: every image, the whole conversation, every score, the metadata."""
    image = sample.get("image")
    images = [] if not image else ([image] if isinstance(image, str) else list(image))
    sid = int(sample["id"])
    pics: list[Any] = [
        html.A(
            html.Img(src=ApiClient.image_path(sid, k, 768), alt=str(path)),
            href=ApiClient.image_path(sid, k, None),
            target="_blank",
            className="detail-img",
            title=str(path),
        )
        for k, path in enumerate(images)
    ] or [html.Div("text-only sample", className="thumb-empty detail-noimg")]
    score_rows = []
    for run_id, entry in sorted(
        (sample.get("scores") or {}).items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 0
    ):
        metrics = entry.get("metrics") or {}
        if entry.get("error"):
            score_rows.append(
                html.Tr([html.Td(f"{entry.get('kind')} #{run_id}"), html.Td("error"), html.Td(str(entry["error"]))])
            )
        for name, value in metrics.items():
            score_rows.append(
                html.Tr([html.Td(f"{entry.get('kind')} #{run_id}"), html.Td(str(name)), html.Td(fmt_num(value, 6))])
            )
    meta = sample.get("metadata") or {}
    meta_rows = [html.Tr([html.Td(str(k)), html.Td(str(v))]) for k, v in meta.items()]
    colors = category_colors([str(sample.get("task_type", ""))])
    return [
        html.Div(
            [
                html.H2(f"Sample #{sid}", className="detail-title"),
                task_chip(str(sample.get("task_type", "")), colors.get(str(sample.get("task_type", "")))),
                html.Span(f"external id: {sample.get('external_id', '')}", className="muted detail-ext"),
            ],
            className="detail-head",
        ),
        html.Div(
            [
                html.Div(pics, className="detail-images"),
                html.Div(
                    [
                        html.H4("Conversation"),
                        html.Div(_turns(sample.get("conversations") or []), className="chat"),
                        html.H4("Scores"),
                        html.Table(
                            [
                                html.Thead(html.Tr([html.Th("run"), html.Th("metric"), html.Th("value")])),
                                html.Tbody(score_rows),
                            ],
                            className="table compact",
                        )
                        if score_rows
                        else html.Div("not scored yet", className="muted"),
                        html.H4("Metadata") if meta_rows else None,
                        html.Table(html.Tbody(meta_rows), className="table compact") if meta_rows else None,
                    ],
                    className="detail-text",
                ),
            ],
            className="detail-grid",
        ),
    ]


def export_links(sel_id: int, label: str | None = None) -> html.Div:
    return html.Div(
        [
            html.Span(label or f"selection #{sel_id}", className="saved-label"),
            html.Div(
                [
                    html.A(
                        name,
                        href=ApiClient.selection_export_path(sel_id, fmt),
                        className="btn btn-link",
                        download="",
                        id={"type": "export-link", "sel": sel_id, "fmt": fmt},
                    )
                    for fmt, name in EXPORT_FORMATS
                ],
                className="export-links",
            ),
        ],
        className="saved-row",
    )


def dropdown_options(pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"label": label, "value": value} for value, label in pairs]


def number_input(
    id: Any, value: Any, step: Any = "any", min: Any = None, placeholder: str = "", **kw: Any
) -> dcc.Input:
    return dcc.Input(
        id=id,
        type="number",
        value=value,
        step=step,
        min=min,
        placeholder=placeholder,
        debounce=True,
        className="input",
        **kw,
    )
