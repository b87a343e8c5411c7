/* qspace UI: clientside callbacks.
 *
 * The lasso never leaves the browser as a point list. The plane's lasso and box are Plotly's shape
 * drawing tools (drawclosedpath, drawrect), not its point selection: drawing costs the same at 1M
 * points as at 100 (Plotly's select mode re-tests every drawn marker on every mouse move, and its
 * `selectedData` would hold every selected marker, ~150 bytes each). The `region` callback below runs
 * in the browser, reads the drawn path, simplifies it to <= 64 vertices and hands only that to the
 * server callbacks, which ask the API which of *all* points (not only the drawn ones) lie inside.
 */
(function () {
  "use strict";

  var MAX_VERTICES = 64;

  function triangleArea(a, b, c) {
    return 0.5 * Math.abs((b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1]));
  }

  /* Visvalingam-Whyatt, as backend.regions.simplify_polygon: drop consecutive duplicates and a
   * repeated closing vertex, then remove the vertex spanning the smallest triangle until
   * <= maxVertices remain. Kept vertices are a subset of the input, in order. */
  function simplifyPolygon(points, maxVertices) {
    maxVertices = Math.max(3, maxVertices || MAX_VERTICES);
    var p = [];
    for (var i = 0; i < points.length; i++) {
      var q = points[i];
      var x = Number(q[0]), y = Number(q[1]);
      if (!isFinite(x) || !isFinite(y)) continue;
      if (p.length && p[p.length - 1][0] === x && p[p.length - 1][1] === y) continue;
      p.push([x, y]);
    }
    if (p.length > 1 && p[0][0] === p[p.length - 1][0] && p[0][1] === p[p.length - 1][1]) p.pop();
    var k = p.length;
    if (k <= maxVertices) return p;
    var prev = new Int32Array(k), next = new Int32Array(k), area = new Float64Array(k);
    var alive = new Uint8Array(k);
    for (i = 0; i < k; i++) {
      prev[i] = (i - 1 + k) % k;
      next[i] = (i + 1) % k;
      alive[i] = 1;
    }
    for (i = 0; i < k; i++) area[i] = triangleArea(p[prev[i]], p[i], p[next[i]]);
    var remaining = k;
    while (remaining > maxVertices) {
      var best = -1, bestArea = Infinity;
      for (i = 0; i < k; i++) {
        if (alive[i] && (area[i] < bestArea || (area[i] === bestArea && i < best))) {
          best = i;
          bestArea = area[i];
        }
      }
      alive[best] = 0;
      var a = prev[best], b = next[best];
      next[a] = b;
      prev[b] = a;
      area[a] = triangleArea(p[prev[a]], p[a], p[next[a]]);
      area[b] = triangleArea(p[prev[b]], p[b], p[next[b]]);
      remaining--;
    }
    var out = [];
    for (i = 0; i < k; i++) if (alive[i]) out.push(p[i]);
    return out;
  }

  function fmtPct(p) {
    return (Math.round(p * 100) / 100).toString();
  }

  function triggeredId() {
    var ctx = window.dash_clientside.callback_context;
    if (ctx.triggered_id !== undefined && ctx.triggered_id !== null) return ctx.triggered_id;
    var t = ctx.triggered && ctx.triggered[0];
    if (!t || !t.prop_id) return null;
    var raw = t.prop_id.split(".")[0];
    try {
      return JSON.parse(raw);
    } catch (e) {
      return raw;
    }
  }

  function triggeredValue() {
    var ctx = window.dash_clientside.callback_context;
    var t = ctx.triggered && ctx.triggered[0];
    return t ? t.value : null;
  }

  /* "M x,y L x,y ... Z" (plotly's drawn closed path, data coordinates) -> [[x, y], ...]. */
  function parsePath(path) {
    var nums = String(path).match(/[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?/g) || [];
    var pts = [];
    for (var i = 0; i + 1 < nums.length; i += 2) pts.push([Number(nums[i]), Number(nums[i + 1])]);
    return pts;
  }

  function plotDiv() {
    var g = document.getElementById("explore-graph");
    return g && g.querySelector(".js-plotly-plot");
  }

  /* The shape the analyst just drew or edited on the main plot (undefined: the event touched no
   * shape; null: no drawn shape is left). Read from the plot itself, which holds every shape whole. */
  function currentShape(relayout) {
    if (!relayout) return undefined;
    var touched = null;
    var keys = Object.keys(relayout);
    for (var k = 0; k < keys.length; k++) {
      var m = /^shapes(?:\[(\d+)\])?/.exec(keys[k]);
      if (m) {
        touched = m[1] === undefined ? -1 : Number(m[1]);
        break;
      }
    }
    if (touched === null) return undefined;
    var gd = plotDiv();
    var shapes = (gd && gd.layout && gd.layout.shapes) || relayout.shapes || [];
    function own(s) {
      return s && s.name !== "qspace-preset" && (s.xref || "x") === "x" && (s.yref || "y") === "y" &&
        (s.type === "path" || s.type === "rect");
    }
    if (touched >= 0 && own(shapes[touched])) return shapes[touched];
    for (var i = shapes.length - 1; i >= 0; i--) if (own(shapes[i])) return shapes[i];
    return null;
  }

  /* A drawn shape -> {region, label, source} (undefined when the shape is degenerate). */
  function regionFromShape(shape) {
    if (shape.type === "rect") {
      var x0 = Number(shape.x0), x1 = Number(shape.x1), y0 = Number(shape.y0), y1 = Number(shape.y1);
      if (![x0, x1, y0, y1].every(isFinite) || x0 === x1 || y0 === y1) return undefined;
      return {
        region: { type: "box", x: [Math.min(x0, x1), Math.max(x0, x1)], y: [Math.min(y0, y1), Math.max(y0, y1)] },
        label: "Box",
        source: "draw",
      };
    }
    var poly = simplifyPolygon(parsePath(shape.path || ""), MAX_VERTICES);
    if (poly.length < 3) return undefined;
    return {
      region: { type: "polygon", points: poly },
      label: "Lasso \u00b7 " + poly.length + " vertices",
      source: "draw",
    };
  }

  function isOwn(s) {
    return !!s && s.name !== "qspace-preset" && (s.xref || "x") === "x" && (s.yref || "y") === "y" &&
      (s.type === "path" || s.type === "rect");
  }

  /* dcc.Graph copies every layout key a relayout event names back into its `figure` prop, and a new
   * figure is a whole Plotly.react: with the point budget's 200k markers on the page that redraw costs
   * ~1 s in software WebGL (headless Chromium), and it ran before the region request could leave
   * (bench/peers/embedding_atlas.py: lasso -> count 1.3 s, of which the server 50 ms). So an event that
   * draws, edits or tidies outlines loses its shape keys here, in the first listener, before dcc.Graph's
   * own sees it: the outline lives in the plot, nothing is redrawn. A later redraw keeps it (Plotly keeps
   * what the analyst drew while `uirevision` stays; tests/browser/test_ui.py zooms to check), and
   * figures the server sends draw the region's outline themselves (region_shapes). */
  function keepShapesOutOfFigure(ev) {
    if (!ev) return;
    Object.keys(ev).forEach(function (k) {
      if (/^shapes/.test(k)) delete ev[k];
    });
  }

  /* Listen to the plane's relayout events directly: the moment a lasso or box is drawn, edited or
   * erased, the region store gets the simplified polygon (set_props triggers the server callbacks);
   * older drawn outlines and preset outlines are removed so exactly one region shows. */
  var tidying = false;
  function onRelayout(gd, ev) {
    var shape = currentShape(ev);
    keepShapesOutOfFigure(ev);
    if (tidying) return;
    if (shape === undefined) return;
    var region = shape === null ? null : regionFromShape(shape);
    if (region === undefined) return;
    var shapes = (gd.layout && gd.layout.shapes) || [];
    if (shape !== null && shapes.some(function (s) { return s !== shape && (isOwn(s) || s.name === "qspace-preset"); })) {
      tidying = true;
      setTimeout(function () {
        var keep = shapes.filter(function (s) { return s === shape || !(isOwn(s) || s.name === "qspace-preset"); });
        window.Plotly.relayout(gd, { shapes: keep }).then(
          function () { tidying = false; },
          function () { tidying = false; }
        );
      }, 0);
    }
    window.dash_clientside.set_props("explore-region", { data: region });
  }

  function watchPlane() {
    var gd = plotDiv();
    if (gd && gd.on && !gd.__qspaceWatched) {
      gd.__qspaceWatched = true;
      gd.on("plotly_relayout", function (ev) { onRelayout(gd, ev); });
      // In the drawing modes Plotly sends no click events: a click (not a drag) on a hovered marker
      // opens its detail view here instead.
      var down = null;
      gd.addEventListener("mousedown", function (ev) { down = [ev.clientX, ev.clientY]; }, true);
      gd.addEventListener("click", function (ev) {
        var mode = gd._fullLayout && gd._fullLayout.dragmode;
        if (!mode || String(mode).indexOf("draw") !== 0 || !down) return;
        if (Math.abs(ev.clientX - down[0]) + Math.abs(ev.clientY - down[1]) > 4) return;
        var pt = (gd._hoverdata || [])[0];
        if (!pt || Array.isArray(pt.pointNumber) || pt.z !== undefined) return;
        var id = Number(pt.customdata);
        if (isFinite(id)) window.dash_clientside.set_props("detail-id", { data: id });
      }, true);
    }
  }
  // Bind as soon as Plotly turns the graph's div into a plot: before dcc.Graph binds its own handlers,
  // so the region request leaves before the graph re-renders for the new shape.
  new MutationObserver(watchPlane).observe(document.documentElement, {
    subtree: true,
    childList: true,
    attributes: true,
    attributeFilter: ["class"],
  });
  setInterval(watchPlane, 500);

  window.qspace = {
    simplifyPolygon: simplifyPolygon,
    parsePath: parsePath,
    MAX_VERTICES: MAX_VERTICES,
    keepShapesOutOfFigure: keepShapesOutOfFigure,
  };

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    qspace: {
      /* Preset buttons / clear / axes -> {region, label, source} (null = whole dataset). Drawn regions
       * arrive through watchPlane() below. */
      region: function (presetClicks, gridClicks, clearClicks, x, y, percent) {
        var NO = window.dash_clientside.no_update;
        var trig = triggeredId();
        if (trig === null || trig === undefined) return NO;
        if (trig === "explore-x" || trig === "explore-y" || trig === "explore-clear") return null;
        var pct = Number(percent);
        if (!isFinite(pct) || pct <= 0 || pct > 100) pct = 5;
        if (typeof trig === "object" && trig.type === "explore-preset") {
          if (!triggeredValue()) return NO;
          var key = trig.key;
          if (key === "all") return { region: { type: "all" }, label: "Whole dataset", source: "preset" };
          var axes = { dis: "y", dil: "x", diq: "both" }[key];
          var name = { dis: "DIS", dil: "DIL", diq: "DIQ" }[key];
          return {
            region: { type: "top", percent: pct, axes: axes },
            label: name + " · top " + fmtPct(pct) + "%",
            source: "preset",
          };
        }
        if (typeof trig === "object" && trig.type === "explore-grid") {
          if (!triggeredValue()) return NO;
          return {
            region: { type: "grid", n: 3, cell: [trig.i, trig.j] },
            label: "3×3 grid · cell (" + trig.i + ", " + trig.j + ")",
            source: "preset",
          };
        }
        return NO;
      },

      /* A click on a marker (not the density layer) or on a gallery card opens the detail view. */
      detail: function (clickData, cardClicks, closeClicks) {
        var NO = window.dash_clientside.no_update;
        var trig = triggeredId();
        if (trig === "detail-close") return null;
        if (trig === "explore-graph") {
          var pt = clickData && clickData.points && clickData.points[0];
          if (!pt || Array.isArray(pt.pointNumber) || pt.z !== undefined) return NO;
          var id = Number(pt.customdata);
          return isFinite(id) ? id : NO;
        }
        if (trig && typeof trig === "object" && trig.type === "gallery-card") {
          if (!triggeredValue()) return NO;
          return trig.id;
        }
        return NO;
      },
    },
  });

  // Escape closes the detail view.
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape") {
      var btn = document.getElementById("detail-close");
      if (btn && btn.offsetParent !== null) btn.click();
    }
  });
})();
