"""The semantic view's UI pieces (frontend.pages.explore.neighbours and .search): which run embeds a dataset, the
neighbour and hit cards, the failed search in words, and the API client's two calls on the wire."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from frontend import ids
from frontend.api_client import ApiClient
from frontend.api_shapes import ApiError, Neighbour, Run
from frontend.pages.explore.neighbours import embedding_run, hit_card, neighbours_block
from frontend.pages.explore.search import error_text, info_line, results_block


def _run(id_: int, kind: str = "clip", status: str = "done", keep: Any = True) -> Run:
    params: dict[str, Any] = {"model": "ViT-B-32"}
    if keep is not None:
        params["keep_embeddings"] = keep
    return {"id": id_, "kind": kind, "status": status, "params": params}


def test_the_newest_finished_clip_run_that_kept_embeddings() -> None:
    runs = [_run(3), _run(9), _run(12, status="running"), _run(14, keep=False), _run(15, kind="mllm_loss"),
            _run(16, keep=None), _run(5)]  # fmt: skip
    chosen = embedding_run(runs)
    assert chosen is not None and chosen["id"] == 9
    assert embedding_run([_run(1, keep=False), _run(2, status="failed")]) is None
    assert embedding_run([]) is None


def _text(node: Any) -> str:
    if isinstance(node, str | int | float):
        return str(node)
    if isinstance(node, list | tuple):
        return " ".join(_text(n) for n in node)
    children = getattr(node, "children", None)
    return "" if children is None else _text(children)


def _cards(node: Any, card_type: str) -> list[Any]:
    found = []
    if isinstance(node, list | tuple):
        for n in node:
            found += _cards(n, card_type)
        return found
    if isinstance(getattr(node, "id", None), dict) and node.id.get("type") == card_type:
        found.append(node)
    children = getattr(node, "children", None)
    return found + (_cards(children, card_type) if children is not None else [])


ITEMS: list[Neighbour] = [{"id": 41, "score": 0.98765}, {"id": 7, "score": 0.5}, {"id": 300, "score": -0.25}]


def test_neighbour_cards_in_the_servers_order_with_thumbnails_and_scores() -> None:
    block = neighbours_block(ITEMS, _run(9))
    cards = _cards(block, ids.NEIGHBOUR_CARD)
    assert [c.id["id"] for c in cards] == [41, 7, 300]  # nearest first, as the API ranked them
    assert [c.to_plotly_json()["props"]["data-sample-id"] for c in cards] == ["41", "7", "300"]
    first = cards[0]
    assert first.children[0].src == ApiClient.image_path(41, 0, 160)
    assert "0.988" in _text(first) and "#41" in _text(first)
    assert "clip run #9" in _text(block) and "ViT-B-32" in _text(block)
    assert block.to_plotly_json()["props"]["data-run"] == "9"
    assert [c.id for c in results_block(ITEMS)] == [{"type": ids.SEARCH_CARD, "id": i["id"]} for i in ITEMS]
    props = hit_card({"id": 5, "score": 1}, "x").to_plotly_json()["props"]
    assert props["n_clicks"] == 0 and props["id"] == {"type": "x", "id": 5}


def test_a_failed_search_in_words() -> None:
    no_worker = error_text(ApiError("text search: no worker answered within 20 s", status=504))
    assert "No worker answered" in no_worker and "'default' queue" in no_worker and "qspace worker" in no_worker
    assert "refused" in error_text(ApiError("text: the query is empty", status=422))
    assert "text: the query is empty" in error_text(ApiError("text: the query is empty", status=422))
    assert "unreachable" in error_text(ApiError("the task queue at redis://x is unreachable", status=503))
    assert error_text(ApiError("cannot reach the qspace API")) == "cannot reach the qspace API"
    line = info_line("a red bus", ITEMS, 9)
    assert "3 samples nearest to “a red bus”" in _text(line) and "clip run #9" in _text(line)


@pytest.fixture
def recorded() -> tuple[ApiClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/neighbours"):
            return httpx.Response(200, json=ITEMS)
        if request.url.path.endswith("/search"):
            body = json.loads(request.content)
            if not body["text"].strip():
                return httpx.Response(422, json={"detail": "text: the query is empty"})
            if body["text"] == "nobody home":
                return httpx.Response(504, json={"detail": "text search: no worker answered within 20 s"})
            return httpx.Response(200, json={"items": ITEMS[:2]})
        return httpx.Response(404, json={"detail": "no such route"})

    return ApiClient("http://api.invalid", transport=httpx.MockTransport(answer)), seen


def test_client_neighbours_and_search_on_the_wire(recorded: tuple[ApiClient, list[httpx.Request]]) -> None:
    client, seen = recorded
    assert client.neighbours(17, 9) == ITEMS
    req = seen[-1]
    assert req.method == "GET" and req.url.path == "/api/samples/17/neighbours"
    assert dict(req.url.params) == {"run": "9", "k": "12"}
    assert client.search(4, 9, "a red bus", k=5, token="tok") == {"items": ITEMS[:2]}
    req = seen[-1]
    assert req.method == "POST" and req.url.path == "/api/datasets/4/search"
    assert json.loads(req.content) == {"run": 9, "text": "a red bus", "k": 5}
    assert req.headers["Authorization"] == "Bearer tok"
    with pytest.raises(ApiError) as no_worker:
        client.search(4, 9, "nobody home")
    assert no_worker.value.status == 504 and "No worker answered" in error_text(no_worker.value)
    with pytest.raises(ApiError) as empty:
        client.search(4, 9, "  ")
    assert empty.value.status == 422 and empty.value.message == "text: the query is empty"
    client.close()
