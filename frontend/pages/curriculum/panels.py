"""Curriculum's panels: the planned stages' table (as the server would build them now) and a built
curriculum's card with its download."""

from __future__ import annotations

from typing import Any

from dash import html

from frontend.api_client import ApiClient
from frontend.components import card, data_attr, fmt_num
from frontend.figures import STAGE_COLORS
from frontend.pages.axes import short_label


def curriculum_card(cur: dict[str, Any]) -> Any:
    """A built curriculum: its stages (rule or source selection) and the zip download."""
    stages = cur.get("stages") or []
    from_selections = any(s.get("selection_id") for s in stages)
    rows = []
    for k, s in enumerate(stages):
        color = STAGE_COLORS[min(k, len(STAGE_COLORS) - 1)]
        rows.append(
            html.Tr(
                [
                    html.Td(
                        html.Span(
                            str(s.get("name") or f"stage {k + 1}"), className="stage-pill", style={"background": color}
                        )
                    ),
                    html.Td(f"{int(s.get('count', 0)):,}", className="num"),
                    html.Td(f"#{s['selection_id']}", className="muted") if from_selections else None,
                    html.Td(str((s.get("recipe") or {}).get("rule") or ""), className="muted")
                    if not from_selections
                    else None,
                ]
            )
        )
    cid = int(cur["id"])
    return card(
        f"Curriculum #{cid}" + (f" · {cur['name']}" if cur.get("name") else ""),
        html.Table(
            [
                html.Thead(
                    html.Tr(
                        [
                            html.Th("stage"),
                            html.Th("samples", className="num"),
                            html.Th("selection" if from_selections else "rule"),
                        ]
                    )
                ),
                html.Tbody(rows),
            ],
            className="table compact",
        ),
        html.A(
            "Download zip (LLaVA JSON per stage + JSONL, Parquet, ids, manifest.json)",
            href=ApiClient.curriculum_export_path(cid),
            className="btn btn-primary",
            download="",
            id="cur-download",
        ),
        class_name="cur-result",
    )


def stage_marks(planned: list[dict[str, Any]]) -> tuple[list[tuple[float, float]], list[str], list[str]]:
    """Each planned stage's lower corner (x_min, y_min), size and name, for the plane."""
    thresholds: list[tuple[float, float]] = []
    sizes: list[str] = []
    names: list[str] = []
    for i, st in enumerate(planned):
        r = st.get("recipe") or {}
        thresholds.append((float(r.get("x_min", 0.0)), float(r.get("y_min", 0.0))))
        sizes.append(f"{int(st.get('count', 0)):,}")
        names.append(str(st.get("name") or f"stage {i + 1}"))
    return thresholds, sizes, names


def plan_table(planned: list[dict[str, Any]], per_stage: int, x_label: str, y_label: str) -> list[Any]:
    """The planned stages: thresholds, how many points their region holds, how many are drawn (short ones
    marked), and a note on where the sizes come from."""
    rows = []
    for i, st in enumerate(planned):
        r = st.get("recipe") or {}
        tx, ty = float(r.get("x_min", 0.0)), float(r.get("y_min", 0.0))
        pool = int(r.get("available", st.get("count", 0)))
        count = int(st.get("count", 0))
        short = count < per_stage
        rows.append(
            html.Tr(
                [
                    html.Td(
                        html.Span(
                            str(st.get("name") or f"stage {i + 1}"),
                            className="stage-pill",
                            style={"background": STAGE_COLORS[min(i, len(STAGE_COLORS) - 1)]},
                        )
                    ),
                    html.Td(f"≥ {fmt_num(tx)}"),
                    html.Td(f"≥ {fmt_num(ty)}"),
                    html.Td(f"{pool:,}", className="num"),
                    html.Td(
                        f"{count:,}" + (" (short)" if short else ""),
                        className="num warn" if short else "num",
                        **data_attr("count", count),
                    ),
                ],
                className="stage-row",
            )
        )
    table = html.Table(
        [
            html.Thead(
                html.Tr(
                    [
                        html.Th("stage"),
                        html.Th(short_label(x_label)),
                        html.Th(short_label(y_label)),
                        html.Th("in region", className="num"),
                        html.Th("drawn", className="num"),
                    ]
                )
            ),
            html.Tbody(rows),
        ],
        className="table compact",
    )
    note = html.P(
        "Sizes come from the server over every point. Stages are disjoint: a later stage draws from "
        "what earlier stages left in its region.",
        className="hint",
    )
    return [table, note]
