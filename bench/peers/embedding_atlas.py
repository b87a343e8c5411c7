"""Race (issue 19, item 3): qspace's explore page against Apple's Embedding Atlas over the same 1,000,000 points.

The points are bench/ui.py's store (`bench.ui.seed`: two score runs, loss x CLIP, seeded, reused), read back
through qspace's own `/space` API and written to a Parquet file (x, y, category = task type x defect, 12 values)
that the `embedding-atlas` CLI (its own venv, bench/peers/setup_embedding_atlas.sh) serves. Both apps are opened
in the same headless Chromium (Debian's, through qspace's Playwright) and measured alike:

- **plot drawn**: navigation -> the tool's plot holds its points (qspace: the scattergl trace has points and the
  count is shown; Atlas: its count shows the total) *and* a screenshot of the plot area is non-blank (>= 2% of
  pixels away from the background), polled;
- **lasso -> count**: the loop of bench/ui.py's `lasso_path`, drawn with the mouse (down, 80 moves, up; Atlas's
  lasso is Shift+Meta+drag); the time from the browser's `mouseup` to the final count's appearing on the page (a
  MutationObserver stamps both with `performance.now()`; Atlas also counts live during the drag, qspace on release),
  once the page is quiet. The shown count is checked against a NumPy crossing-number
  count over the polygon the tool sent to its server (qspace: the region in the Dash callback body, <= 64 vertices;
  Atlas: the vertices recovered from the SQL predicate of its query, <= 24 vertices).

Atlas >= 0.24 renders with WebGPU only and asks for `shader-f16`; Chromium's software WebGPU (SwiftShader) lacks
it, so without a GPU Atlas shows "WebGPU is unavailable" (`--probe` prints what each flag set gives). 0.22.0, the
setup script's default, falls back to WebGL 2 (SwiftShader), as the bench runs it here.

    bench/peers/setup_embedding_atlas.sh
    .venv/bin/python -m bench.peers.embedding_atlas [--loads 3] [--lassos 5] [--flags standard|webgpu] [--probe]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.ui import CHROMIUM, CHROMIUM_ARGS, lasso_path, seed  # noqa: E402
from tests.live_server import free_port, served  # noqa: E402

ATLAS = REPO / "bench" / "peers" / ".venv-atlas" / "bin" / "embedding-atlas"
SHOTS = Path("/tmp/qspace-atlas-race")
# --disable-gpu removes WebGPU altogether ("No available adapters"); --enable-unsafe-webgpu gives SwiftShader's.
WEBGPU_ARGS = [a for a in CHROMIUM_ARGS if a != "--disable-gpu"] + [
    "--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-angle=swiftshader",
    "--use-webgpu-adapter=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
]  # fmt: skip
FLAG_SETS = {"standard": CHROMIUM_ARGS, "webgpu": WEBGPU_ARGS}

QSPACE_COUNT = "() => { const c = document.querySelector('#sel-count-value'); return c ? c.dataset.count : null; }"
# Atlas's SelectionCount view: "<div>N <span>/ TOTAL points</span></div>"; N is the selection's count.
ATLAS_COUNT = """() => {
  const s = [...document.querySelectorAll('span')].find(e => /^\\/\\s*[\\d,]+\\s*points$/.test(e.textContent.trim()));
  return s ? s.parentElement.textContent.split('/')[0].replace(/[^\\d]/g, '') : null;
}"""
QSPACE_READY = """() => {
  const gd = document.querySelector('#explore-graph .js-plotly-plot');
  return !!(gd && gd._fullData && gd._fullData.some(t => t.type === 'scattergl' && t._length > 0) &&
            document.querySelector('#sel-count-value'));
}"""
# Stamps the mouse release and every change of the count (read by `getter`) on the page's own clock.
WATCH = """(getter) => {
  const read = eval(getter);
  performance.setResourceTimingBufferSize(100000);  // the default 250 entries fill up during Atlas's lassos
  window.__race = {changes: [], up: null, last: read()};
  new MutationObserver(() => {
    const v = read();
    if (v !== window.__race.last) { window.__race.last = v; window.__race.changes.push([performance.now(), v]); }
  }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
  document.addEventListener('mouseup', () => { window.__race.up = performance.now(); }, true);
}"""


def plane_points(base: str, ds: int) -> dict[str, np.ndarray]:
    """Every point exactly as the explore page's server sees it (float32 x, y), with its task type and defect."""
    import pyarrow as pa

    url = f"{base}/api/datasets/{ds}/space?x=loss&y=clip&format=arrow&color=meta:defect"
    with urllib.request.urlopen(url, timeout=600) as r:
        table = pa.ipc.open_stream(r.read()).read_all()
    meta = {k.decode(): json.loads(v) for k, v in (table.schema.metadata or {}).items()}
    tasks = np.asarray(meta["task_types"])[table["task_type"].to_numpy()]
    defects = np.asarray(meta["categories"])[table["color"].to_numpy()]
    category = np.char.add(np.char.add(tasks.astype(str), "/"), defects.astype(str))
    x, y = table["x"].to_numpy(), table["y"].to_numpy()
    # Atlas is an embedding view: one scale for both axes, so loss (20..200) against CLIP (0.2..0.4) would be a
    # flat line. It gets each axis standardised; membership in a polygon survives a per-axis affine map, so the
    # exact counts are taken in each tool's own coordinates (ax, ay for Atlas).
    ax = ((x - x.mean(dtype=np.float64)) / x.std(dtype=np.float64)).astype(np.float32)
    ay = ((y - y.mean(dtype=np.float64)) / y.std(dtype=np.float64)).astype(np.float32)
    return {"x": x, "y": y, "ax": ax, "ay": ay, "category": category}


def write_parquet(pts: dict[str, np.ndarray], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"x": pts["ax"], "y": pts["ay"], "category": pts["category"]}
    pq.write_table(pa.table({k: pa.array(v) for k, v in cols.items()}), path)


def inside(x: np.ndarray, y: np.ndarray, poly: list[tuple[float, float]]) -> int:
    """Points strictly in the polygon: crossing number with half-open edges (Atlas's rule; qspace's agrees off
    the boundary), in float64 over the float32 values both tools hold."""
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    odd = np.zeros(len(x), dtype=bool)
    for (x1, y1), (x2, y2) in zip(poly, poly[1:] + poly[:1], strict=True):
        if y1 == y2:
            continue
        spans = (np.minimum(y1, y2) <= y64) & (y64 < np.maximum(y1, y2))
        odd ^= spans & ((x2 - x1) * (y64 - y1) / (y2 - y1) + x1 < x64)
    return int(odd.sum())


_NUM = r"(-?[\d.]+(?:e[-+]?\d+)?)"
_EDGE = re.compile(
    rf"\({_NUM} <= \"?y\"?\) AND \(\"?y\"? < {_NUM}\)\) AND "
    rf"\(\(\({_NUM} \* \"?y\"?\) - \({_NUM} \* \"?x\"?\)\) ([<>]) {_NUM}",
    re.I,
)  # fmt: skip


def atlas_polygon(sql: str) -> list[tuple[float, float]] | None:
    """The lasso's vertices from Atlas's point-in-polygon SQL: edge i gives (lo, hi) of its y, dx, dy and
    c = dx*y1 - dy*x1 (mosaic_client.ts pointInPolygonPredicate); the vertex x1 follows from c."""
    # A query may carry the predicate twice (a count plot's sum and its total): read the first copy only.
    first = sql.split('"x" BETWEEN')[1] if sql.count('"x" BETWEEN') > 1 else sql
    found = _EDGE.findall(first)
    edges = [(float(lo), float(hi), float(dx), float(dy), float(c)) for lo, hi, dx, dy, _op, c in found]
    if len(edges) < 3:
        return None
    ys = [lo if dy > 0 else hi for lo, hi, _dx, dy, _c in edges]
    xs = [(dx * y1 - c) / dy if dy else None for (_lo, _hi, dx, dy, c), y1 in zip(edges, ys, strict=True)]
    for i in range(len(xs) - 1, -1, -1):  # a horizontal edge: its start is the next vertex minus its dx
        if xs[i] is None:
            xs[i] = (xs[(i + 1) % len(xs)] or 0.0) - edges[i][2]
    return [(x or 0.0, y) for x, y in zip(xs, ys, strict=True)]


def atlas_sql(body: bytes) -> str:
    """The SQL of an Atlas /data/query request (a JSON body {"type", "sql"})."""
    try:
        return str(json.loads(body).get("sql", ""))
    except (ValueError, AttributeError):
        return ""


def qspace_polygon(body: bytes) -> list[tuple[float, float]] | None:
    """The polygon region a Dash callback request carries (the explore-region store's value)."""
    found: list[Any] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            if v.get("type") == "polygon" and isinstance(v.get("points"), list):
                found.append(v["points"])
            for w in v.values():
                walk(w)
        elif isinstance(v, list):
            for w in v:
                walk(w)

    with contextlib.suppress(ValueError):
        walk(json.loads(body))
    return [(float(a), float(b)) for a, b in found[-1]] if found else None


@contextlib.contextmanager
def atlas_served(exe: Path, parquet: Path, log: Path, timeout: float = 600) -> Iterator[str]:
    """`embedding-atlas data.parquet --x x --y y` on a free port; yields its URL once the page answers."""
    port = free_port()
    argv = [str(exe), str(parquet), "--x", "x", "--y", "y", "--host", "127.0.0.1", "--port", str(port)]
    argv.append("--no-auto-port")  # the port we picked, or fail: never a neighbour the bench does not watch
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/data/metadata.json", timeout=2).read()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedding-atlas did not start; {log}:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        if proc.poll() is None:
            proc.kill()


def nonblank(png: bytes) -> float:
    """Share of pixels visibly away from the image's most common colour (its background)."""
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(np.int16)
    colours, counts = np.unique(a, axis=0, return_counts=True)
    bg = colours[counts.argmax()]
    return float((np.abs(a - bg).max(axis=1) > 24).mean())


def wait_drawn(page: Any, t0: float, ready_js: str, plot: str, timeout: float = 90) -> tuple[float, float]:
    """Seconds from t0 to the DOM state, and to the first poll after it whose plot screenshot is non-blank."""
    dom = None
    while time.perf_counter() - t0 < timeout:
        if dom is not None or page.evaluate(ready_js):
            dom = dom or time.perf_counter() - t0
            box = page.locator(plot).first.bounding_box()
            if box and nonblank(page.screenshot(clip=box)) >= 0.02:
                return dom, time.perf_counter() - t0
        page.wait_for_timeout(50)
    blank = f" (DOM state after {dom:.1f} s, plot blank)" if dom else ""
    raise TimeoutError(f"not drawn in {timeout:.0f} s{blank}")


def lasso_once(
    page: Any, plot: str, k: int, inflight: list[int], polys: list[Any], modifiers: list[str], quiet_ms: int = 1000
) -> dict[str, Any]:
    """Draw lasso k with the mouse on `plot`; once the tool has sent a polygon to its server, no request is in
    flight and the count has been still for quiet_ms, return the mouseup -> last count change time and the count."""
    before = page.evaluate("() => { window.__race.changes = []; window.__race.up = null; return window.__race.last; }")
    box = page.locator(plot).first.bounding_box()
    path = lasso_path(box, k)
    page.mouse.move(*path[0])
    for key in modifiers:
        page.keyboard.down(key)
    page.mouse.down()
    for p in path[1:]:
        page.mouse.move(*p)
    page.mouse.up()
    for key in reversed(modifiers):
        page.keyboard.up(key)
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline:
        page.wait_for_timeout(50)
        r = page.evaluate("() => ({...window.__race, now: performance.now()})")
        last = max([r["up"] or 0.0] + [t for t, _ in r["changes"]])
        loading = page.evaluate("() => !!document.querySelector('[data-dash-is-loading]')")
        settled = r["up"] and polys and not inflight[0] and not loading and r["now"] - last > quiet_ms
        if settled and r["last"] != before:  # a count equal to the previous one waits out the deadline
            break
    # The count may blink (an element re-rendered: gone, then back with the same value): the time that counts
    # is when the final value first appeared after the last different value.
    changes = [(t - r["up"], v) for t, v in r["changes"]]
    # The page's own resource timings of the tool's requests after the release (start, end; ms after mouseup).
    timeline = page.evaluate(
        """(up) => performance.getEntriesByType('resource')
             .filter(e => /_dash-update-component|data\\/query/.test(e.name) && e.startTime > up - 2000)
             .map(e => [Math.round(e.startTime - up), Math.round(e.responseEnd - up)])""",
        r["up"],
    )
    shown = next((t for i, (t, v) in enumerate(changes) if all(w in (v, None) for _, w in changes[i:])), 0.0)
    got = {"ms": max(shown, 0.0), "count": int(r["last"] or -1), "changed_during_drag": shown < 0}
    return {**got, "changes": changes, "requests": timeline}


def race(
    ctx: Any, url: str, tool: str, pts: dict[str, np.ndarray], loads: int, lassos: int, shots: Path
) -> dict[str, Any]:
    page = ctx.new_page()
    out: dict[str, Any] = {"console": [], "lassos": []}
    page.on("console", lambda m: out["console"].append(f"{m.type}: {m.text}"[:300]))
    inflight, polys = [0], []

    def on_request(req: Any) -> None:
        if "/_dash-update-component" in req.url or "/data/query" in req.url:
            inflight[0] += 1
            body = req.post_data_buffer or b""
            poly = qspace_polygon(body) if tool == "qspace" else atlas_polygon(atlas_sql(body))
            if poly:
                polys.append(poly)

    def on_done(req: Any) -> None:
        if "/_dash-update-component" in req.url or "/data/query" in req.url:
            inflight[0] -= 1

    page.on("request", on_request)
    page.on("requestfinished", on_done)
    page.on("requestfailed", on_done)
    plot, ready, getter = (
        ("g.draglayer g.xy rect.nsewdrag", QSPACE_READY, QSPACE_COUNT) if tool == "qspace"
        else ("canvas", f"() => ({ATLAS_COUNT})() === '{len(pts['x'])}'", ATLAS_COUNT)
    )  # fmt: skip
    out["dom_s"], out["drawn_s"] = [], []
    for _ in range(loads):  # the first with an empty cache; the lassos go on the last page
        t0 = time.perf_counter()
        page.goto(url if tool == "atlas" else f"{url}/explore?ds=1")
        try:
            dom, drawn = wait_drawn(page, t0, ready, plot)
        except TimeoutError as e:
            out["error"] = str(e)
            page.screenshot(path=str(shots / f"{tool}-not-drawn.png"))
            return out
        out["dom_s"].append(dom)
        out["drawn_s"].append(drawn)
    page.screenshot(path=str(shots / f"{tool}-drawn.png"))
    page.wait_for_timeout(1000)
    page.evaluate(WATCH, getter)
    for k in range(lassos):
        polys.clear()
        got = lasso_once(page, plot, k, inflight, polys, ["Shift", "Meta"] if tool == "atlas" else [])
        xs, ys = (pts["x"], pts["y"]) if tool == "qspace" else (pts["ax"], pts["ay"])
        got["exact"] = inside(xs, ys, polys[-1]) if polys else None
        got["vertices"] = len(polys[-1]) if polys else 0
        out["lassos"].append(got)
        page.screenshot(path=str(shots / f"{tool}-lasso{k}.png"))
    page.close()
    return out


def probe(flags: dict[str, list[str]]) -> None:
    """What navigator.gpu gives under each flag set (WebGPU needs a secure context: an http://127.0.0.1 page)."""
    from playwright.sync_api import sync_playwright

    js = """async () => {
      const o = {webgpu: !!navigator.gpu, webgl2: !!document.createElement('canvas').getContext('webgl2')};
      const a = navigator.gpu && await navigator.gpu.requestAdapter();
      if (a) { o.adapter = a.info.architecture || a.info.vendor; o.shader_f16 = a.features.has('shader-f16'); }
      return o; }"""  # fmt: skip
    with served(os.environ, Path(tempfile.mkdtemp()) / "probe.log") as server, sync_playwright() as pw:
        for name, args in flags.items():
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
            page = browser.new_page()
            page.goto(f"{server.url}/api/health")
            print(name, json.dumps(page.evaluate(js)))
            browser.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--loads", type=int, default=3, help="page loads per tool (the first with an empty cache)")
    ap.add_argument("--lassos", type=int, default=5)
    ap.add_argument("--root", type=Path, default=REPO / "bench" / "out" / "ui", help="bench/ui.py's store (reused)")
    ap.add_argument("--atlas", type=Path, default=ATLAS, help="the embedding-atlas executable")
    ap.add_argument("--flags", choices=sorted(FLAG_SETS), default="standard", help="Chromium flags for both tools")
    ap.add_argument("--shots", type=Path, default=SHOTS, help="screenshots go here")
    ap.add_argument("--tools", default="qspace,atlas", help="which to race, in this order")
    ap.add_argument("--probe", action="store_true", help="only print what WebGPU/WebGL each flag set gives")
    args = ap.parse_args()
    if args.probe:
        probe(FLAG_SETS)
        return 0
    from playwright.sync_api import sync_playwright

    args.shots.mkdir(parents=True, exist_ok=True)
    ds = seed(args.root, args.n)
    assert ds == 1, "the explore URL below assumes the bench store's only dataset"
    command = [sys.executable, str(REPO / "bench" / "ui.py"), "--serve"]
    results: dict[str, Any] = {}
    with served(os.environ, args.root / "server.log", ["--root", str(args.root)], None, command, 120) as server:
        pts = plane_points(server.url, ds)
        parquet = args.root / f"atlas-{args.n}.parquet"
        write_parquet(pts, parquet)
        with atlas_served(args.atlas, parquet, args.root / "atlas.log") as atlas_url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAG_SETS[args.flags])
            ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
            for tool in args.tools.split(","):
                url = server.url if tool == "qspace" else atlas_url
                results[tool] = race(ctx, url, tool, pts, args.loads, args.lassos, args.shots)
            browser.close()
    version = subprocess.run([str(args.atlas), "--version"], capture_output=True, text=True).stdout.strip()
    (args.shots / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\n## qspace vs Embedding Atlas ({version}): {len(pts['x']):,} points, flags {args.flags}, "
          f"load {Path('/proc/loadavg').read_text().split()[:3]}\n")  # fmt: skip
    print("| tool | plot drawn, median (first) | DOM state | lasso -> count, median | worst | shown = exact (NumPy) |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for tool, r in results.items():
        if "error" in r:
            print(f"| {tool} | {r['error']} | - | - | - | - |")
            continue
        drawn, dom, ms = r["drawn_s"], r["dom_s"], [x["ms"] for x in r["lassos"]]
        agree = ", ".join(f"{x['count']:,}{'=' if x['count'] == x['exact'] else '!='}{x['exact']}" for x in r["lassos"])
        print(
            f"| {tool} | {statistics.median(drawn):.2f} s ({drawn[0]:.2f} s) | {statistics.median(dom):.2f} s | "
            f"{statistics.median(ms):.0f} ms | {max(ms):.0f} ms | {agree} |"
        )
    for tool, r in results.items():
        print(f"\n{tool} console ({len(r['console'])} messages): {r['console'][:8]}")
    print(f"\nscreenshots and results.json: {args.shots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
