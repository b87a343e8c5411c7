"""Explore's linked views in a real headless Chromium against a live server: two saved selections drawn on the plane
at once with the server's comparison beside them, and a lasso drawn with the mouse on the data map (a projection
run's map_x, map_y) highlighting on the plane exactly the samples the server puts in that polygon."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import insert, select

from backend.models import Run, Sample, Score
from frontend import ids
from tests.browser.conftest import Live, Traffic
from tests.browser.test_ui import TIMEOUT, assert_small_requests, gallery_ids, ui_count, value_of, wait_label
from tests.seeding import seed_svit

pytestmark = pytest.mark.browser

GRAPH_PLOT = "#explore-graph .js-plotly-plot"
MAP_PLOT = "#explore-map .js-plotly-plot"
MAP_DRAG = "#explore-map g.draglayer g.xy rect.nsewdrag"


@dataclass
class Mapped:
    dataset_id: int
    projection_run: int
    n: int


@pytest.fixture(scope="module")
def mapped(live: Live) -> Mapped:
    """An SVIT-like dataset with its clip and loss runs, plus a finished `projection` run whose map puts each task
    type in its own blob (so a lasso on the map catches some samples, not all)."""
    plane = seed_svit(live.factory, live.root / "mapped", n=240, seed=5, name="svit-map")
    rng = np.random.default_rng(11)
    with live.factory() as session:
        rows = session.execute(
            select(Sample.id, Sample.task_type).where(Sample.dataset_id == plane.dataset_id).order_by(Sample.id)
        ).all()
        run = Run(dataset_id=plane.dataset_id, kind="projection", scorer_key="test-map", status="done",
                  params={"embeddings_run": plane.clip_run, "source": "image", "method": "umap"},
                  total=len(rows), done=len(rows))  # fmt: skip
        session.add(run)
        session.flush()
        types = sorted({t for _, t in rows})
        centres = {t: (4.0 * math.cos(2 * math.pi * k / len(types)), 4.0 * math.sin(2 * math.pi * k / len(types)))
                   for k, t in enumerate(types)}  # fmt: skip
        scores = []
        for sid, task in rows:
            cx, cy = centres[task]
            mx, my = float(cx + rng.normal(0, 0.8)), float(cy + rng.normal(0, 0.8))
            scores.append({"run_id": run.id, "sample_id": sid, "error": None, "metrics": {"map_x": mx, "map_y": my}})
        session.execute(insert(Score), scores)
        session.commit()
        return Mapped(plane.dataset_id, run.id, len(rows))


def open_map_page(page: Any, live: Live, mapped: Mapped) -> None:
    page.goto(f"{live.base_url}/explore?ds={mapped.dataset_id}")
    page.wait_for_selector(".gcard", timeout=TIMEOUT)
    page.wait_for_selector(f"#{ids.EX_MAP_TOGGLE} input", state="visible", timeout=TIMEOUT)


def overlay_ids(page: Any, plot: str, group: str) -> list[list[int]]:
    """The customdata (sample ids) of each overlay trace of `group` laid over a plot."""
    got: list[list[int]] = page.evaluate(
        """([sel, group]) => (document.querySelector(sel).data || [])
            .filter(t => t.meta && t.meta.qspace === group).map(t => (t.customdata || []).map(Number))""",
        [plot, group],
    )
    return got


def members(live: Live, path: str, body: dict[str, Any] | None = None) -> set[int]:
    url = f"{live.base_url}/api{path}"
    r = httpx.post(url, json=body, timeout=30) if body is not None else httpx.get(url, timeout=30)
    r.raise_for_status()
    return {int(i) for i in pa.ipc.open_stream(r.content).read_all().column("id").to_pylist()}


def test_two_saved_selections_drawn_at_once_with_the_servers_overlap(
    page: Any, live: Live, mapped: Mapped, traffic: Traffic
) -> None:
    ds = mapped.dataset_id
    made = []
    for name, region in (("top loss", {"type": "top", "percent": 40, "axes": "x"}),
                         ("top corner", {"type": "top", "percent": 40, "axes": "both"})):  # fmt: skip
        r = httpx.post(f"{live.base_url}/api/datasets/{ds}/selections", json={"name": name, "region": region})
        assert r.status_code == 201, r.text
        made.append(r.json())
    a, b = made
    open_map_page(page, live, mapped)
    for sel in (a, b):
        page.locator(f"#{ids.CMP_PICK}").click()
        page.get_by_text(f"#{sel['id']} {sel['name']} (", exact=False).first.click()
        page.keyboard.press("Escape")
    page.wait_for_selector("#compare-overlap td.cmp-both", timeout=TIMEOUT)
    server = httpx.get(f"{live.base_url}/api/selections/compare", params={"ids": f"{a['id']},{b['id']}"}).json()
    both = server["overlap"][0]["both"]
    assert 0 < both < min(a["count"], b["count"]), "the two selections should overlap in part"
    assert page.locator("#compare-overlap td.cmp-both").get_attribute("data-both") == str(both)
    stats = page.locator("#compare-stats").inner_text()
    assert f"{a['count']:,}" in stats and f"{b['count']:,}" in stats
    # Both drawn on the plane at once, each exactly its stored members (every point is drawn at this size).
    page.wait_for_function(
        "sel => (document.querySelector(sel).data || []).filter(t => t.meta && t.meta.qspace === 'compare').length == 2",
        arg=GRAPH_PLOT,
        timeout=TIMEOUT,
    )
    drawn = overlay_ids(page, GRAPH_PLOT, "compare")
    assert [set(d) for d in drawn] == [members(live, f"/selections/{s['id']}/members") for s in (a, b)]
    assert len(set(drawn[0]) & set(drawn[1])) == both
    # A new colour re-plots the plane from the server's figure: the outlines come back over it.
    page.locator(f"#{ids.EX_COLOR}").click()
    page.get_by_text("Metadata: defect").click()
    page.wait_for_function(
        "sel => document.querySelector(sel)._fullData.some(t => (t.name || '').startsWith('swapped_image'))",
        arg=GRAPH_PLOT,
        timeout=TIMEOUT,
    )
    page.wait_for_timeout(800)
    assert [set(d) for d in overlay_ids(page, GRAPH_PLOT, "compare")] == [set(d) for d in drawn]
    assert_small_requests(traffic)
    assert not traffic.errors


def draw_on_map(page: Any, fx: float, fy: float, r: float, steps: int = 70) -> None:
    box = page.locator(MAP_DRAG).first.bounding_box()
    cx, cy = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
    rx, ry = box["width"] * r, box["height"] * r
    page.mouse.move(cx + rx, cy)
    page.mouse.down()
    for k in range(1, steps + 1):
        t = 2 * math.pi * k / steps
        page.mouse.move(cx + rx * math.cos(t), cy + ry * math.sin(t))
    page.mouse.up()


def test_a_lasso_on_the_map_highlights_the_servers_ids_on_the_plane(
    page: Any, live: Live, mapped: Mapped, traffic: Traffic
) -> None:
    open_map_page(page, live, mapped)
    page.locator(f"#{ids.EX_MAP_TOGGLE} input").check()
    page.wait_for_selector(MAP_DRAG, timeout=TIMEOUT)
    page.wait_for_function(
        "sel => { const g = document.querySelector(sel); return g && g.layout && g.layout.meta && g.layout.meta.axes; }",
        arg=MAP_PLOT,
        timeout=TIMEOUT,
    )
    axes = page.evaluate("sel => document.querySelector(sel).layout.meta.axes", MAP_PLOT)
    assert axes == {"x": f"{mapped.projection_run}:map_x", "y": f"{mapped.projection_run}:map_y"}
    draw_on_map(page, 0.5, 0.5, 0.28)
    wait_label(page, "Map lasso")
    page.wait_for_function(
        "sel => (document.querySelector(sel).data || []).some(t => t.meta && t.meta.qspace === 'link')",
        arg=GRAPH_PLOT,
        timeout=TIMEOUT,
    )
    page.wait_for_timeout(500)
    bodies = [b for b in traffic.bodies_with_input(ids.EX_REGION)
              if any(o.get("id") == ids.SEL_COUNT for o in (b.get("outputs") or []) if isinstance(o, dict))]  # fmt: skip
    region = value_of(bodies[-1], ids.EX_REGION)
    assert region["view"] == "map" and region["axes"] == axes and region["region"]["type"] == "polygon"
    server = members(
        live, f"/datasets/{mapped.dataset_id}/selections/members",
        {"x": axes["x"], "y": axes["y"], "region": region["region"]},
    )  # fmt: skip
    assert 0 < len(server) < mapped.n, "the lasso should catch some samples, not all: move it"
    (on_plane,) = overlay_ids(page, GRAPH_PLOT, "link")
    (on_map,) = overlay_ids(page, MAP_PLOT, "link")
    assert set(on_plane) == server == set(on_map) and len(on_plane) == len(server)
    # Counts and the gallery follow the map's selection.
    assert ui_count(page) == len(server)
    gallery = gallery_ids(page)
    assert gallery and set(gallery) <= server
    # A preset on the plane replaces it: the map's outline goes, the highlight follows the new selection.
    page.click("button:has-text('DIQ')")
    wait_label(page, "DIQ")
    page.wait_for_function(
        "sel => !(document.querySelector(sel).layout.shapes || []).length", arg=MAP_PLOT, timeout=TIMEOUT
    )
    page.wait_for_function(
        """([sel, n]) => { const t = (document.querySelector(sel).data || []).find(t => t.meta && t.meta.qspace === 'link');
            return t && t.customdata.length === n; }""",
        arg=[MAP_PLOT, ui_count(page)],
        timeout=TIMEOUT,
    )
    assert_small_requests(traffic)
    assert not traffic.errors
