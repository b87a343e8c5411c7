/* qspace UI: selections laid over the plane and the data map, and the map's own lasso.
 *
 * Overlays. The server sends, per graph, the traces of the selections to show over it (the linked selection,
 * the saved selections being compared): {"explore-graph": {key, uirevision, traces}, "explore-map": {...}}.
 * They are added to the plot that is already there (Plotly.addTraces), so a new lasso never re-sends the
 * figure; and because Dash re-plots a graph from its `figure` prop (new colour, filter, outline), every
 * `plotly_afterplot` checks that the wanted overlays are still there and puts them back if not. An overlay
 * drawn for other axes (its `uirevision` differs from the plot's) waits for the server's next one.
 *
 * The map's lasso. Drawing on the map (Plotly's shape tools, as on the plane) sets the page's region store
 * to the simplified polygon *with the map's axes* (`layout.meta.axes`), so every server callback resolves
 * the same recipe on those axes: count, gallery, save and export follow the last selection made on either.
 */
(function () {
  "use strict";

  var GRAPHS = ["explore-graph", "explore-map"];
  var GROUPS = ["compare", "search", "link"]; // drawn in this order: the linked selection on top
  var want = {}; // graph id -> group -> {key, uirevision, traces}
  var busy = {};

  function plotOf(graphId) {
    var g = document.getElementById(graphId);
    return g && g.querySelector(".js-plotly-plot");
  }

  function wanted(graphId, gd) {
    var out = [];
    var rev = gd.layout && gd.layout.uirevision;
    GROUPS.forEach(function (group) {
      var o = (want[graphId] || {})[group];
      if (!o || !o.traces || !o.traces.length) return;
      if (o.uirevision && rev && o.uirevision !== rev) return; // drawn for other axes
      o.traces.forEach(function (t, i) {
        var copy = JSON.parse(JSON.stringify(t));
        copy.meta = { qspace: group, key: String(o.key) + "#" + i };
        out.push(copy);
      });
    });
    return out;
  }

  function signature(traces) {
    return traces.map(function (t) { return t.meta.qspace + ":" + t.meta.key; }).join("|");
  }

  function reconcile(graphId) {
    var gd = plotOf(graphId);
    if (!gd || !gd.data || !window.Plotly || busy[graphId]) return;
    var desired = wanted(graphId, gd);
    var present = [];
    var have = [];
    gd.data.forEach(function (t, i) {
      if (t && t.meta && t.meta.qspace) {
        present.push(i);
        have.push(t);
      }
    });
    if (signature(have) === signature(desired)) return;
    busy[graphId] = true;
    var step = present.length ? window.Plotly.deleteTraces(gd, present) : Promise.resolve();
    Promise.resolve(step)
      .then(function () { return desired.length ? window.Plotly.addTraces(gd, desired) : null; })
      .then(
        function () { busy[graphId] = false; reconcile(graphId); },
        function () { busy[graphId] = false; }
      );
  }

  function setOverlay(group, data) {
    GRAPHS.forEach(function (graphId) {
      want[graphId] = want[graphId] || {};
      want[graphId][group] = (data && data[graphId]) || null;
      reconcile(graphId);
    });
  }

  /* --- the map's lasso and box ------------------------------------------------------------------- */

  function own(s) {
    return !!s && s.name !== "qspace-preset" && (s.xref || "x") === "x" && (s.yref || "y") === "y" &&
      (s.type === "path" || s.type === "rect");
  }

  function mapRegion(gd, shape) {
    var axes = gd.layout && gd.layout.meta && gd.layout.meta.axes;
    if (!axes || !axes.x || !axes.y) return undefined;
    var q = window.qspace || {};
    if (shape.type === "rect") {
      var x0 = Number(shape.x0), x1 = Number(shape.x1), y0 = Number(shape.y0), y1 = Number(shape.y1);
      if (![x0, x1, y0, y1].every(isFinite) || x0 === x1 || y0 === y1) return undefined;
      return {
        region: { type: "box", x: [Math.min(x0, x1), Math.max(x0, x1)], y: [Math.min(y0, y1), Math.max(y0, y1)] },
        label: "Map box", source: "draw", view: "map", axes: { x: axes.x, y: axes.y },
      };
    }
    if (!q.simplifyPolygon || !q.parsePath) return undefined;
    var poly = q.simplifyPolygon(q.parsePath(shape.path || ""), q.MAX_VERTICES || 64);
    if (poly.length < 3) return undefined;
    return {
      region: { type: "polygon", points: poly },
      label: "Map lasso \u00b7 " + poly.length + " vertices", source: "draw", view: "map",
      axes: { x: axes.x, y: axes.y },
    };
  }

  var tidying = false;
  function onMapRelayout(gd, ev) {
    if (!ev) return;
    var touched = Object.keys(ev).some(function (k) { return /^shapes/.test(k); });
    var idx = null;
    Object.keys(ev).forEach(function (k) {
      var m = /^shapes\[(\d+)\]/.exec(k);
      if (m) idx = Number(m[1]);
    });
    var q = window.qspace || {};
    if (q.keepShapesOutOfFigure) q.keepShapesOutOfFigure(ev); // no whole redraw per outline (qspace.js)
    if (tidying || !touched) return;
    var shapes = (gd.layout && gd.layout.shapes) || [];
    var mine = shapes.filter(own);
    var shape = idx !== null && own(shapes[idx]) ? shapes[idx] : mine[mine.length - 1] || null;
    var region = shape ? mapRegion(gd, shape) : null;
    if (region === undefined) return;
    if (shape && mine.length > 1) {
      tidying = true; // one outline at a time, as on the plane
      setTimeout(function () {
        var keep = shapes.filter(function (s) { return s === shape || !own(s); });
        window.Plotly.relayout(gd, { shapes: keep }).then(
          function () { tidying = false; },
          function () { tidying = false; }
        );
      }, 0);
    }
    window.dash_clientside.set_props("explore-region", { data: region });
  }

  function watch() {
    GRAPHS.forEach(function (graphId) {
      var gd = plotOf(graphId);
      if (!gd || !gd.on || gd.__qspaceOverlay) return;
      gd.__qspaceOverlay = true;
      gd.on("plotly_afterplot", function () { reconcile(graphId); });
      if (graphId === "explore-map") {
        gd.on("plotly_relayout", function (ev) { onMapRelayout(gd, ev); });
        // In the drawing modes Plotly sends no clicks: a click on a hovered marker opens its detail view.
        var down = null;
        gd.addEventListener("mousedown", function (ev) { down = [ev.clientX, ev.clientY]; }, true);
        gd.addEventListener("click", function (ev) {
          if (!down || Math.abs(ev.clientX - down[0]) + Math.abs(ev.clientY - down[1]) > 4) return;
          var pt = (gd._hoverdata || [])[0];
          if (!pt || Array.isArray(pt.pointNumber) || pt.z !== undefined) return;
          var id = Number(pt.customdata);
          if (isFinite(id)) window.dash_clientside.set_props("detail-id", { data: id });
        }, true);
      }
      reconcile(graphId);
    });
  }
  new MutationObserver(watch).observe(document.documentElement, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["class"],
  });
  setInterval(watch, 500);

  /* qspace.js sets the `qspace` namespace wholesale when it loads: add to it after every script has run. */
  function install() {
    window.dash_clientside = window.dash_clientside || {};
    var ns = (window.dash_clientside.qspace = window.dash_clientside.qspace || {});
    ns.overlay = function (link, compare) {
      setOverlay("link", link);
      setOverlay("compare", compare);
      return window.dash_clientside.no_update;
    };
    ns.searchOverlay = function (search) { // a text search's hits (pages/explore/search.py)
      setOverlay("search", search);
      return window.dash_clientside.no_update;
    };
  }
  install();
  document.addEventListener("DOMContentLoaded", install);
  window.addEventListener("load", install);
  window.qspaceOverlay = { want: want, reconcile: reconcile, install: install };
})();
