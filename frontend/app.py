"""The Dash app shell: header (pages, dataset picker, token), routing, the page modules' callbacks."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import dash
import flask
from dash import ClientsideFunction, Dash, Input, Output, State, dcc, html, no_update

from frontend import ids
from frontend.api_client import REQUEST_TOKEN, ApiClient
from frontend.api_shapes import ApiError, Dataset
from frontend.callbacks import named_callback
from frontend.components import alert
from frontend.context import DEFAULT_POINT_BUDGET, UiContext
from frontend.errors import Outputs, describe
from frontend.pages import curriculum, datasets, experiments, explore, launch

ASSETS = Path(__file__).parent / "assets"

# plotly imports pandas lazily while serialising a figure; two callback threads doing that at once
# can see a half-initialised module ("partially initialized module 'pandas'"). Import it here, once.
with contextlib.suppress(ImportError):  # pandas is optional for the UI
    import pandas  # noqa: F401

PAGES: dict[str, tuple[str, Any]] = {
    "/datasets": ("Datasets", datasets),
    "/explore": ("Explore", explore),
    "/curriculum": ("Curriculum", curriculum),
    "/experiments": ("Experiments", experiments),
}
# What the address may name besides the dataset, for the page it is on: Explore opens a saved selection
# (?sel=ID), Experiments an experiment (?exp=ID). Another dataset picked in the header drops them.
PAGE_QUERY = ("sel", "exp")
DEFAULT_PATH = "/explore"


def create_app(
    api_base: str | None = None,
    *,
    api: ApiClient | None = None,
    auth_required: bool = False,
    requests_pathname_prefix: str = "/",
    point_budget: int = DEFAULT_POINT_BUDGET,
) -> Dash:
    """The UI as a Dash app whose callbacks talk to the API at `api_base` (or through `api`)."""
    if api is None:
        if api_base is None:
            raise ValueError("give api_base or api")
        api = ApiClient(api_base)
    ctx = UiContext(api=api, auth_required=auth_required, point_budget=point_budget)
    app = Dash(
        __name__,
        title="qspace",
        update_title="",
        assets_folder=str(ASSETS),
        suppress_callback_exceptions=True,
        requests_pathname_prefix=requests_pathname_prefix,
        serve_locally=True,
        compress=False,
    )
    app.layout = shell(auth_required)

    @app.server.before_request
    def _request_token() -> None:
        # Set on every request (a worker thread serves many): the browser session's token or none.
        REQUEST_TOKEN.set(flask.request.headers.get("X-Qspace-Token") or None)

    _register_shell(app, ctx)
    _register_token(app, ctx)
    datasets.register(app, ctx)
    explore.register(app, ctx)
    curriculum.register(app, ctx)
    experiments.register(app, ctx)
    launch.register(app, ctx)  # the "Train & compare with random" form of Explore and Curriculum
    app.server.config["QSPACE_UI_CONTEXT"] = ctx  # for tests and the mount
    return app


def shell(auth_required: bool) -> html.Div:
    token = (
        [
            dcc.Input(
                id=ids.TOKEN,
                type="password",
                placeholder="API token",
                className="input token-input",
                debounce=True,
                persistence=True,
                persistence_type="session",
            )
        ]
        if auth_required
        else [dcc.Input(id=ids.TOKEN, type="hidden", value="")]
    )
    return html.Div(
        [
            dcc.Location(id=ids.URL, refresh="callback-nav"),
            dcc.Store(id=ids.DATASET_STORE, storage_type="session"),
            dcc.Store(id=ids.TOKEN_STORE, storage_type="session"),  # the API token: this browser session only
            dcc.Store(id=ids.SAVED_STORE, storage_type="session", data=[]),
            dcc.Store(id=ids.CURRICULA_STORE, storage_type="session", data=[]),
            # An empty graph in the shell makes the browser fetch plotly.js while the first page is still
            # being routed, instead of after it (saves ~1 s on a cold load).
            dcc.Graph(
                id="preload-graph",
                figure={"data": [], "layout": {}},
                style={"display": "none"},
                config={"staticPlot": True},
            ),
            html.Header(
                [
                    html.A(
                        [html.Span("q", className="logo-q"), html.Span("space", className="logo-rest")],
                        href="/",
                        className="logo",
                        title="qspace: the quality space of multimodal instruction data",
                    ),
                    html.Nav(id=ids.NAV, className="nav"),
                    html.Div(
                        [
                            html.Label("Dataset", htmlFor=ids.DATASET, className="header-label"),
                            dcc.Dropdown(
                                id=ids.DATASET,
                                clearable=False,
                                searchable=True,
                                className="ds-dropdown",
                                placeholder="no dataset yet",
                            ),
                            *token,
                        ],
                        className="header-right",
                    ),
                ],
                className="header",
            ),
            html.Div(id=ids.SHELL_ALERT, className="shell-alert"),
            dcc.Loading(
                html.Main(id=ids.PAGE, className="page", children=html.Div("Loading…", className="page-loading")),
                type="dot",
                color="#3B82C4",
                delay_show=400,
                overlay_style={"visibility": "visible", "opacity": 0.6},
                parent_className="page-loading-wrap",
                target_components={ids.PAGE: "children"},  # type: ignore[arg-type]
            ),
        ],
        className="app",
    )


def _register_token(app: Dash, ctx: UiContext) -> None:
    # In the browser: the typed token goes to the session store, which assets/token.js sends along with every
    # Dash request (and as a read-only cookie for thumbnails); it never reaches a persistent store.
    app.clientside_callback(
        ClientsideFunction(namespace="qspace_token", function_name="keep"),
        Output(ids.TOKEN_STORE, "data"),
        Input(ids.TOKEN, "value"),
    )

    @app.callback(Output(ids.TOKEN, "type"), Input(ids.URL, "pathname"))
    def _token_field(_: str | None) -> str:
        """Show the token field when the API wants a token (any configured, QSPACE_API_TOKEN or `qspace token`)."""
        try:
            needed = bool(ctx.api.health().get("auth_required")) or ctx.auth_required
        except ApiError:
            needed = ctx.auth_required
        return "password" if needed else "hidden"


def _ds_from_search(search: str | None) -> int | None:
    q = parse_qs((search or "").lstrip("?"))
    raw = (q.get("ds") or [""])[0]
    return int(raw) if raw and raw.isdigit() else None


def _page_query(search: str | None) -> dict[str, str]:
    """The page's own parameters of the address (PAGE_QUERY), whole numbers only."""
    q = parse_qs((search or "").lstrip("?"))
    return {k: q[k][0] for k in PAGE_QUERY if q.get(k) and q[k][0].isdigit()}


def _page_layout(module: Any, ctx: UiContext, ds: int | None, all_ds: list[Dataset], query: Mapping[str, str]) -> Any:
    """The page's layout; a page whose layout takes `query` gets the address's page parameters."""
    if "query" in inspect.signature(module.layout).parameters:
        return module.layout(ctx, ds, all_ds, query=query)
    return module.layout(ctx, ds, all_ds)


def _nav(path: str, ds: int | None) -> list[Any]:
    q = f"?{urlencode({'ds': ds})}" if ds is not None else ""
    return [
        dcc.Link(label, href=f"{p}{q}", className="nav-link active" if p == path else "nav-link")
        for p, (label, _) in PAGES.items()
    ]


def _choose(datasets_: list[Dataset], wanted: int | None, remembered: int | None) -> int | None:
    known = {int(d["id"]) for d in datasets_}
    for cand in (wanted, remembered):
        if cand is not None and cand in known:
            return cand
    return max(known) if known else None


def _register_shell(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output={
            "page": Output(ids.PAGE, "children"),
            "nav": Output(ids.NAV, "children"),
            "ds_options": Output(ids.DATASET, "options"),
            "ds_value": Output(ids.DATASET, "value"),
            "search": Output(ids.URL, "search"),
            "ds_store": Output(ids.DATASET_STORE, "data"),
            "alert": Output(ids.SHELL_ALERT, "children"),
        },
        inputs={
            "pathname": Input(ids.URL, "pathname"),
            "search": Input(ids.URL, "search"),
            "picked": Input(ids.DATASET, "value"),
            "token": Input(ids.TOKEN_STORE, "data"),  # a token typed in: the page again, with what it may see
        },
        state={"remembered": State(ids.DATASET_STORE, "data")},
    )
    def route(pathname: str | None, search: str | None, picked: int | None, token: Any, remembered: Any) -> Outputs:
        trigger = dash.callback_context.triggered_id
        path = (pathname or "/").rstrip("/") or "/"
        if path == "/":
            path = DEFAULT_PATH
        try:
            all_ds = ctx.api.datasets()
        except ApiError as exc:
            error_page = html.Div(
                [
                    alert(describe(exc)),
                    html.P("The UI will work again as soon as the API answers; reload the page then."),
                ],
                className="page-error",
            )
            return {"page": error_page, "nav": _nav(path, None), "ds_options": [], "ds_value": None, "alert": None}
        wanted = picked if trigger == ids.DATASET else _ds_from_search(search)
        remembered_id = remembered.get("id") if isinstance(remembered, dict) else None
        ds = _choose(all_ds, wanted, remembered_id)
        options = [{"label": f"{d['name']}  ·  {d['n_samples']:,}", "value": int(d["id"])} for d in all_ds]
        query = {} if trigger == ids.DATASET and ds != _ds_from_search(search) else _page_query(search)
        new_search = f"?{urlencode({'ds': ds, **query})}" if ds is not None else ""
        entry = PAGES.get(path)
        if entry is None:
            page: Any = html.Div(
                [
                    html.H2("Not found"),
                    html.P(f"There is no page at {pathname}."),
                    dcc.Link("Go to Explore", href="/explore"),
                ],
                className="page-error",
            )
        else:
            module = entry[1]
            try:
                page = _page_layout(module, ctx, ds, all_ds, query)
            except Exception as exc:
                page = html.Div([alert(describe(exc))], className="page-error")
        return {
            "page": page,
            "nav": _nav(path, ds),
            "ds_options": options,
            "ds_value": ds,
            "search": new_search if new_search != (search or "") else no_update,
            "ds_store": {"id": ds},
            "alert": None,
        }
