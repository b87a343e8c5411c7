"""The explorer in a real headless Chromium against a live server: lasso, gallery, save, random control,
presets, exports, the curriculum builder and its zip, a run's progress, errors in words, escaped text."""

from __future__ import annotations

import io
import json
import math
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from frontend import ids
from tests.browser.conftest import HOSTILE, Live, Traffic

pytestmark = pytest.mark.browser

MAX_BODY = 100 * 1024
TIMEOUT = 20_000  # ms


def open_explore(page: Any, live: Live, ds: int | None = None) -> None:
    page.goto(f"{live.base_url}/explore?ds={ds or live.seeded.dataset_id}")
    page.wait_for_selector(".gcard", timeout=TIMEOUT)
    page.wait_for_selector("g.draglayer g.xy rect.nsewdrag", timeout=TIMEOUT)


def draw_lasso(
    page: Any, fx: float = 0.55, fy: float = 0.45, rx: float = 0.25, ry: float = 0.3, steps: int = 90
) -> None:
    """Drag a wobbly closed loop with the mouse over the main plot (fractions of its box)."""
    box = page.locator("g.draglayer g.xy rect.nsewdrag").first.bounding_box()
    cx, cy = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
    ax, ay = box["width"] * rx, box["height"] * ry
    page.mouse.move(cx + ax * 1.2, cy)
    page.mouse.down()
    for k in range(1, steps + 1):
        t = 2 * math.pi * k / steps
        r = 1 + 0.2 * math.cos(3 * t)
        page.mouse.move(cx + ax * r * math.cos(t), cy + ay * r * math.sin(t))
    page.mouse.up()


def wait_label(page: Any, prefix: str) -> None:
    page.wait_for_function(
        "p => { const e = document.querySelector('.sel-label'); return e && e.textContent.startsWith(p); }",
        arg=prefix,
        timeout=TIMEOUT,
    )


def ui_count(page: Any) -> int:
    return int(page.locator("#sel-count-value").get_attribute("data-count"))


def gallery_ids(page: Any) -> list[int]:
    return [json.loads(el.get_attribute("id"))["id"] for el in page.locator(".gcard").all()]


def last_region_request(traffic: Traffic) -> dict[str, Any]:
    """The latest selection callback request: what the browser sent for the current region."""
    bodies = [
        b
        for b in traffic.bodies_with_input(ids.EX_REGION)
        if any(o.get("id") == ids.SEL_COUNT for o in (b.get("outputs") or []) if isinstance(o, dict))
    ]
    assert bodies, "no selection request was made"
    return bodies[-1]


def value_of(body: dict[str, Any], component_id: str) -> Any:
    for item in [*body.get("inputs", []), *body.get("state", [])]:
        if isinstance(item, dict) and item.get("id") == component_id:
            return item.get("value")
    raise KeyError(component_id)


def api_preview(live: Live, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{live.base_url}/api/datasets/{live.seeded.dataset_id}/selections/preview", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def assert_small_requests(traffic: Traffic) -> None:
    assert traffic.requests, "no callback requests seen"
    biggest = max(n for n, _ in traffic.requests)
    assert biggest <= MAX_BODY, f"a callback request body is {biggest} bytes"
    for _, body in traffic.requests:
        text = json.dumps(body)
        assert "selectedData" not in text and "lassoPoints" not in text, "the selection left the browser"


def test_lasso_count_and_gallery_match_the_server(page: Any, live: Live, traffic: Traffic) -> None:
    open_explore(page, live)
    draw_lasso(page)
    wait_label(page, "Lasso")
    page.wait_for_timeout(300)
    body = last_region_request(traffic)
    region = value_of(body, ids.EX_REGION)["region"]
    assert region["type"] == "polygon"
    assert 3 <= len(region["points"]) <= 64
    x, y = value_of(body, ids.EX_X), value_of(body, ids.EX_Y)
    server = api_preview(live, {"x": x, "y": y, "region": region, "limit": 12})
    assert server["count"] > 0, "the lasso caught nothing: move it"
    assert ui_count(page) == server["count"]
    assert gallery_ids(page) == [item["id"] for item in server["items"]]
    assert "of 400 samples" in page.locator(f"#{ids.SEL_COUNT}").inner_text()
    # Shares per task type are the server's.
    shares = page.locator(f"#{ids.SEL_SHARES}").inner_text()
    for name, n in server["by_task_type"].items():
        if n:
            assert name in shares and f"{n:,}" in shares
    assert_small_requests(traffic)
    assert not traffic.errors


COUNT_REACTS = """() => {
  window.__reacts = 0;
  const react = window.Plotly.react;
  window.Plotly.react = function (gd) {
    if (gd && gd.closest && gd.closest('#explore-graph')) window.__reacts += 1;  // the plane, not other charts
    return react.apply(this, arguments);
  };
}"""
OUTLINES = """() => (document.querySelector('#explore-graph .js-plotly-plot').layout.shapes || [])
  .filter(s => s.type === 'path').length"""


def test_a_drawn_lasso_redraws_nothing_and_a_zoom_keeps_its_outline(page: Any, live: Live) -> None:
    # A whole redraw of a 200k-marker plane costs ~1 s in software WebGL: drawing, replacing and tidying
    # outlines must not cause one (dcc.Graph would, by copying the shapes into its figure prop).
    open_explore(page, live)
    page.evaluate(COUNT_REACTS)
    draw_lasso(page)
    wait_label(page, "Lasso")
    first = ui_count(page)
    draw_lasso(page, fx=0.35, fy=0.55, rx=0.15, ry=0.2)
    page.wait_for_function(f"() => ({OUTLINES})() === 1 && document.querySelector('#sel-count-value').dataset.count !== '{first}'", timeout=TIMEOUT)  # fmt: skip
    page.wait_for_timeout(500)
    assert page.evaluate("window.__reacts") == 0
    # A zoom redraws (dcc.Graph hands its figure, which never saw the outline, to Plotly.react): it stays.
    page.evaluate("""() => {
      const gd = document.querySelector('#explore-graph .js-plotly-plot');
      const [a, b] = gd._fullLayout.xaxis.range, [c, d] = gd._fullLayout.yaxis.range;
      window.Plotly.relayout(gd, {'xaxis.range': [a - (b - a) * 0.1, b], 'yaxis.range': [c, d + (d - c) * 0.1]});
      return 1;
    }""")
    page.wait_for_function("() => window.__reacts > 0", timeout=TIMEOUT)
    page.wait_for_timeout(500)
    assert page.evaluate(OUTLINES) == 1
    assert page.locator(".sel-label").inner_text().startswith("Lasso")
    # Clear drops it (the figure prop never held it: the server's patch starts a new edit revision).
    page.click("#explore-clear")
    page.wait_for_function(
        f"() => ({OUTLINES})() === 0 && !document.querySelector('.sel-label').textContent.startsWith('Lasso')",
        timeout=TIMEOUT,
    )
    page.wait_for_timeout(500)
    assert page.evaluate(OUTLINES) == 0


def test_paging_detail_and_escape(page: Any, live: Live, traffic: Traffic) -> None:
    open_explore(page, live)
    first = gallery_ids(page)
    first_card = page.locator(".gcard").first.get_attribute("id")  # before the click: the answer can beat it
    page.click(f"#{ids.GALLERY_NEXT}")
    page.wait_for_function(
        "f => document.querySelector('.gcard') && document.querySelector('.gcard').id !== f",
        arg=first_card,
        timeout=TIMEOUT,
    )
    second = gallery_ids(page)
    assert second and not set(first) & set(second)
    assert "13\u201324 of" in page.locator(f"#{ids.GALLERY_INFO}").inner_text()
    page.locator(".gcard").first.click()
    page.wait_for_selector(f"#{ids.DETAIL} .chat", timeout=TIMEOUT)
    assert page.locator(f"#{ids.DETAIL}").is_visible()
    assert f"Sample #{second[0]}" in page.locator(f"#{ids.DETAIL_BODY}").inner_text()
    page.keyboard.press("Escape")
    page.wait_for_selector(f"#{ids.DETAIL}", state="hidden", timeout=TIMEOUT)
    assert_small_requests(traffic)


def test_presets_grid_and_task_filter(page: Any, live: Live, traffic: Traffic) -> None:
    open_explore(page, live)
    page.click("button:has-text('DIQ')")
    wait_label(page, "DIQ")
    page.wait_for_timeout(300)
    body = last_region_request(traffic)
    x, y = value_of(body, ids.EX_X), value_of(body, ids.EX_Y)
    server = api_preview(live, {"x": x, "y": y, "region": {"type": "top", "percent": 5, "axes": "both"}, "limit": 12})
    assert ui_count(page) == server["count"] > 0
    page.locator("button.grid-cell", has_text="2,2").click()
    wait_label(page, "3\u00d73 grid")
    page.wait_for_timeout(300)
    server = api_preview(live, {"x": x, "y": y, "region": {"type": "grid", "n": 3, "cell": [2, 2]}, "limit": 12})
    assert ui_count(page) == server["count"] > 0
    # The grid cell is outlined on the plane.
    assert page.locator("g.shapelayer path").count() >= 1
    # Untick a task type: the count follows the server's filtered answer.
    page.locator(f"#{ids.EX_TASKS} label", has_text="referring_qa").locator("input").uncheck()
    page.wait_for_function(
        "() => document.querySelector('.sel-title').textContent.includes('task type')", timeout=TIMEOUT
    )
    page.wait_for_timeout(300)
    types = [t for t in ("complex_reasoning", "conversation", "detail_description")]
    server = api_preview(
        live, {"x": x, "y": y, "region": {"type": "grid", "n": 3, "cell": [2, 2]}, "task_types": types, "limit": 12}
    )
    assert ui_count(page) == server["count"]
    assert_small_requests(traffic)


def test_save_random_control_and_exports(page: Any, live: Live, traffic: Traffic, tmp_path: Path) -> None:
    open_explore(page, live)
    draw_lasso(page, fx=0.5, fy=0.5, rx=0.3, ry=0.35)
    wait_label(page, "Lasso")
    page.wait_for_timeout(300)
    count = ui_count(page)
    page.fill(f"#{ids.SEL_NAME}", "my lasso")
    page.click(f"#{ids.SEL_SAVE}")
    page.wait_for_selector(f"#{ids.SEL_STATUS} .alert-ok", timeout=TIMEOUT)
    status = page.locator(f"#{ids.SEL_STATUS}").inner_text()
    sel_id = int(status.split("#", 1)[1].split()[0])
    saved = httpx.get(f"{live.base_url}/api/selections/{sel_id}").json()
    assert saved["count"] == count and saved["name"] == "my lasso"
    assert saved["recipe"]["region"]["type"] == "polygon"
    # Random control of the same size.
    page.click(f"#{ids.SEL_RANDOM}")
    page.wait_for_function(
        "id => document.querySelector('#sel-status').textContent.includes('random control')",
        arg=sel_id,
        timeout=TIMEOUT,
    )
    rnd_id = int(page.locator(f"#{ids.SEL_STATUS}").inner_text().split("#", 1)[1].split()[0])
    rnd = httpx.get(f"{live.base_url}/api/selections/{rnd_id}").json()
    assert rnd["count"] == count and rnd["recipe"]["region"]["type"] == "all"
    assert rnd["recipe"]["sample"]["n"] == count
    # Every export format downloads from the saved list.
    row = page.locator(".saved-row", has_text=f"#{sel_id} my lasso")
    for fmt in ("llava", "jsonl", "parquet", "ids"):
        with page.expect_download() as info:
            row.locator(
                f"a:has-text('{dict(llava='LLaVA', jsonl='JSONL', parquet='Parquet', ids='id list')[fmt]}')"
            ).click()
        path = tmp_path / f"export.{fmt}"
        info.value.save_as(path)
        data = path.read_bytes()
        assert data, fmt
        if fmt == "llava":
            records = json.loads(data)
            assert len(records) == count and {"id", "conversations"} <= set(records[0])
    assert_small_requests(traffic)


def test_curriculum_three_stages_and_zip(page: Any, live: Live, traffic: Traffic, tmp_path: Path) -> None:
    page.goto(f"{live.base_url}/curriculum?ds={live.seeded.dataset_id}")
    page.wait_for_selector(".stage-row", timeout=TIMEOUT)
    assert page.locator(".stage-row").count() == 3
    page.fill(f"#{ids.CU_PER_STAGE}", "40")
    page.locator(f"#{ids.CU_PER_STAGE}").press("Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.stage-row td[data-count]')].every(td => +td.dataset.count <= 40)",
        timeout=TIMEOUT,
    )
    live_sizes = [int(td.get_attribute("data-count")) for td in page.locator(".stage-row td[data-count]").all()]
    page.fill(f"#{ids.CU_NAME}", "paper-3-stage")
    page.click(f"#{ids.CU_BUILD}")
    page.wait_for_selector("#cur-download", timeout=TIMEOUT)
    with page.expect_download() as info:
        page.click("#cur-download")
    path = tmp_path / "curriculum.zip"
    info.value.save_as(path)
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
    text = json.dumps(manifest)
    assert "paper-3-stage" in text or manifest.get("name") == "paper-3-stage"
    stages = manifest.get("stages")
    assert isinstance(stages, list) and len(stages) == 3
    counts = [int(s.get("count", -1)) for s in stages]
    assert counts == live_sizes, (counts, live_sizes)
    assert sum(n.endswith(".json") and n != "manifest.json" for n in names) >= 3
    assert_small_requests(traffic)


@pytest.mark.slow
def test_progress_bar_moves_while_a_run_scores(page: Any, live: Live, traffic: Traffic, tmp_path: Path) -> None:
    from tests.queue_helpers import start_worker, stop_worker, wait_ready

    log = tmp_path / "worker.log"
    worker = start_worker(live.settings, log, "ui-progress", env={"QSPACE_TEST_SAMPLE_DELAY": "0.04"})
    try:
        wait_ready(worker, log)
        page.goto(f"{live.base_url}/datasets?ds={live.seeded.dataset_id}")
        page.wait_for_selector(f"#{ids.RUN_KIND}", timeout=TIMEOUT)
        page.locator(f"#{ids.RUN_KIND} label", has_text="length").click()
        page.wait_for_selector("text=Token and word counts", timeout=TIMEOUT)
        page.click(f"#{ids.RUN_SUBMIT}")
        page.wait_for_selector(f"#{ids.RUN_RESULT} .alert", timeout=3 * TIMEOUT)
        assert page.locator(f"#{ids.RUN_RESULT} .alert-ok").count(), page.locator(f"#{ids.RUN_RESULT}").inner_text()
        run_id = int(page.locator(f"#{ids.RUN_RESULT}").inner_text().split("#", 1)[1].split()[0])
        bar = page.locator(f".progress[data-run='{run_id}']")
        seen: list[float] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if bar.count():
                seen.append(float(bar.get_attribute("aria-valuenow")))
                if seen[-1] >= 100:
                    break
            page.wait_for_timeout(250)
        inner = sorted({v for v in seen if 0 < v < 100})
        assert len(inner) >= 2, f"the bar did not move through intermediate values: {seen}"
        assert seen == sorted(seen), "progress went backwards"
        assert seen[-1] == 100
        page.wait_for_selector(f"#run-{run_id} .badge-done", timeout=TIMEOUT)
    finally:
        stop_worker(worker)
    assert_small_requests(traffic)


def test_errors_are_words_and_text_is_escaped(page: Any, live: Live, traffic: Traffic) -> None:
    # An API error (a path outside the allowed roots) is shown in words.
    page.goto(f"{live.base_url}/datasets")
    page.wait_for_selector(f"#{ids.INGEST_SUBMIT}", timeout=TIMEOUT)
    page.fill(f"#{ids.INGEST_NAME}", "nope")
    page.fill(f"#{ids.INGEST_PATHS}", "/etc/passwd")
    page.click(f"#{ids.INGEST_SUBMIT}")
    page.wait_for_selector(f"#{ids.INGEST_RESULT} .alert-error", timeout=TIMEOUT)
    assert "outside" in page.locator(f"#{ids.INGEST_RESULT}").inner_text()
    # A malformed file: the ingest job (202) fails, and its error names the file, record and field.
    bad = live.root / "ui_bad.json"
    bad.write_text(json.dumps([{"id": "a", "conversations": [{"from": "robot", "value": "hi"}]}]))
    page.fill(f"#{ids.INGEST_PATHS}", str(bad))
    page.click(f"#{ids.INGEST_SUBMIT}")
    page.wait_for_selector(f"#{ids.INGEST_RESULT} .alert-error >> text=record 0", timeout=TIMEOUT)
    said = page.locator(f"#{ids.INGEST_RESULT}").inner_text()
    assert "ui_bad.json" in said and "conversations[0].from" in said and "robot" in said
    # A good one: the job ends done and the page moves to the new dataset.
    good = live.root / "ui_good.json"
    turns = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    good.write_text(json.dumps([{"id": f"g{i}", "conversations": turns} for i in range(3)]))
    page.fill(f"#{ids.INGEST_NAME}", "ui-ingested")
    page.fill(f"#{ids.INGEST_PATHS}", str(good))
    page.click(f"#{ids.INGEST_SUBMIT}")
    page.wait_for_url("**/datasets?ds=*", timeout=TIMEOUT)
    page.wait_for_selector(f"#{ids.DS_TABLE} >> text=ui-ingested", timeout=TIMEOUT)
    # Dataset text arrives as text: no markup, no script, no markdown.
    open_explore(page, live, live.hostile_ds)
    card_text = page.locator(".gcard").first.inner_text()
    assert "<b>bold</b>" in card_text and "<script>" in card_text
    assert "**not markdown**" in page.locator(".gallery").inner_text()
    assert page.locator(".gallery script, .gallery img[src='x'], .gcard-chat b").count() == 0
    prompt = page.locator(".tt-prompt-text").first
    assert prompt.text_content() == HOSTILE
    assert page.evaluate("() => window.__pwned") is None
    # Not found pages and an unknown API route answer in words, never a blank page.
    page.goto(f"{live.base_url}/nowhere")
    page.wait_for_selector(".page-error", timeout=TIMEOUT)
    assert "no page" in page.locator(".page-error").inner_text()
    r = httpx.get(f"{live.base_url}/api/nowhere")
    assert r.status_code == 404 and "detail" in r.json()
    assert not traffic.errors


def test_browser_simplifies_the_lasso_like_the_server(page: Any, live: Live) -> None:
    """The polygon the browser sends is Visvalingam-Whyatt to <= 64 vertices, as backend.regions does."""
    import numpy as np

    from backend.regions import simplify_polygon

    open_explore(page, live)
    rng = np.random.default_rng(0)
    for k in (5, 64, 65, 300, 1500):
        theta = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = 1 + 0.3 * rng.random(k)
        pts = np.c_[r * np.cos(theta) * 80, 0.3 + r * np.sin(theta) * 0.05]
        js = page.evaluate("p => window.qspace.simplifyPolygon(p, 64)", pts.tolist())
        assert np.allclose(np.asarray(js), simplify_polygon(pts, 64)), k
        assert len(js) == min(k, 64)
    assert page.evaluate("() => window.qspace.parsePath('M1.5,2e-3L3,-4.25L.5,6Z')") == [
        [1.5, 0.002],
        [3, -4.25],
        [0.5, 6],
    ]


def test_click_on_a_marker_opens_its_detail(page: Any, live: Live) -> None:
    open_explore(page, live)
    x, y, sid = page.evaluate(
        """() => { const gd = document.querySelector('#explore-graph .js-plotly-plot');
          const t = gd._fullData.find(t => t.type === 'scattergl' && t._length > 0);
          const r = gd.querySelector('g.draglayer g.xy rect.nsewdrag').getBoundingClientRect();
          const fl = gd._fullLayout;
          return [r.left + fl.xaxis.d2p(t.x[0]), r.top + fl.yaxis.d2p(t.y[0]), t.customdata[0]]; }"""
    )
    page.mouse.move(x, y)
    page.wait_for_timeout(300)
    page.mouse.click(x, y)
    page.wait_for_selector(f"#{ids.DETAIL} .chat", timeout=TIMEOUT)
    assert f"Sample #{sid}" in page.locator(f"#{ids.DETAIL_BODY}").inner_text()
    page.click(f"#{ids.DETAIL_CLOSE}")
    page.wait_for_selector(f"#{ids.DETAIL}", state="hidden", timeout=TIMEOUT)


def test_colour_and_filter_by_a_metadata_label(page: Any, live: Live, traffic: Traffic) -> None:
    open_explore(page, live)
    page.locator(f"#{ids.EX_COLOR}").click()
    page.get_by_text("Metadata: defect").click()
    page.wait_for_selector(f"#{ids.EX_META_VALUES} input", timeout=TIMEOUT)
    page.wait_for_function(
        "() => document.querySelector('#explore-graph .js-plotly-plot')._fullData.some(t => (t.name || '').startsWith('swapped_image'))",
        timeout=TIMEOUT,
    )
    page.locator(f"#{ids.EX_META_VALUES} label", has_text="none").locator("input").uncheck()
    page.wait_for_function("() => document.querySelector('.sel-title').textContent.includes('defect')", timeout=TIMEOUT)
    page.wait_for_timeout(300)
    body = last_region_request(traffic)
    x, y = value_of(body, ids.EX_X), value_of(body, ids.EX_Y)
    defects = ["swapped_image", "shuffled", "wrong_fact", "truncated", "filler"]
    server = api_preview(
        live, {"x": x, "y": y, "region": {"type": "all"}, "metadata": {"defect": defects}, "limit": 12}
    )
    assert 0 < ui_count(page) == server["count"] < live.seeded.n
    # The plot hides the unticked value too: no marker of a clean sample is drawn.
    names = page.evaluate("() => document.querySelector('#explore-graph .js-plotly-plot')._fullData.map(t => t.name)")
    assert not any(str(n).startswith("none (") for n in names)
    assert_small_requests(traffic)
