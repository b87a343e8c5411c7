"""bench/peers/embedding_atlas.py: the exact counts it checks both tools against, and the polygons it reads back
from their requests (qspace's Dash callback body, Atlas's SQL predicate)."""

from __future__ import annotations

import json

import numpy as np

from backend.regions import points_in_polygon
from bench.peers.embedding_atlas import atlas_polygon, inside, qspace_polygon

POLY = [(0.0, 0.0), (2.0, 0.0), (2.0, 1.0), (1.0, 3.0), (-1.0, 1.0), (-0.5, 0.5)]


def mosaic_sql(poly: list[tuple[float, float]]) -> str:
    """Atlas's predicate as mosaic_client.ts pointInPolygonPredicate writes it (twice, as a count plot does)."""
    parts = []
    for i, (x1, y1) in enumerate(poly):
        x2, y2 = poly[(i + 1) % len(poly)]
        lo, hi, op = (y1, y2, "<") if y1 < y2 else (y2, y1, ">")
        parts.append(
            f'(((({lo} <= "y") AND ("y" < {hi})) AND ((({x2 - x1} * "y") - ({y2 - y1} * "x")) {op} '
            f"{(x2 - x1) * y1 - (y2 - y1) * x1})))::INT"
        )
    pred = f'(("x" BETWEEN -1 AND 2) AND ("y" BETWEEN 0 AND 3) AND ((({" + ".join(parts)}) % 2) = 1))'
    return f"SELECT sum(({pred})::INT), (SELECT count(*) FROM t WHERE {pred}) FROM t"


def test_atlas_polygon_reads_back_every_vertex_including_a_horizontal_edge() -> None:
    assert atlas_polygon(mosaic_sql(POLY)) == POLY
    assert atlas_polygon('SELECT count(*) FROM t WHERE "x" BETWEEN 0 AND 1') is None


def test_qspace_polygon_finds_the_region_in_a_dash_callback_body() -> None:
    body = {"output": "..sel-count.children..", "inputs": [{"id": "explore-region", "property": "data",
            "value": {"region": {"type": "polygon", "points": [[0, 0], [1, 0], [1, 1]]}, "label": "Lasso"}}]}  # fmt: skip
    assert qspace_polygon(json.dumps(body).encode()) == [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)]
    assert qspace_polygon(b"not json") is None


def test_inside_counts_as_qspace_server_does() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.5, 1.0, 200_000).astype(np.float32), rng.normal(1.0, 1.0, 200_000).astype(np.float32)
    assert inside(x, y, POLY) == int(points_in_polygon(x, y, np.asarray(POLY)).sum()) > 10_000
