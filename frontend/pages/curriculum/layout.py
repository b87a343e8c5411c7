"""Curriculum's layout: the builder form, the saved-selections alternative, the plane with the stages."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from frontend import ids
from frontend.api_shapes import ApiError, Dataset
from frontend.components import card, empty_state, number_input
from frontend.context import UiContext
from frontend.figures import GRAPH_CONFIG, empty_figure
from frontend.pages.axes import axis_choices, default_axes
from frontend.pages.curriculum.builder import builder_defaults
from frontend.pages.launch import launch_button, launch_dialog


def layout(ctx: UiContext, ds: int | None, all_ds: list[Dataset]) -> Any:
    if ds is None:
        return empty_state("No dataset yet", "Ingest and score a dataset first.", "/datasets", "Go to Datasets")
    dataset = next(d for d in all_ds if int(d["id"]) == ds)
    options, labels, shortcut = axis_choices(ctx.api.axes(ds))
    if not options:
        return empty_state(
            f"{dataset['name']}: nothing scored yet",
            "A curriculum needs two finished metrics.",
            f"/datasets?ds={ds}",
            "Start a scorer run",
        )
    x, y = default_axes(options, shortcut)
    n = int(dataset.get("n_samples", 0))
    per_stage = max(1, min(2400, n // 10 or 1))
    defaults = {"x_min": None, "y_min": None, "dx": None, "dy": None}
    if x and y:
        try:
            pts = ctx.points.get(ds, x, y)
            defaults = builder_defaults(pts.x, pts.y)  # type: ignore[assignment]
        except ApiError:
            pass
    setup = {"ds": ds, "labels": labels, "n": n}
    builder = card(
        "The paper's builder",
        html.P(
            "Stage k keeps x ≥ x_min + k·dx and y ≥ y_min + k·dy, then draws per-stage samples at random "
            "(stages disjoint): each stage narrows toward the high-loss, high-CLIP corner.",
            className="hint",
        ),
        html.Label("x", className="field-label"),
        dcc.Dropdown(id=ids.CU_X, options=options, value=x, clearable=False),
        html.Label("y", className="field-label"),
        dcc.Dropdown(id=ids.CU_Y, options=options, value=y, clearable=False),
        html.Div(
            [
                html.Div(
                    [
                        html.Label("stages", className="field-label"),
                        number_input(ids.CU_STAGES, 3, step=1, min=1, max=10),
                    ]
                ),
                html.Div(
                    [
                        html.Label("per stage", className="field-label"),
                        number_input(ids.CU_PER_STAGE, per_stage, step=1, min=1),
                    ]
                ),
                html.Div(
                    [
                        html.Label("x_min", className="field-label"),
                        number_input(ids.CU_X_MIN, defaults["x_min"], placeholder="min"),
                    ]
                ),
                html.Div(
                    [
                        html.Label("y_min", className="field-label"),
                        number_input(ids.CU_Y_MIN, defaults["y_min"], placeholder="min"),
                    ]
                ),
                html.Div([html.Label("dx", className="field-label"), number_input(ids.CU_DX, defaults["dx"])]),
                html.Div([html.Label("dy", className="field-label"), number_input(ids.CU_DY, defaults["dy"])]),
                html.Div([html.Label("seed", className="field-label"), number_input(ids.CU_SEED, 0, step=1, min=0)]),
                html.Div(
                    [
                        html.Label("name", className="field-label"),
                        dcc.Input(id=ids.CU_NAME, className="input", placeholder="optional", maxLength=200),
                    ]
                ),
            ],
            className="form-grid",
        ),
        html.Button("Build curriculum", id=ids.CU_BUILD, className="btn btn-primary", n_clicks=0),
    )
    from_selections = card(
        "Or: saved selections as stages",
        html.P("Pick saved selections in stage order (save them on the Explore page).", className="hint"),
        dcc.Dropdown(id=ids.CU_SELECTIONS, options=[], value=[], multi=True, placeholder="selection for stage 1, 2, …"),
        html.Button("Build from selections", id=ids.CU_BUILD_SEL, className="btn", n_clicks=0),
    )
    experiment = card(
        "Train & compare with random",
        html.P(
            "Train the base model on the curriculum built last (stages in order) and on a random control with the "
            "same stage sizes, per seed, and compare them on eval suites. Saved selections can be arms too.",
            className="hint",
        ),
        launch_button(ids.XP_OPEN_CURRICULUM),
    )
    return html.Div(
        [
            dcc.Store(id=ids.CU_SETUP, data=setup),
            launch_dialog(),
            html.Div(
                [
                    html.Div([builder, from_selections, experiment], className="controls wide"),
                    html.Div(
                        [
                            card(
                                None,
                                dcc.Graph(
                                    id=ids.CU_GRAPH,
                                    figure=empty_figure("Loading…"),
                                    config=GRAPH_CONFIG,
                                    style={"height": "560px"},
                                ),
                                html.Div(id=ids.CU_SIZES, className="stage-sizes"),
                                html.Div(id=ids.CU_ALERT),
                            ),
                            dcc.Loading(html.Div(id=ids.CU_RESULT), type="dot", color="#3B82C4"),
                        ],
                        className="plot-col",
                    ),
                ],
                className="cur-grid",
            ),
        ],
        className="curriculum",
    )
