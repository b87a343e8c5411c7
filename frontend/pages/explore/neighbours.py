"""A sample's nearest neighbours in its detail view: the samples whose CLIP image embeddings (kept by a finished
`clip` run with `keep_embeddings: true`) are nearest to its own, as small clickable thumbnails with their cosine
similarity. A dataset without such a run shows nothing (no error): neighbours are a nicety of the detail view.

Also here: the small thumbnail card a neighbour or a text-search hit is drawn as, and which run embeds a dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dash import ALL, Dash, Input, Output, State, callback_context, html
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.api_client import ApiClient
from frontend.api_shapes import ApiError, Neighbour, Run
from frontend.callbacks import named_callback
from frontend.components import data_attr
from frontend.context import UiContext
from frontend.errors import Outputs

NEIGHBOURS_K = 12


def embedding_run(runs: Sequence[Run]) -> Run | None:
    """The newest finished `clip` run that kept its embeddings (the one neighbours and text search rank by)."""
    kept = [
        r
        for r in runs
        if r.get("kind") == "clip" and r.get("status") == "done" and (r.get("params") or {}).get("keep_embeddings")
    ]
    return max(kept, key=lambda r: int(r.get("id", 0))) if kept else None


def dataset_embedding_run(ctx: UiContext, ds: int) -> Run | None:
    """`embedding_run` of a dataset's runs; None when the runs cannot be read (the features just stay hidden)."""
    try:
        return embedding_run(ctx.api.runs(ds))
    except ApiError:
        return None


def hit_card(item: Neighbour, card_type: str) -> html.Div:
    """A thumbnail with the sample's id and its similarity; clicking it opens that sample's detail view."""
    sid = int(item["id"])
    return html.Div(
        [
            html.Img(src=ApiClient.image_path(sid, 0, 160), alt=f"sample {sid}"),
            html.Div(
                [
                    html.Span(f"#{sid}", className="card-id"),
                    html.Span(f"{float(item['score']):.3f}", className="hit-score"),
                ],
                className="hit-caption",
            ),
        ],
        id={"type": card_type, "id": sid},
        className="hit-card",
        n_clicks=0,
        title=f"sample {sid}: cosine similarity {float(item['score']):.4f}; open its detail view",
        **data_attr("sample-id", sid),
    )


def neighbours_block(items: Sequence[Neighbour], run: Run) -> html.Div:
    """The detail view's neighbours section: the cards, nearest first, and what they were ranked by."""
    model = (run.get("params") or {}).get("model") or "CLIP"
    return html.Div(
        [
            html.H4("Nearest neighbours"),
            html.Div(
                f"{len(items)} nearest by {model} image embedding (clip run #{run.get('id')}), cosine similarity",
                className="muted small",
            ),
            html.Div([hit_card(i, ids.NEIGHBOUR_CARD) for i in items], className="hit-strip"),
        ],
        className="detail-neighbours",
        **data_attr("run", run.get("id")),
    )


def clicked_card() -> int:
    """The sample id of the card just clicked (a pattern-matching `{type, id}` input), else PreventUpdate: cards
    arriving with a new detail view or a new search fire the input with n_clicks 0."""
    trig = callback_context.triggered_id
    fired = callback_context.triggered[0].get("value") if callback_context.triggered else None
    if not isinstance(trig, dict) or not fired:
        raise PreventUpdate
    return int(trig["id"])


def register(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output={"block": Output(ids.DETAIL_NEIGHBOURS, "children")},
        inputs={"sample_id": Input(ids.DETAIL_ID, "data")},
        state={"setup": State(ids.EX_SETUP, "data")},
        alert="block",
        prevent_initial_call=True,
    )
    def neighbours(sample_id: int | None, setup: dict[str, Any] | None) -> Outputs:
        """Filled after the detail itself (a separate callback: the neighbour search never delays the sample)."""
        if sample_id is None or not setup:
            return {"block": None}
        run = dataset_embedding_run(ctx, int(setup["ds"]))
        if run is None:
            return {"block": None}
        try:
            items = ctx.api.neighbours(int(sample_id), int(run["id"]), NEIGHBOURS_K)
        except ApiError as exc:  # e.g. this sample's clip row failed: it has no embedding; said quietly
            return {"block": html.Div(f"No neighbours: {exc.message}", className="muted small detail-neighbours")}
        return {"block": neighbours_block(items, run)}

    @named_callback(
        app,
        output={"sample_id": Output(ids.DETAIL_ID, "data", allow_duplicate=True)},
        inputs={"clicks": Input({"type": ids.NEIGHBOUR_CARD, "id": ALL}, "n_clicks")},
        prevent_initial_call=True,
    )
    def open_neighbour(clicks: list[int | None]) -> Outputs:
        return {"sample_id": clicked_card()}
