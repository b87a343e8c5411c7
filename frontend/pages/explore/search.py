"""Text search on the explore page ("find samples like…"): the typed words go to `POST /datasets/{ds}/search`,
where a worker embeds them with the CLIP text tower of the dataset's newest clip run that kept its embeddings and
the API ranks the samples' image embeddings against them. The hits are shown as a list of cards in the gallery
area (nearest first; a click opens the detail view) and highlighted on the plane (assets/overlay.js, group
"search"). A search has no selection recipe (a recipe names regions of a plane, not an id list), so the hits stay a
view of their own beside the region's selection rather than replacing it.

The panel shows only on a dataset with such a run. A search without a worker answers 504: the panel then says how
to start one; empty text is refused here before any request (the API would answer 422).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dash import ALL, Dash, Input, Output, State, callback_context, dcc, html
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.api_shapes import ApiError, Neighbour
from frontend.callbacks import browser_callback, named_callback
from frontend.components import alert, card, data_attr
from frontend.context import UiContext
from frontend.errors import Outputs
from frontend.figures.overlay import overlay_trace
from frontend.pages.explore.map_view import overlay_key, plane_revision
from frontend.pages.explore.neighbours import clicked_card, dataset_embedding_run, hit_card
from frontend.pages.explore.query import points_for

SEARCH_K = 48
SEARCH_COLOR = "#D6336C"
HIDDEN = {"display": "none"}


def search_panel() -> html.Div:
    """The card above the gallery: the text box, its buttons, a line of status, the hits (hidden until the
    dataset proves to have a clip run with kept embeddings)."""
    return html.Div(
        card(
            "Find samples like…",
            dcc.Store(id=ids.SEARCH_HITS, data=None),
            dcc.Store(id=ids.SEARCH_OVERLAY, data=None),
            dcc.Store(id=ids.SEARCH_ACK, data=None),
            html.Div(
                [
                    dcc.Input(
                        id=ids.SEARCH_TEXT,
                        type="text",
                        placeholder="find samples like… (e.g. a red bus at night)",
                        debounce=False,
                        n_submit=0,
                        maxLength=2000,
                        className="search-input",
                    ),
                    html.Button("Search", id=ids.SEARCH_GO, className="btn btn-primary", n_clicks=0),
                    html.Button("Clear", id=ids.SEARCH_CLEAR, className="btn btn-ghost", n_clicks=0),
                ],
                className="inline search-row",
            ),
            html.Div(id=ids.SEARCH_INFO),
            html.Div(id=ids.SEARCH_RESULTS, className="hit-strip search-results"),
            class_name="search-card",
        ),
        id=ids.SEARCH_PANEL,
        style=HIDDEN,
    )


def error_text(exc: ApiError) -> str:
    """A failed search in words: 504 (no worker answered), 503 (no queue), 422 (the API refused the query)."""
    if exc.status == 504:
        return (
            "No worker answered the text search in time: the query is embedded by a worker consuming the "
            "'default' queue. Start one (`qspace worker`, or `qspace serve` without --no-worker) and search again."
        )
    if exc.status == 503:
        return f"The task queue is unreachable, so the text cannot be embedded: {exc.message}"
    if exc.status == 422:
        return f"The search was refused: {exc.message}"
    return exc.message


def results_block(items: Sequence[Neighbour]) -> list[Any]:
    return [hit_card(i, ids.SEARCH_CARD) for i in items]


def info_line(text: str, items: Sequence[Neighbour], run_id: int) -> html.Div:
    return html.Div(
        [
            html.Span(
                f"{len(items)} samples nearest to “{text}”", className="search-count", **data_attr("count", len(items))
            ),
            html.Span(
                f" · CLIP image embeddings of clip run #{run_id}, cosine similarity · highlighted on the plane",
                className="muted small",
            ),
        ]
    )


def register(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output={"style": Output(ids.SEARCH_PANEL, "style")},
        inputs={"setup": Input(ids.EX_SETUP, "data")},
    )
    def show_panel(setup: dict[str, Any] | None) -> Outputs:
        if not setup:
            raise PreventUpdate
        return {"style": None if dataset_embedding_run(ctx, int(setup["ds"])) else HIDDEN}

    @named_callback(
        app,
        output={
            "hits": Output(ids.SEARCH_RESULTS, "children"),
            "info": Output(ids.SEARCH_INFO, "children"),
            "found": Output(ids.SEARCH_HITS, "data"),
        },
        inputs={
            "go": Input(ids.SEARCH_GO, "n_clicks"),
            "submit": Input(ids.SEARCH_TEXT, "n_submit"),
            "clear": Input(ids.SEARCH_CLEAR, "n_clicks"),
        },
        state={
            "text": State(ids.SEARCH_TEXT, "value"),
            "setup": State(ids.EX_SETUP, "data"),
            "token": State(ids.TOKEN, "value"),
        },
        alert="info",
        prevent_initial_call=True,
    )
    def search(
        go: int, submit: int, clear: int, text: str | None, setup: dict[str, Any] | None, token: str | None
    ) -> Outputs:
        if not setup:
            raise PreventUpdate
        if callback_context.triggered_id == ids.SEARCH_CLEAR:
            return {"hits": None, "info": None, "found": None}
        query = (text or "").strip()
        if not query:
            return {"info": alert("Type a few words to search for, e.g. “a dog on a beach”.", "info")}
        run = dataset_embedding_run(ctx, int(setup["ds"]))
        if run is None:
            return {
                "info": alert("This dataset has no finished clip run with keep_embeddings: true to search.", "info")
            }
        try:
            found = ctx.api.search(int(setup["ds"]), int(run["id"]), query, SEARCH_K, token=token or None)
        except ApiError as exc:
            return {"hits": None, "found": None, "info": alert(error_text(exc))}
        items = found.get("items") or []
        return {
            "hits": results_block(items),
            "info": info_line(query, items, int(run["id"])),
            "found": {"ids": [int(i["id"]) for i in items], "text": query},
        }

    @named_callback(
        app,
        output={"overlay": Output(ids.SEARCH_OVERLAY, "data")},
        inputs={"found": Input(ids.SEARCH_HITS, "data"), "x": Input(ids.EX_X, "value"), "y": Input(ids.EX_Y, "value")},
        state={"setup": State(ids.EX_SETUP, "data"), "color": State(ids.EX_COLOR, "value")},
        prevent_initial_call=True,
    )
    def place(
        found: dict[str, Any] | None, x: str | None, y: str | None, setup: dict[str, Any] | None, color: str | None
    ) -> Outputs:
        """The hits' markers on the plane, for its current axes (placed again when the axes change)."""
        if not setup or not x or not y:
            raise PreventUpdate
        if not found or not found.get("ids"):
            return {"overlay": None}
        try:
            points = points_for(ctx, setup, x, y, color)[0]
        except ApiError:
            return {"overlay": None}
        members = found["ids"]
        trace, _ = overlay_trace(
            points.x,
            points.y,
            points.ids,
            members,
            name=f"search: {str(found.get('text'))[:40]}",
            color=SEARCH_COLOR,
            group="search",
        )
        key = overlay_key(members, x, y)
        return {"overlay": {ids.EX_GRAPH: {"key": key, "uirevision": plane_revision(setup, x, y), "traces": [trace]}}}

    # the browser lays the traces over the plane (assets/overlay.js keeps them there across re-plots)
    browser_callback(
        app,
        "searchOverlay",
        output=Output(ids.SEARCH_ACK, "data"),
        inputs={"overlay": Input(ids.SEARCH_OVERLAY, "data")},
    )

    @named_callback(
        app,
        output={"sample_id": Output(ids.DETAIL_ID, "data", allow_duplicate=True)},
        inputs={"clicks": Input({"type": ids.SEARCH_CARD, "id": ALL}, "n_clicks")},
        prevent_initial_call=True,
    )
    def open_hit(clicks: list[int | None]) -> Outputs:
        return {"sample_id": clicked_card()}
