"""The semantic view in a real headless Chromium against the live server: a sample's detail view lists exactly the
neighbours the API ranks (clicking one opens its detail), and a typed query shows the API's hits as cards and on
the plane, with a clear sentence when no worker answers. The dataset's clip run kept synthetic embeddings
(tests/semantic_helpers.py). The query's text vector comes from `TaskQueue.embed_text`, patched here in the
server's process to the kept image embedding of a known sample (a worker's CLIP text tower cannot embed into these
16-dimensional synthetic vectors); everything after it, the API's ranking and the UI, is the real thing."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from backend.queue import TaskQueue
from backend.queue.embeddings import embeddings_dir, read_embeddings
from frontend import ids
from tests.browser.conftest import Live, Traffic
from tests.browser.test_ui import TIMEOUT, gallery_ids
from tests.semantic_helpers import Seeded, seed_embedded

pytestmark = pytest.mark.browser

GRAPH_PLOT = "#explore-graph .js-plotly-plot"


@pytest.fixture(scope="module")
def seeded(live: Live) -> Seeded:
    return seed_embedded(live.factory, live.settings, live.root / "semantic", n=60)


def open_page(page: Any, live: Live, ds: int) -> None:
    page.goto(f"{live.base_url}/explore?ds={ds}")
    page.wait_for_selector(".gcard", timeout=TIMEOUT)


def shown_ids(page: Any, selector: str) -> list[int]:
    return [int(el.get_attribute("data-sample-id")) for el in page.locator(selector).all()]


def server_neighbours(live: Live, seeded: Seeded, sid: int) -> list[int]:
    r = httpx.get(f"{live.base_url}/api/samples/{sid}/neighbours", params={"run": seeded.clip_run, "k": 12})
    assert r.status_code == 200, r.text
    return [int(i["id"]) for i in r.json()]


def wait_detail(page: Any, sid: int) -> None:
    page.wait_for_function(
        "sid => { const t = document.querySelector('#detail-body .detail-title');"
        " const n = document.querySelector('.detail-neighbours .hit-card');"
        " return t && t.textContent === 'Sample #' + sid && n; }",
        arg=sid,
        timeout=TIMEOUT,
    )


def test_detail_lists_the_servers_neighbours_and_opens_them(
    page: Any, live: Live, seeded: Seeded, traffic: Traffic
) -> None:
    open_page(page, live, seeded.dataset_id)
    sid = next(i for i in gallery_ids(page) if i in seeded.embedded)
    page.locator(".gcard").nth(gallery_ids(page).index(sid)).click()
    wait_detail(page, sid)
    want = server_neighbours(live, seeded, sid)
    assert len(want) == 12 and sid not in want
    assert shown_ids(page, ".detail-neighbours .hit-card") == want
    assert page.locator(".detail-neighbours").get_attribute("data-run") == str(seeded.clip_run)
    thumb = page.locator(".detail-neighbours .hit-card img").first
    assert thumb.get_attribute("src").startswith(f"/api/samples/{want[0]}/image")
    # A neighbour opens its own detail view, with its own neighbours.
    page.locator(".detail-neighbours .hit-card").nth(2).click()
    wait_detail(page, want[2])
    page.wait_for_function(
        "w => JSON.stringify([...document.querySelectorAll('.detail-neighbours .hit-card')]"
        ".map(e => Number(e.dataset.sampleId))) === w",
        arg=str(server_neighbours(live, seeded, want[2])).replace(" ", ""),
        timeout=TIMEOUT,
    )
    assert not traffic.errors


def test_no_neighbours_and_no_search_without_kept_embeddings(page: Any, live: Live, traffic: Traffic) -> None:
    """The shared SVIT dataset's clip run kept no embeddings: the detail view shows no neighbours, no error."""
    open_page(page, live, live.seeded.dataset_id)
    assert not page.locator(f"#{ids.SEARCH_PANEL}").is_visible()
    sid = gallery_ids(page)[0]
    page.locator(".gcard").first.click()
    page.wait_for_function(
        "sid => { const t = document.querySelector('#detail-body .detail-title');"
        " return t && t.textContent === 'Sample #' + sid; }",
        arg=sid,
        timeout=TIMEOUT,
    )
    page.wait_for_timeout(800)  # the neighbours' callback has answered by now
    assert page.locator(f"#{ids.DETAIL_NEIGHBOURS}").inner_text().strip() == ""
    assert page.locator(".alert").count() == 0
    assert not traffic.errors


def test_text_search_shows_the_servers_hits_and_highlights_them(
    page: Any, live: Live, seeded: Seeded, traffic: Traffic, monkeypatch: pytest.MonkeyPatch
) -> None:
    emb = read_embeddings(embeddings_dir(live.settings.data_dir, seeded.clip_run, "c" * 64))
    anchor = seeded.embedded[4]
    vector = [float(v) for v in np.asarray(emb.matrix("image", np.asarray([emb.row_of(anchor)]))[0])]
    asked: list[tuple[int, str]] = []

    def embed_text(self: TaskQueue, run_id: int, text: str, timeout_s: float) -> list[float]:
        asked.append((run_id, text))
        if text == "nobody home":
            raise TimeoutError("no worker answered within 20 s: is a worker consuming the 'default' queue?")
        return vector

    monkeypatch.setattr(TaskQueue, "embed_text", embed_text)
    open_page(page, live, seeded.dataset_id)
    page.wait_for_selector(f"#{ids.SEARCH_TEXT}", state="visible", timeout=TIMEOUT)
    # Empty text: said on the page, no request to the API.
    page.click(f"#{ids.SEARCH_GO}")
    page.wait_for_selector(f"#{ids.SEARCH_INFO} .alert", timeout=TIMEOUT)
    assert "Type a few words" in page.locator(f"#{ids.SEARCH_INFO}").inner_text() and asked == []
    # A query, sent with Enter.
    page.fill(f"#{ids.SEARCH_TEXT}", "a blob of apples")
    page.press(f"#{ids.SEARCH_TEXT}", "Enter")
    page.wait_for_selector(f"#{ids.SEARCH_RESULTS} .hit-card", timeout=TIMEOUT)
    r = httpx.post(f"{live.base_url}/api/datasets/{seeded.dataset_id}/search",
                   json={"run": seeded.clip_run, "text": "a blob of apples", "k": 48}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    want = [int(i["id"]) for i in r.json()["items"]]
    assert asked[0] == (seeded.clip_run, "a blob of apples")
    assert shown_ids(page, f"#{ids.SEARCH_RESULTS} .hit-card") == want
    assert want[0] == anchor and {seeded.truth[i] for i in want[:15]} == {seeded.truth[anchor]}
    count = page.locator(f"#{ids.SEARCH_INFO} .search-count")
    assert count.get_attribute("data-count") == str(len(want))
    # Highlighted on the plane: exactly the hits (each has both axes: the failed clip row has no embedding).
    page.wait_for_function(
        "sel => (document.querySelector(sel).data || []).some(t => t.meta && t.meta.qspace === 'search')",
        arg=GRAPH_PLOT,
        timeout=TIMEOUT,
    )
    drawn = page.evaluate(
        """sel => (document.querySelector(sel).data || []).filter(t => t.meta && t.meta.qspace === 'search')
            .map(t => (t.customdata || []).map(Number))""",
        GRAPH_PLOT,
    )
    assert len(drawn) == 1 and sorted(drawn[0]) == sorted(want)
    # A hit opens its detail view.
    page.locator(f"#{ids.SEARCH_RESULTS} .hit-card").nth(1).click()
    wait_detail(page, want[1])
    page.keyboard.press("Escape")
    # No worker: a sentence that says what to do; the old hits and their highlight go.
    page.fill(f"#{ids.SEARCH_TEXT}", "nobody home")
    page.click(f"#{ids.SEARCH_GO}")
    page.wait_for_function(
        "() => (document.querySelector('#search-info') || {}).textContent.includes('No worker answered')",
        timeout=TIMEOUT,
    )
    assert page.locator(f"#{ids.SEARCH_RESULTS} .hit-card").count() == 0
    page.wait_for_function(
        "sel => !(document.querySelector(sel).data || []).some(t => t.meta && t.meta.qspace === 'search')",
        arg=GRAPH_PLOT,
        timeout=TIMEOUT,
    )
    assert not traffic.errors
