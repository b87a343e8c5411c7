from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.ingest import IngestOptions, ingest
from backend.models import Sample, Selection
from backend.settings import Settings
from tests.seeding import Seeded, seed_scored


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine)) as c:
        yield c


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> Seeded:
    return seed_scored(session_factory, tmp_path, n=400)


def scored(seeded: Seeded) -> list[int]:
    return sorted(set(seeded.clip) & set(seeded.loss))


def crossing(px: float, py: float, poly: list[list[float]]) -> bool:
    """The slow, obvious even-odd test."""
    inside = False
    n = len(poly)
    for i in range(n):
        (x0, y0), (x1, y1) = poly[i], poly[(i + 1) % n]
        if (y0 > py) != (y1 > py) and px < x0 + (py - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def test_space_arrow_and_json(client: TestClient, seeded: Seeded) -> None:
    r = client.get(f"/api/datasets/{seeded.dataset_id}/space", params={"x": "loss", "y": "clip"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(io.BytesIO(r.content)).read_all()
    assert table.schema.field("id").type == pa.int32() and table.schema.field("x").type == pa.float32()
    assert table.schema.field("task_type").type == pa.int8()
    ids = table.column("id").to_pylist()
    assert ids == scored(seeded)
    xs = np.array(table.column("x").to_pylist())
    assert np.allclose(xs, [seeded.loss[i] for i in ids], rtol=1e-6)
    names = json.loads(table.schema.metadata[b"task_types"])
    assert set(names) == {"conversation", "complex_reasoning", "detail_description", "referring_qa"}
    assert len(r.content) / len(ids) < 20  # small payload; the 12.5 B/point figure is measured at 1M in bench/space
    j = client.get(
        f"/api/datasets/{seeded.dataset_id}/space",
        params={"x": f"{seeded.loss_run}:loss_mean", "y": f"{seeded.clip_run}:similarity", "format": "json"},
    ).json()
    assert j["ids"] == ids and len(j["x"]) == len(ids) and j["task_types"] == names
    tt = client.get(
        f"/api/datasets/{seeded.dataset_id}/space", params={"format": "json", "task_type": "referring_qa"}
    ).json()
    assert {names[c] for c in tt["task_type"]} == {"referring_qa"}
    col = client.get(
        f"/api/datasets/{seeded.dataset_id}/space", params={"format": "json", "color": "meta:defect"}
    ).json()
    assert set(col["categories"]) == {"none", "swapped_image"}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"x": "999:loss_sum"}, "not a run of dataset"),
        ({"x": "loss:nope"}, "has no metric 'nope'"),
        ({"x": "ifd"}, "no finished ifd run"),
        ({"format": "xml"}, "format"),
    ],
)
def test_space_errors_are_422(client: TestClient, seeded: Seeded, params: dict[str, str], fragment: str) -> None:
    r = client.get(f"/api/datasets/{seeded.dataset_id}/space", params=params)
    assert r.status_code == 422 and fragment in r.json()["detail"]
    assert client.get("/api/datasets/9999/space").status_code == 404


def test_axes_density_summary_metadata(client: TestClient, seeded: Seeded) -> None:
    ds = seeded.dataset_id
    axes = client.get(f"/api/datasets/{ds}/axes").json()
    assert {a["axis"] for a in axes} >= {f"{seeded.loss_run}:loss_sum", f"{seeded.clip_run}:similarity"}
    d = client.get(f"/api/datasets/{ds}/density", params={"bins": 8}).json()
    assert d["total"] == len(scored(seeded)) and sum(map(sum, d["counts"])) == d["total"]
    s = client.get(f"/api/datasets/{ds}/summary").json()
    assert s["count"] == len(scored(seeded))
    assert sum(v["x"]["count"] for v in s["by_task_type"].values()) == s["count"]
    assert s["quantiles"]["x"]["0.5"] == pytest.approx(float(np.median([seeded.loss[i] for i in scored(seeded)])))
    meta = client.get(f"/api/datasets/{ds}/metadata_fields").json()
    assert meta["defect"] == {"none": 320, "swapped_image": 80}


def test_polygon_selection_matches_brute_force(client: TestClient, seeded: Seeded) -> None:
    ds = seeded.dataset_id
    rng = np.random.default_rng(3)
    lx = [seeded.loss[i] for i in scored(seeded)]
    cy = [seeded.clip[i] for i in scored(seeded)]
    for _ in range(5):
        # A concave star around the middle of the cloud.
        k = int(rng.integers(5, 12))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = rng.uniform(0.2, 1.0, k)
        cx, cc = float(np.median(lx)), float(np.median(cy))
        poly = [
            [cx + r * np.cos(a) * np.std(lx) * 2, cc + r * np.sin(a) * np.std(cy) * 2]
            for a, r in zip(ang, rad, strict=True)
        ]
        body = {"x": "loss", "y": "clip", "region": {"type": "polygon", "points": poly}, "exclude_errors": False}
        want = [i for i in scored(seeded) if crossing(seeded.loss[i], seeded.clip[i], poly)]
        if not want:
            continue
        sel = client.post(f"/api/datasets/{ds}/selections", json=body)
        assert sel.status_code == 201, sel.text
        page = client.get(f"/api/selections/{sel.json()['id']}/samples", params={"limit": 1000}).json()
        assert [s["id"] for s in page["items"]] == want
        assert sel.json()["count"] == len(want) == page["total"]
        prev = client.post(f"/api/datasets/{ds}/selections/preview", json={**body, "limit": 3}).json()
        assert prev["count"] == len(want) and [s["id"] for s in prev["items"]] == want[:3]


def test_grid_cells_and_quantile_bands_partition(client: TestClient, seeded: Seeded) -> None:
    ds = seeded.dataset_id
    seen: list[int] = []
    for i in range(3):
        for j in range(3):
            r = client.post(f"/api/datasets/{ds}/selections", json={"region": {"type": "grid", "n": 3, "cell": [i, j]}})
            assert r.status_code == 201, r.text
            seen += [
                s["id"]
                for s in client.get(f"/api/selections/{r.json()['id']}/samples", params={"limit": 1000}).json()["items"]
            ]
    assert sorted(seen) == scored(seeded) and len(seen) == len(set(seen))
    lo = client.post(f"/api/datasets/{ds}/selections", json={"region": {"type": "quantiles", "x": [0, 0.5]}}).json()
    hi = client.post(f"/api/datasets/{ds}/selections", json={"region": {"type": "quantiles", "x": [0.5, 1]}}).json()
    assert lo["count"] + hi["count"] == len(scored(seeded))


def test_top_random_control_filters_and_reproducibility(client: TestClient, seeded: Seeded) -> None:
    ds = seeded.dataset_id
    n = len(scored(seeded))
    top = client.post(
        f"/api/datasets/{ds}/selections", json={"region": {"type": "top", "percent": 10, "axes": "y"}}
    ).json()
    assert top["count"] == round(0.1 * n)
    best = sorted(scored(seeded), key=lambda i: -seeded.clip[i])[: top["count"]]
    got = [s["id"] for s in client.get(f"/api/selections/{top['id']}/samples", params={"limit": 1000}).json()["items"]]
    assert sorted(got) == sorted(best)
    ctrl = {"region": {"type": "all"}, "sample": {"n": top["count"], "seed": 7}, "exclude_errors": False}
    a = client.post(f"/api/datasets/{ds}/selections", json=ctrl).json()
    b = client.post(f"/api/datasets/{ds}/selections", json=ctrl).json()
    ga = client.get(f"/api/selections/{a['id']}/samples", params={"limit": 1000}).json()["items"]
    gb = client.get(f"/api/selections/{b['id']}/samples", params={"limit": 1000}).json()["items"]
    assert a["count"] == top["count"] and [s["id"] for s in ga] == [s["id"] for s in gb]
    # The control draws from the whole dataset, unscored and errored samples included.
    assert set(s["id"] for s in ga) - set(scored(seeded)) or a["count"] < 60
    f = client.post(
        f"/api/datasets/{ds}/selections",
        json={
            "region": {"type": "all"},
            "task_types": ["referring_qa"],
            "metadata": {"defect": ["swapped_image"]},
            "ranges": {"loss": [5, None]},
        },
    ).json()
    items = client.get(f"/api/selections/{f['id']}/samples", params={"limit": 1000}).json()["items"]
    assert items and all(s["task_type"] == "referring_qa" and s["metadata"]["defect"] == "swapped_image" for s in items)
    assert all(seeded.loss[s["id"]] >= 5 and s["id"] not in seeded.errors for s in items)
    assert f["by_task_type"] == {"referring_qa": f["count"]}


@pytest.mark.parametrize(
    ("region", "status"),
    [
        ({"type": "polygon", "points": [[0, 0], [1, 1]]}, 422),
        ({"type": "polygon", "points": [[0, 0], [1, "nan"], [2, 0]]}, 422),
        ({"type": "polygon", "points": [[0, 0], [1e9, 1e9], [-1e9, 1e9]] + [[0, 0]] * 2000}, 422),
        ({"type": "grid", "n": 3, "cell": [3, 0]}, 422),
        ({"type": "box", "x": [100000, 100001], "y": [0, 1]}, 422),  # empty
        ({"type": "hexagon"}, 422),
    ],
)
def test_bad_selections_are_4xx(client: TestClient, seeded: Seeded, region: dict, status: int) -> None:
    r = client.post(f"/api/datasets/{seeded.dataset_id}/selections", json={"region": region})
    assert r.status_code == status and r.json()["detail"]


def test_million_vertex_polygon_is_refused_before_parsing(client: TestClient, seeded: Seeded) -> None:
    pts = [[float(i), float(i % 7)] for i in range(1_000_000)]
    r = client.post(
        f"/api/datasets/{seeded.dataset_id}/selections", json={"region": {"type": "polygon", "points": pts}}
    )
    assert r.status_code == 413


def test_unknowns_are_404(client: TestClient, seeded: Seeded) -> None:
    assert client.get("/api/selections/999").status_code == 404
    assert client.get("/api/selections/999/samples").status_code == 404
    assert client.get("/api/curricula/999").status_code == 404
    r = client.post(
        f"/api/datasets/{seeded.dataset_id}/selections", json={"region": {"type": "all"}, "task_types": ["nope"]}
    )
    assert r.status_code == 422 and "unknown task type" in r.json()["detail"]


def test_exports_round_trip(
    client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    ds = seeded.dataset_id
    sel = client.post(
        f"/api/datasets/{ds}/selections", json={"region": {"type": "all"}, "exclude_errors": False}
    ).json()
    r = client.get(f"/api/selections/{sel['id']}/export", params={"format": "llava"})
    assert r.status_code == 200
    records = json.loads(r.content)
    assert len(records) == 400 and all(set(rec) <= {"id", "image", "conversations"} for rec in records)
    assert sum("image" not in rec for rec in records) == len([i for i in range(400) if i % 17 == 0])
    out = tmp_path / "export.json"
    out.write_bytes(r.content)
    with session_factory() as s:
        report = ingest(s, IngestOptions(name="reingested", paths=[out]))
        s.commit()
        again = {
            x.external_id: (x.image, x.conversations) for x in s.query(Sample).filter_by(dataset_id=report.dataset_id)
        }
        orig = {x.external_id: (x.image, x.conversations) for x in s.query(Sample).filter_by(dataset_id=ds)}
    assert again == orig
    lines = client.get(f"/api/selections/{sel['id']}/export", params={"format": "jsonl"}).text.splitlines()
    first = json.loads(lines[0])
    assert first["metrics"]["mllm_loss.loss_sum"] == pytest.approx(seeded.loss[first["sample_id"]])
    pq_bytes = client.get(f"/api/selections/{sel['id']}/export", params={"format": "parquet"}).content
    table = pq.read_table(io.BytesIO(pq_bytes))
    assert table.num_rows == 400 and "clip.similarity" in table.column_names and "clip.error" in table.column_names
    ids = client.get(f"/api/selections/{sel['id']}/export", params={"format": "ids"}).text.split()
    assert ids == [rec["id"] for rec in records]
    assert client.get(f"/api/selections/{sel['id']}/export", params={"format": "csv"}).status_code == 422


def test_curriculum_builder_and_zip(client: TestClient, seeded: Seeded) -> None:
    ds = seeded.dataset_id
    body = {
        "name": "paper",
        "x": "loss",
        "y": "clip",
        "builder": {"stages": 3, "dx": 2.0, "dy": 0.02, "per_stage": 40, "seed": 1},
    }
    r = client.post(f"/api/datasets/{ds}/curricula", json=body)
    assert r.status_code == 201, r.text
    cur = r.json()
    assert [s["name"] for s in cur["stages"]] == ["initialization", "intermediate", "advanced"]
    z = zipfile.ZipFile(io.BytesIO(client.get(f"/api/curricula/{cur['id']}/export").content))
    manifest = json.loads(z.read("manifest.json"))
    assert manifest["scorer_keys"] == ["k-clip", "k-loss"]
    seen: set[str] = set()
    x0 = min(seeded.loss[i] for i in scored(seeded) if i not in seeded.errors)
    y0 = min(seeded.clip[i] for i in scored(seeded))
    by_ext = {}
    for st in manifest["stages"]:
        k = st["position"]
        recs = json.loads(z.read(st["files"]["llava"]))
        assert len(recs) == st["count"] <= 40
        ids = {rec["id"] for rec in recs}
        assert not ids & seen
        seen |= ids
        by_ext.update({rec["id"]: rec for rec in recs})
        assert st["recipe"]["x_min"] == pytest.approx(x0 + k * 2.0)
        lines = [json.loads(line) for line in z.read(st["files"]["jsonl"]).splitlines()]
        for line in lines:
            assert line["metrics"]["mllm_loss.loss_sum"] >= x0 + k * 2.0 - 1e-9
            assert line["metrics"]["clip.similarity"] >= y0 + k * 0.02 - 1e-9
    assert manifest["stages"][0]["count"] == 40
    sel = client.post(
        f"/api/datasets/{ds}/selections", json={"region": {"type": "top", "percent": 5, "axes": "both"}}
    ).json()
    c2 = client.post(f"/api/datasets/{ds}/curricula", json={"stages": [sel["id"], sel["id"]]})
    assert c2.status_code == 201 and [s["count"] for s in c2.json()["stages"]] == [sel["count"]] * 2
    assert client.post(f"/api/datasets/{ds}/curricula", json={"stages": [9999]}).status_code == 404
    bad = client.post(f"/api/datasets/{ds}/curricula", json={"builder": body["builder"], "stages": [sel["id"]]})
    assert bad.status_code == 422


def test_auth_on_selections(settings: Settings, engine: Engine, seeded: Seeded) -> None:
    settings.api_token = "tok"
    with TestClient(create_app(settings, engine)) as c:
        body = {"region": {"type": "all"}}
        assert c.post(f"/api/datasets/{seeded.dataset_id}/selections", json=body).status_code == 401
        ok = c.post(f"/api/datasets/{seeded.dataset_id}/selections", json=body, headers={"Authorization": "Bearer tok"})
        assert ok.status_code == 201
        assert c.get(f"/api/selections/{ok.json()['id']}").status_code == 401  # reads need the token too
        assert c.get(f"/api/selections/{ok.json()['id']}", headers={"Authorization": "Bearer tok"}).status_code == 200


def test_cache_follows_new_scores(client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session]) -> None:
    ds = seeded.dataset_id
    before = client.get(f"/api/datasets/{ds}/space", params={"format": "json"}).json()
    with session_factory() as s:
        from sqlalchemy import delete

        from backend.models import Run, Score

        # As the runs service does: scores change together with the run's progress fields.
        s.execute(delete(Score).where(Score.run_id == seeded.clip_run, Score.sample_id == before["ids"][0]))
        run = s.get(Run, seeded.clip_run)
        assert run is not None
        run.done -= 1
        s.commit()
    after = client.get(f"/api/datasets/{ds}/space", params={"format": "json"}).json()
    assert after["ids"] == before["ids"][1:]


def test_selection_list_preview_paging_and_none_metadata(
    client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    ds = seeded.dataset_id
    body = {"region": {"type": "quantiles", "x": [0.5, 1]}, "exclude_errors": False}
    first = client.post(f"/api/datasets/{ds}/selections/preview", json={**body, "limit": 5}).json()
    second = client.post(f"/api/datasets/{ds}/selections/preview", json={**body, "offset": 5, "limit": 5}).json()
    assert len(second["items"]) == 5 and not {s["id"] for s in first["items"]} & {s["id"] for s in second["items"]}
    assert first["stats"]["x"]["q25"] <= first["stats"]["x"]["median"] <= first["stats"]["x"]["q75"]
    a = client.post(f"/api/datasets/{ds}/selections", json={**body, "name": "a"}).json()
    b = client.post(f"/api/datasets/{ds}/selections", json={"region": {"type": "all"}, "name": "b"}).json()
    listed = client.get(f"/api/datasets/{ds}/selections").json()
    assert [s["id"] for s in listed] == [b["id"], a["id"]] and listed[1]["count"] == a["count"]
    # Task-type counts as at saving, kept with the selection; one saved before revision 0008 (none kept) is
    # counted from its ids and lists the same.
    assert [s["by_task_type"] for s in listed] == [b["by_task_type"], a["by_task_type"]]
    assert sum(a["by_task_type"].values()) == a["count"]
    with session_factory() as s:
        row = s.get(Selection, a["id"])
        assert row is not None and row.task_type_counts == a["by_task_type"]
        row.task_type_counts = None
        s.commit()
    assert client.get(f"/api/datasets/{ds}/selections").json() == listed
    assert client.get(f"/api/selections/{a['id']}").json()["by_task_type"] == a["by_task_type"]
    # Samples without the field are "(none)" in /metadata_fields, and that value filters too.
    none = client.post(f"/api/datasets/{ds}/selections/preview",
                       json={"region": {"type": "all"}, "metadata": {"source": ["(none)"]}, "exclude_errors": False})
    assert none.json()["count"] == 400
    assert client.get(f"/api/datasets/{ds}/metadata_fields").json() == client.get(
        f"/api/datasets/{ds}/metadata_fields").json()


@pytest.mark.parametrize("bins", [1, 2, 7, 64, 200])
def test_density_bins_points_as_numpy_histogram2d_does(bins: int) -> None:
    from backend.space.columns import Space
    from backend.space.plane import density

    rng = np.random.default_rng(bins)
    n = 20_000
    x = np.concatenate([rng.normal(size=n), np.linspace(-2, 2, bins + 1), [np.nextafter(2.0, 3), -2.0, 2.0]])
    y = np.concatenate([rng.gamma(2.0, size=n), np.linspace(0, 5, bins + 1), [0.0, 5.0, np.nextafter(0.0, -1)]])
    x[::97] = np.round(x[::97], 1)  # values on and near edges
    space = Space(np.arange(len(x), dtype=np.int32), x, y, np.zeros(len(x), np.int8), ["t"])
    for rx, ry in [(None, None), ((-2.0, 2.0), (0.0, 5.0)), ((-0.3, 0.7), (1.0, 1.1))]:
        got = density(space, bins, None, rx, ry)
        box = ((got["x_edges"][0], got["x_edges"][-1]), (got["y_edges"][0], got["y_edges"][-1]))
        h, xe, ye = np.histogram2d(x, y, bins=bins, range=box)
        assert got["counts"] == h.astype(np.int64).tolist()
        assert got["x_edges"] == xe.tolist() and got["y_edges"] == ye.tolist()
        if rx is not None:
            assert got["total"] == int(h.sum())
