"""The UI's API client: typed calls, errors in words, the Arrow points payload, auth headers."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from frontend.api_client import ApiClient, ApiError
from frontend.api_shapes import decode_points


def client(handler: Any, token: str | None = None) -> ApiClient:
    return ApiClient("http://api.test", token=token, transport=httpx.MockTransport(handler))


def arrow(color: Any = None, categories: list[str] | None = None) -> bytes:
    cols = {
        "id": pa.array([5, 7, 9], type=pa.int32()),
        "x": pa.array([1.0, 2.0, 3.0], type=pa.float32()),
        "y": pa.array([0.1, 0.2, np.nan], type=pa.float32()),
        "task_type": pa.array([0, 1, 0], type=pa.int8()),
    }
    meta = {"task_types": json.dumps(["conv", "detail"])}
    if color is not None:
        cols["color"] = pa.array(color)
    if categories is not None:
        meta["categories"] = json.dumps(categories)
    table = pa.table(cols).replace_schema_metadata(meta)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(table)
    return sink.getvalue()


def test_decode_points() -> None:
    p = decode_points(arrow())
    assert p.ids.tolist() == [5, 7, 9] and p.ids.dtype == np.int32
    assert p.x.dtype == np.float32 and np.isnan(p.y[2])
    assert p.task_types == ["conv", "detail"] and p.task_type.tolist() == [0, 1, 0]
    assert p.color is None and len(p) == 3 and p.nbytes == 3 * 13
    cat = decode_points(arrow(pa.array([0, 1, 1], type=pa.int16()), ["none", "swapped"]))
    assert cat.color_categories == ["none", "swapped"] and cat.color is not None and cat.color.dtype == np.int16
    num = decode_points(arrow(pa.array([0.5, np.nan, 2.0], type=pa.float32())))
    assert num.color_categories is None and num.color is not None and num.color.dtype == np.float32
    with pytest.raises(ApiError, match="not an Arrow stream"):
        decode_points(b"garbage")


def test_space_request_and_params() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, content=arrow(), headers={"content-type": "application/vnd.apache.arrow.stream"})

    pts = client(handler).space(3, "2:loss_sum", "1:similarity", color="meta:defect")
    assert len(pts) == 3
    q = dict(seen[0].url.params)
    assert seen[0].url.path == "/api/datasets/3/space"
    assert q == {"x": "2:loss_sum", "y": "1:similarity", "format": "arrow", "color": "meta:defect"}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, {"detail": "dataset 9 not found"}, "dataset 9 not found"),
        (422, {"detail": [{"loc": ["body", "region", "points"], "msg": "too few"}]}, "region.points: too few"),
        (500, {"detail": "boom"}, "server error (500) on GET /datasets/9: boom"),
        (502, "<html>bad gateway</html>", "HTTP 502"),
        (401, {"detail": "this server needs a token"}, "enter the API token"),
    ],
)
def test_errors_become_sentences(status: int, body: Any, expected: str) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    with pytest.raises(ApiError) as info:
        client(handler).dataset(9)
    assert expected in str(info.value)
    assert info.value.status == status


def test_unreachable_api_is_explained() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(ApiError, match=r"cannot reach the qspace API at http://api\.test"):
        client(handler).datasets()

    def slow(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    with pytest.raises(ApiError, match="did not answer"):
        client(slow).datasets()


def test_token_on_every_call_and_error_body_kept() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if req.method == "POST":
            return httpx.Response(422, json={"detail": "bad file", "problems": ["a.json: record 3"]})
        return httpx.Response(200, json=[])

    api = client(handler, token="server-side")
    api.datasets()
    with pytest.raises(ApiError) as info:
        api.create_dataset({"name": "x", "paths": ["a.json"]}, token="typed-by-user")
    assert seen[0].headers["authorization"] == "Bearer server-side"  # reads too: a configured token guards them
    assert seen[1].headers["authorization"] == "Bearer typed-by-user"
    assert info.value.body["problems"] == ["a.json: record 3"]


def test_preview_body_metadata_fields_and_paths() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if req.url.path.endswith("/metadata_fields"):
            return httpx.Response(200, json={"defect": {"none": 80, "swapped": 20}, "kind": ["a", "b"]})
        return httpx.Response(200, json={"count": 3, "by_task_type": {}, "items": [], "total": 3})

    api = client(handler)
    api.preview(1, {"x": "loss", "y": "clip", "region": {"type": "all"}}, limit=12)
    api.preview(1, {"x": "loss", "y": "clip", "region": {"type": "all"}}, limit=12, offset=24)
    assert json.loads(seen[0].content) == {"x": "loss", "y": "clip", "region": {"type": "all"}, "limit": 12}
    assert json.loads(seen[1].content)["offset"] == 24
    assert api.metadata_fields(1) == {"defect": ["none", "swapped"], "kind": ["a", "b"]}
    assert ApiClient.image_path(4, 1, 256) == "/api/samples/4/image?index=1&max_side=256"
    assert ApiClient.image_path(4, 0, None) == "/api/samples/4/image?index=0"
    assert ApiClient.selection_export_path(2, "llava") == "/api/selections/2/export?format=llava"
    assert ApiClient.curriculum_export_path(8) == "/api/curricula/8/export"


def test_rebase_points_the_client_elsewhere() -> None:
    hosts: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        hosts.append(f"{req.url.host}:{req.url.port}")
        return httpx.Response(200, json=[])

    api = client(handler)
    api.datasets()
    api.rebase("http://127.0.0.1:8123/")
    api.datasets()
    assert hosts == ["api.test:None", "127.0.0.1:8123"] and api.base_url == "http://127.0.0.1:8123"


def test_the_browser_sessions_token_goes_on_every_call() -> None:
    import httpx

    from frontend.api_client import REQUEST_TOKEN, ApiClient
    from frontend.app import create_app

    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json=[])

    api = ApiClient("http://api", transport=httpx.MockTransport(handler))
    api.datasets()
    reset = REQUEST_TOKEN.set("qs_abc")
    try:
        api.datasets()  # a read carries it too
    finally:
        REQUEST_TOKEN.reset(reset)
    assert seen == [None, "Bearer qs_abc"]
    # The Dash server takes it from each request's X-Qspace-Token header (assets/token.js sets it).
    app = create_app(api=api)
    got: list[str | None] = []
    app.server.add_url_rule("/probe", "probe", lambda: got.append(REQUEST_TOKEN.get()) or "ok")
    client = app.server.test_client()
    client.get("/probe", headers={"X-Qspace-Token": "qs_xyz"})
    client.get("/probe")
    assert got == ["qs_xyz", None]


def ids_stream(ids: list[int]) -> bytes:
    table = pa.table({"id": pa.array(ids, type=pa.int32())})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def test_members_and_compare_calls() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if req.url.path.endswith("/members"):
            return httpx.Response(200, content=ids_stream([3, 5, 8]))
        return httpx.Response(200, json={"dataset_id": 1, "selections": [], "overlap": [], "axes": []})

    api = client(handler, token="t")
    got = api.selection_members(4)
    assert got.tolist() == [3, 5, 8] and got.dtype == np.int32
    assert seen[-1].method == "GET" and seen[-1].url.path == "/api/selections/4/members"
    assert seen[-1].url.params["format"] == "arrow"
    body = {"x": "4:map_x", "y": "4:map_y", "region": {"type": "box", "x": [0, 1], "y": [0, 1]}}
    assert api.recipe_members(2, body).tolist() == [3, 5, 8]
    assert seen[-1].method == "POST" and seen[-1].url.path == "/api/datasets/2/selections/members"
    assert json.loads(seen[-1].content) == body and seen[-1].headers["Authorization"] == "Bearer t"
    assert api.compare_selections([4, 7, 9])["dataset_id"] == 1
    assert seen[-1].url.path == "/api/selections/compare" and seen[-1].url.params["ids"] == "4,7,9"


def test_members_that_are_not_arrow_are_an_api_error() -> None:
    api = client(lambda req: httpx.Response(200, content=b"nope"))
    with pytest.raises(ApiError, match="not an Arrow stream"):
        api.selection_members(1)
    no_id = io.BytesIO()
    table = pa.table({"x": pa.array([1], type=pa.int32())})
    with pa.ipc.new_stream(no_id, table.schema) as w:
        w.write_table(table)
    api = client(lambda req: httpx.Response(200, content=no_id.getvalue()))
    with pytest.raises(ApiError, match="lack the column 'id'"):
        api.selection_members(1)
