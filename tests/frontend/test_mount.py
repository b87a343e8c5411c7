"""`qspace serve`'s app: the UI at /, the API at /api, unknown API paths JSON 404s, errors in words."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from backend.settings import Settings
from frontend.mount import _loopback_url, api_base_url
from qspace.server import build_app


def test_loopback_url_of_the_serving_socket() -> None:
    assert _loopback_url("0.0.0.0", 8123) == "http://127.0.0.1:8123"
    assert _loopback_url("10.1.2.3", 80) == "http://10.1.2.3:80"
    assert _loopback_url("::1", 8000) == "http://[::1]:8000"
    assert _loopback_url("localhost", 8000) == "http://localhost:8000"
    assert _loopback_url("testserver", 80) is None  # not a socket address: keep the settings' URL


def test_api_base_url() -> None:
    assert api_base_url(Settings(host="0.0.0.0", port=9000)) == "http://127.0.0.1:9000"
    assert api_base_url(Settings(host="127.0.0.1", port=8000)) == "http://127.0.0.1:8000"
    assert api_base_url(Settings(host="::", port=8000)) == "http://[::1]:8000"


def test_ui_and_api_share_one_app(settings: Settings) -> None:
    settings.port = 9  # nothing listens there: the UI's server side cannot reach the API
    app = build_app(settings)
    try:
        _check(app)
    finally:
        app.state.engine.dispose()


def _check(app: Any) -> None:
    with TestClient(app) as client:
        index = client.get("/")
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        assert "<title>qspace</title>" in index.text
        assert client.get("/explore").status_code == 200  # client-side routes serve the same page
        assert client.get("/api/health").json()["status"] == "ok"
        missing = client.get("/api/no/such/route")
        assert missing.status_code == 404 and "no API route" in missing.json()["detail"]
        assert client.get("/assets/qspace.css").status_code == 200
        layout = client.get("/_dash-layout")
        assert layout.status_code == 200 and "page" in layout.text
        # The routing callback answers with the error in words when the API cannot be reached.
        body = {
            "output": "..page.children...nav.children...dataset-select.options...dataset-select.value..."
            "url.search...dataset-store.data...shell-alert.children..",
            "outputs": [
                {"id": i, "property": p}
                for i, p in [("page", "children"), ("nav", "children"), ("dataset-select", "options"),
                             ("dataset-select", "value"), ("url", "search"), ("dataset-store", "data"),
                             ("shell-alert", "children")]
            ],
            "inputs": [
                {"id": "url", "property": "pathname", "value": "/explore"},
                {"id": "url", "property": "search", "value": ""},
                {"id": "dataset-select", "property": "value", "value": None},
                {"id": "api-token-store", "property": "data", "value": None},
            ],
            "state": [{"id": "dataset-store", "property": "data", "value": None}],
            "changedPropIds": ["url.pathname"],
        }  # fmt: skip
        resp = client.post("/_dash-update-component", json=body)
        assert resp.status_code == 200
        assert "cannot reach the qspace API at http://127.0.0.1:9" in json.dumps(resp.json())


def test_token_field_only_when_the_api_needs_one() -> None:
    from frontend.app import create_app

    for required in (False, True):
        app = create_app("http://127.0.0.1:9", auth_required=required)
        layout = app.server.test_client().get("/_dash-layout").get_json()
        token = _find(layout, "api-token")
        assert token is not None
        assert token["props"]["type"] == ("password" if required else "hidden")
        app.server.config["QSPACE_UI_CONTEXT"].api.close()


def _find(node: Any, component_id: str) -> Any:
    if isinstance(node, dict):
        if node.get("props", {}).get("id") == component_id:
            return node
        children = node.get("props", {}).get("children")
        return _find(children, component_id) if children is not None else None
    if isinstance(node, list):
        for child in node:
            found = _find(child, component_id)
            if found is not None:
                return found
    return None
