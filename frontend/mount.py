"""Serve the Dash UI at / beside the FastAPI API at /api, in one ASGI app (`qspace serve`)."""

from __future__ import annotations

import ipaddress
from typing import Any

from a2wsgi import WSGIMiddleware
from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from frontend.api_client import ApiClient
from frontend.app import create_app
from frontend.context import DEFAULT_POINT_BUDGET

LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def api_base_url(settings: Any) -> str:
    """Where the UI's server side reaches the API: the address `qspace serve` binds, via loopback."""
    host = str(getattr(settings, "host", "127.0.0.1") or "127.0.0.1")
    host = LOOPBACK.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{int(getattr(settings, 'port', 8000))}"


def _loopback_url(host: str, port: int) -> str | None:
    """The URL that reaches a server socket bound at (host, port) from this machine; None if not an IP."""
    host = LOOPBACK.get(host, host)
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _UiRoutes:
    """Everything that is not the API goes to Dash; unknown /api paths stay JSON 404s, never HTML.

    It also tells the UI's API client where this very server listens (the socket uvicorn accepted the
    request on), so the UI reaches the API even when the port came from the command line rather than
    from the settings.
    """

    def __init__(self, ui: ASGIApp, api: ApiClient | None = None) -> None:
        self.ui = ui
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.api is not None and scope["type"] == "http":
            server = scope.get("server")
            if server and server[1] is not None:
                url = _loopback_url(str(server[0]), int(server[1]))
                if url is not None and url != self.api.base_url:
                    self.api.rebase(url)
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/api" or path.startswith("/api/")):
            response = JSONResponse({"detail": f"no API route {scope.get('method', 'GET')} {path}"}, status_code=404)
            await response(scope, receive, send)
            return
        await self.ui(scope, receive, send)


def mount_ui(app: FastAPI, settings: Any, api_base: str | None = None) -> None:
    """Mount the UI on `app` at /. The Dash callbacks call the API at `api_base`; by default at the
    settings' host and port over loopback, then wherever the server turns out to listen."""
    api = ApiClient(api_base or api_base_url(settings))
    dash_app = create_app(
        api=api,
        auth_required=bool(getattr(settings, "api_token", None)),
        point_budget=int(getattr(settings, "ui_point_budget", DEFAULT_POINT_BUDGET)),
    )
    app.state.dash_app = dash_app
    ctx = dash_app.server.config["QSPACE_UI_CONTEXT"]
    app.state.dataset_deleted.append(ctx.points.drop_dataset)  # the UI's cached planes go with the dataset
    ui: Any = WSGIMiddleware(dash_app.server, workers=16)
    app.mount("/", _UiRoutes(ui, None if api_base else api), name="ui")
