"""A plane bigger than the UI's point budget, in a real headless Chromium: the Dash server never asks the API for
more points than the budget (nor for every point), a zoom asks for the view's grid and sample again, and a lasso's
count is the server's over every point, not the sample's."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from backend.db import make_engine, make_session_factory
from backend.regions import points_in_polygon
from backend.settings import Settings
from frontend import ids
from frontend.api_shapes import decode_points
from tests.browser.conftest import Live, Traffic, free_port, serving_in_thread
from tests.browser.test_ui import api_preview, draw_lasso, last_region_request, ui_count, value_of, wait_label
from tests.seeding import seed_big

pytestmark = pytest.mark.browser

N = 20_000
BUDGET = 2_000
TIMEOUT = 30_000  # ms


@dataclass
class Fetch:
    """One request the UI's server made to the API: its route and query, and for /space the points it got."""

    path: str
    params: dict[str, Any]
    points: int | None = None
    total_in_view: int | None = None
    x: np.ndarray[Any, Any] | None = None
    y: np.ndarray[Any, Any] | None = None


@dataclass
class ApiLog:
    fetches: list[Fetch] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, route: str) -> list[Fetch]:
        with self.lock:
            return [f for f in self.fetches if f.path.endswith(route)]

    def wait_for(self, route: str, pred: Callable[[Fetch], bool], timeout: float = TIMEOUT / 1000) -> Fetch:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [f for f in self.of(route) if pred(f)]
            if hits:
                return hits[-1]
            time.sleep(0.1)
        pytest.fail(f"no {route} request matched in {timeout:.0f} s; seen {[f.params for f in self.of(route)]}")


def _count_requests(api: Any, log: ApiLog) -> None:
    """Wrap the UI's API client: every /space answer is decoded and its points counted, every /density noted."""
    original = api._request

    def counting(method: str, path: str, **kw: Any) -> httpx.Response:
        resp = original(method, path, **kw)
        params = {k: v for k, v in (kw.get("params") or {}).items() if v is not None}  # as the client sends them
        if path.endswith("/space"):
            pts = decode_points(resp.content)
            fetch = Fetch(path, params, len(pts), int(resp.headers["X-Total-In-View"]), pts.x, pts.y)
        else:
            fetch = Fetch(path, params)
        with log.lock:
            log.fetches.append(fetch)
        return resp

    api._request = counting


@dataclass
class BigLive:
    live: Live
    log: ApiLog


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigLive]:
    root = tmp_path_factory.mktemp("budget")
    port = free_port()
    settings = Settings(
        data_dir=root / "data",
        database_url=f"sqlite:///{root / 'qspace.db'}",
        port=port,
        image_roots=[root],
        data_roots=[root],
        ui_point_budget=BUDGET,
    )
    engine = make_engine(settings.sqlalchemy_url)
    log = ApiLog()

    def count_the_uis_requests(app: Any) -> None:
        _count_requests(app.state.dash_app.server.config["QSPACE_UI_CONTEXT"].api, log)

    with serving_in_thread(settings, "uvicorn-budget-tests", count_the_uis_requests):
        seeded = seed_big(engine, root, n=N)
        live = Live(f"http://127.0.0.1:{port}", settings, make_session_factory(engine), seeded, -1, root)
        try:
            yield BigLive(live, log)
        finally:
            engine.dispose()


def _graph(page: Any, expr: str) -> Any:
    """Evaluate `expr` with `gd` the explore plot's Plotly div."""
    return page.evaluate(f"() => {{ const gd = document.querySelector('#{ids.EX_GRAPH} .js-plotly-plot'); {expr} }}")


def _markers_in_browser(page: Any) -> int:
    # _fullData: the decoded traces (Dash sends numpy arrays as typed-array specs, not JS arrays).
    js = "return gd._fullData.filter(t => t.type === 'scattergl').reduce((n, t) => n + (t._length ?? t.x.length), 0);"
    return int(_graph(page, js))


def _quantiles(v: np.ndarray[Any, Any], lo: float, hi: float) -> tuple[float, float]:
    a, b = np.quantile(v[np.isfinite(v)], [lo, hi])
    return float(a), float(b)


def _wait_caption(page: Any, text: str) -> None:
    js = f"t => (document.getElementById('{ids.EX_PLOT_INFO}') || {{}}).textContent?.includes(t)"
    page.wait_for_function(js, arg=text, timeout=TIMEOUT)


def _zoom(page: Any, log: ApiLog, zx: tuple[float, float], zy: tuple[float, float]) -> Fetch:
    """Zoom the plot to (zx, zy) as Plotly does on a box zoom; the UI's ranged /space request for it."""
    want = f"{zx[0]!r},{zx[1]!r}"
    _graph(page, f"Plotly.relayout(gd, {{'xaxis.range': {list(zx)}, 'yaxis.range': {list(zy)}}}); return 1;")
    fetch = log.wait_for("/space", lambda f: f.params.get("x_range") == want and "y_range" in f.params)
    assert fetch.x is not None and fetch.y is not None
    inside = (fetch.x >= zx[0]) & (fetch.x <= zx[1]) & (fetch.y >= zy[0]) & (fetch.y <= zy[1])
    assert inside.all(), "the view's sample holds points outside the view"
    return fetch


def _assert_within_budget(log: ApiLog) -> None:
    spaces = log.of("/space")
    assert spaces, "the UI asked for no points"
    for f in spaces:
        assert int(f.params.get("max_points") or 0) == BUDGET, f"a /space request without the budget: {f.params}"
        assert f.points is not None and f.points <= BUDGET, f"{f.points} points fetched, budget {BUDGET}"


def test_a_big_plane_stays_under_the_budget_zooms_and_counts_on_the_server(
    page: Any, big: BigLive, traffic: Traffic
) -> None:
    live, log = big.live, big.log
    page.goto(f"{live.base_url}/explore?ds={live.seeded.dataset_id}")
    page.wait_for_selector(".gcard", timeout=TIMEOUT)
    page.wait_for_selector("g.draglayer g.xy rect.nsewdrag", timeout=TIMEOUT)
    page.wait_for_function(
        f"() => (document.getElementById('{ids.EX_PLOT_INFO}') || {{}}).textContent?.includes('sampled markers')",
        timeout=TIMEOUT,
    )

    # The whole plane: N points on the server, a sample of at most the budget sent, the density layer from the
    # server's grid (over every point: its cells sum to N).
    whole = log.wait_for("/space", lambda f: "x_range" not in f.params)
    assert whole.total_in_view == N and whole.points is not None and 0 < whole.points <= BUDGET
    grid = log.wait_for("/density", lambda f: "x_range" not in f.params and "task_type" not in f.params)
    assert int(grid.params["bins"]) >= 64
    assert 0 < _markers_in_browser(page) <= BUDGET
    assert _graph(page, "return gd.data.some(t => t.type === 'heatmap');")
    assert f"{N:,} points" in page.locator(f"#{ids.EX_PLOT_INFO}").inner_text()

    # A lasso: the count is the server's over all N points (the sample holds far fewer of them).
    draw_lasso(page, fx=0.45, fy=0.5, rx=0.3, ry=0.35)
    wait_label(page, "Lasso")
    page.wait_for_timeout(300)
    body = last_region_request(traffic)
    region = value_of(body, ids.EX_REGION)["region"]
    x, y = value_of(body, ids.EX_X), value_of(body, ids.EX_Y)
    server = api_preview(live, {"x": x, "y": y, "region": region, "limit": 12})
    page.wait_for_function(
        "n => +(document.getElementById('sel-count-value') || {dataset: {}}).dataset.count === n",
        arg=server["count"],
        timeout=TIMEOUT,
    )
    assert ui_count(page) == server["count"]
    full = httpx.get(
        f"{live.base_url}/api/datasets/{live.seeded.dataset_id}/space", params={"x": x, "y": y}, timeout=60
    )
    everything = decode_points(full.content)
    assert len(everything) == N
    poly = np.asarray(region["points"], dtype=np.float64)
    assert ui_count(page) == int(points_in_polygon(everything.x, everything.y, poly).sum())
    assert whole.x is not None and whole.y is not None
    in_sample = int(points_in_polygon(whole.x, whole.y, poly).sum())
    assert ui_count(page) > in_sample, "the count looks like the sample's, not the server's over every point"

    # A zoom into the dense core (a relayout, as the mouse wheel or a box zoom gives): the view holds more points
    # than the budget, so its grid and a sample of it are asked for again.
    zx = _quantiles(everything.x, 0.1, 0.6)
    zy = _quantiles(everything.y, 0.1, 0.9)
    ranged = _zoom(page, log, zx, zy)
    assert ranged.total_in_view is not None and BUDGET < ranged.total_in_view < N
    assert ranged.points == BUDGET
    log.wait_for("/density", lambda f: f.params.get("x_range") == ranged.params["x_range"])
    _wait_caption(page, f"{ranged.total_in_view:,} points")
    caption = page.locator(f"#{ids.EX_PLOT_INFO}").inner_text()
    assert "in this view" in caption and "sampled markers" in caption
    assert 0 < _markers_in_browser(page) <= BUDGET
    assert _graph(page, "return gd.data.some(t => t.type === 'heatmap');")
    # The zoom keeps the selection: the count is still the server's.
    assert ui_count(page) == server["count"]

    # Contours on, while zoomed: the same view is redrawn (its sample again, a server grid per task type).
    n_space = len(log.of("/space"))
    page.locator(f"#{ids.EX_CONTOURS} input").first.check()
    log.wait_for("/density", lambda f: "task_type" in f.params and f.params.get("x_range") == ranged.params["x_range"])
    assert len(log.of("/space")) > n_space and log.of("/space")[-1].params.get("x_range") == ranged.params["x_range"]
    page.wait_for_function(
        f"() => document.querySelector('#{ids.EX_GRAPH} .js-plotly-plot')?._fullData.some(t => t.type === 'contour')",
        timeout=TIMEOUT,
    )
    assert "in this view" in page.locator(f"#{ids.EX_PLOT_INFO}").inner_text()

    # A zoom into a corner that holds fewer points than the budget: every one of them, no grid needed.
    n_density = len(log.of("/density"))
    small = _zoom(page, log, _quantiles(everything.x, 0.5, 0.6), _quantiles(everything.y, 0.5, 0.6))
    assert small.points is not None and small.total_in_view is not None
    assert 0 < small.points == small.total_in_view <= BUDGET
    _wait_caption(page, f"{small.total_in_view:,} points")
    assert "sampled markers" not in page.locator(f"#{ids.EX_PLOT_INFO}").inner_text()
    assert len(log.of("/density")) == n_density
    assert _markers_in_browser(page) == small.total_in_view

    _assert_within_budget(log)
    assert not traffic.errors
