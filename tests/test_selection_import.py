"""`POST /api/datasets/{ds}/selections/import`: external ids or LLaVA records to a saved selection."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend import selection_import
from backend.api.app import create_app
from backend.experiment_arms import resolve_arm
from backend.experiment_schemas import ArmRef
from backend.ingest import IngestOptions, ingest
from backend.models import Dataset, Sample
from backend.selection_import import ImportRequest, import_selection
from backend.settings import Settings
from tests.seeding import Seeded
from tests.selection_helpers import client, ids_of, save, seeded

__all__ = ["client", "seeded"]  # fixtures


def records(seeded: Seeded) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(seeded.path.read_text())
    return out


def sample_ids(session_factory: sessionmaker[Session], ds: int) -> dict[str, int]:
    with session_factory() as s:
        return {e: i for e, i in s.query(Sample.external_id, Sample.id).filter(Sample.dataset_id == ds)}


def post_import(client: TestClient, ds: int, body: dict[str, Any]) -> Any:
    return client.post(f"/api/datasets/{ds}/selections/import", json=body)


def test_import_ids_dupes_and_unknown(
    client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    ds = seeded.dataset_id
    by_ext = sample_ids(session_factory, ds)
    wanted = [r["id"] for r in records(seeded)[10:60]]
    body = {"name": "paper subset", "ids": [*wanted, wanted[0], wanted[3], "nope-1", "nope-2", "nope-1"]}
    r = post_import(client, ds, body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["name"] == "paper subset" and out["count"] == 50 and out["matched"] == 50
    assert out["unmatched"] == 2 and out["unmatched_examples"] == ["nope-1", "nope-2"]
    assert out["duplicates"] == 3
    assert ids_of(client, out["id"]) == {by_ext[e] for e in wanted}
    assert sum(out["by_task_type"].values()) == 50
    recipe = out["recipe"]
    assert recipe["region"] == {"type": "ids", "selection": out["id"]} and recipe["exclude_errors"] is False
    assert recipe["import"]["source"] == "ids" and recipe["import"]["given"] == 55

    # Like any saved selection: listed, its recipe re-resolves to its ids, drawable with `sample`, comparable,
    # exportable, combinable, an experiment arm.
    assert out["id"] in {s["id"] for s in client.get(f"/api/datasets/{ds}/selections").json()}
    request = {k: v for k, v in recipe.items() if k not in ("resolved_axes", "population", "import")}
    again = client.post(f"/api/datasets/{ds}/selections/preview", json={**request, "limit": 0}).json()
    assert again["count"] == 50
    drawn = save(client, ds, {"region": recipe["region"], "sample": {"n": 5, "seed": 1}})
    assert len(ids_of(client, drawn["id"])) == 5 and ids_of(client, drawn["id"]) <= ids_of(client, out["id"])
    cmp = client.get("/api/selections/compare", params={"ids": f"{out['id']},{drawn['id']}"}).json()
    assert cmp["overlap"][0]["both"] == 5
    exported = client.get(f"/api/selections/{out['id']}/export", params={"format": "ids"}).text.split()
    assert sorted(exported) == sorted(wanted)
    with session_factory() as session:
        arm = resolve_arm(session, ds, ArmRef(selection=out["id"]))
    assert set(arm.stages[0].tolist()) == ids_of(client, out["id"])

    # Round trip: the export of any selection imports back to the same ids.
    top = save(client, ds, {"region": {"type": "top", "percent": 20, "axes": "both"}})
    ext = client.get(f"/api/selections/{top['id']}/export", params={"format": "ids"}).text.split()
    back = post_import(client, ds, {"ids": ext}).json()
    assert back["matched"] == top["count"] and ids_of(client, back["id"]) == ids_of(client, top["id"])


def test_integer_ids_match_their_text(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    path = tmp_path / "ints.json"
    convs = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    path.write_text(json.dumps([{"id": i, "conversations": convs} for i in (7, 8, 9)]))
    with session_factory() as session:
        ds_id = ingest(session, IngestOptions(name="ints", paths=[path])).dataset_id
        session.commit()
        ds = session.get(Dataset, ds_id)
        assert ds is not None
        sel, m = import_selection(session, ds, ImportRequest(ids=[7, "8", 8, 10]))
        assert (len(m.ids), m.unmatched, m.duplicates, m.examples) == (2, 1, 1, ["10"])
        assert sel.count == 2


def test_llava_records_match_by_id_or_content(
    client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    ds = seeded.dataset_id
    by_ext = sample_ids(session_factory, ds)
    recs = records(seeded)
    by_id = [dict(r) for r in recs[1:11]]  # ids as ingested
    renamed = [{**r, "id": f"other-{k}"} for k, r in enumerate(recs[21:31])]  # ids differ: content decides
    no_id = [{k: v for k, v in r.items() if k != "id"} for r in recs[41:46]]
    moved = dict(recs[52])  # the <image> token at the end instead of the start, extra spaces
    turn = moved["conversations"][0]
    moved["conversations"] = [
        {"from": "user", "value": "  " + turn["value"].replace("<image>\n", "") + " <image>"},
        *moved["conversations"][1:],
    ]
    moved["id"] = "moved"
    # Text-only records (index % 17 == 0) share one content key: two such records take two samples.
    text_only = [{**recs[i], "id": f"t{i}"} for i in (0, 17)]
    unknown = [{"id": "gone", "image": "images/1.jpg", "conversations": [{"from": "human", "value": "never"}]}]
    body = [*by_id, *renamed, *no_id, moved, *text_only, *unknown, by_id[0]]
    r = post_import(client, ds, {"name": "llava subset", "llava": body})
    assert r.status_code == 201, r.text
    out = r.json()
    want = {by_ext[x["id"]] for x in [*recs[1:11], *recs[21:31], *recs[41:46], recs[52]]}
    got = ids_of(client, out["id"])
    assert want <= got and len(got - want) == 2 and out["matched"] == len(want) + 2
    assert got - want == {by_ext[recs[i]["id"]] for i in (0, 17)}  # text-only: the lowest ids with that content
    assert out["matched_by"] == {"id": 10, "content": 18} and out["duplicates"] == 1
    assert out["unmatched"] == 1 and out["unmatched_examples"] == [f"llava[{len(body) - 2}] (id 'gone')"]
    assert out["recipe"]["import"]["source"] == "llava"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"ids": ["a", None]}, "ids[1]: must be a string or an integer"),
        ({"ids": ["a", True]}, "ids[1]: must be a string or an integer"),
        ({"ids": [""]}, "ids[0]: empty id"),
        ({"ids": ["a", {"id": 1}]}, "ids[1]"),
        ({"llava": [{"id": "x"}, "text"]}, "llava[1]: record is not an object"),
        ({"llava": [{"id": 1.5}]}, "llava[0].id"),
        ({"llava": [{"id": "a", "conversations": [{"from": "human", "value": 3}]}]}, "llava[0].conversations[0].value"),
        ({"llava": [{"id": "a", "conversations": [{"from": "bot", "value": "q"}]}]}, "llava[0].conversations[0].from"),
        ({"llava": [{"id": "a", "conversations": "q"}]}, "llava[0].conversations: must be a list"),
        ({"llava": [{"id": "a", "image": "/etc/x.jpg"}]}, "llava[0].image: image path '/etc/x.jpg' is absolute"),
        ({"llava": [{"id": "a", "image": 3}]}, "llava[0].image"),
        ({"llava": [{"image": "a.jpg"}]}, "llava[0]: needs an 'id' or a human turn"),
        ({"ids": ["a"], "llava": [{"id": "a"}]}, "exactly one of"),
        ({}, "exactly one of"),
        ({"ids": ["a"], "extra": 1}, "extra"),
        ({"ids": ["nope", "nada"]}, "nothing matched"),
        ({"llava": [{"id": "nope", "conversations": [{"from": "human", "value": "?"}]}]}, "nothing matched"),
    ],
)
def test_malformed_or_unmatched_input_is_refused_and_creates_nothing(
    client: TestClient, seeded: Seeded, body: dict[str, Any], needle: str
) -> None:
    ds = seeded.dataset_id
    valid_first = records(seeded)[0]["id"]  # a good id before the bad one: still nothing is created
    if "ids" in body and body["ids"] and "nothing" not in needle:
        body = {**body, "ids": [valid_first, *body["ids"]]}
        needle = needle.replace("ids[1]", "ids[2]").replace("ids[0]", "ids[1]")
    r = post_import(client, ds, body)
    assert r.status_code == 422 and needle in str(r.json()["detail"]), r.text
    assert client.get(f"/api/datasets/{ds}/selections").json() == []


def test_unknown_dataset_is_404(client: TestClient, seeded: Seeded) -> None:
    assert post_import(client, 999, {"ids": ["a"]}).status_code == 404


def test_lookup_paths_agree(
    seeded: Seeded, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Few ids go by batched IN / ANY lookups, many by one scan: both find the same samples."""
    by_ext = sample_ids(session_factory, seeded.dataset_id)
    keys = [*list(by_ext)[::3], "missing"]
    monkeypatch.setattr(selection_import, "BATCH", {"sqlite": 7, "postgresql": 7})
    with session_factory() as session:
        ds = session.get(Dataset, seeded.dataset_id)
        assert ds is not None
        scanned = selection_import.lookup_external(session, ds, keys)
        assert len(keys) > ds.n_samples // selection_import.SCAN_FRACTION  # the scan path
        monkeypatch.setattr(selection_import, "SCAN_FRACTION", 10**9)  # force the batched path
        batched = selection_import.lookup_external(session, ds, keys)
    assert scanned == batched == {k: by_ext[k] for k in keys[:-1]}


def test_import_bodies_may_exceed_the_request_limit(
    settings: Settings, engine: Engine, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    small = settings.model_copy(update={"max_request_bytes": 2000})
    ids = list(sample_ids(session_factory, seeded.dataset_id))
    with TestClient(create_app(small, engine)) as c:
        big = c.post(f"/api/datasets/{seeded.dataset_id}/selections/import", json={"ids": ids})
        assert big.status_code == 201 and big.json()["matched"] == 400
        other = c.post(
            f"/api/datasets/{seeded.dataset_id}/selections", json={"region": {"type": "all"}, "x": "x" * 3000}
        )
        assert other.status_code == 413
    tiny = settings.model_copy(update={"max_request_bytes": 2000, "max_import_bytes": 3000})
    with TestClient(create_app(tiny, engine)) as c:
        assert c.post(f"/api/datasets/{seeded.dataset_id}/selections/import", json={"ids": ids}).status_code == 413


def test_file_uploads(client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session]) -> None:
    ds = seeded.dataset_id
    by_ext = sample_ids(session_factory, ds)
    recs = records(seeded)
    wanted = [r["id"] for r in recs[:30]]
    url = f"/api/datasets/{ds}/selections/import/file"

    def upload(data: bytes, **form: str) -> Any:
        return client.post(url, files={"file": ("subset", data)}, data=form)

    text = ("\ufeff" + "\n".join([*wanted, "", "  " + wanted[0] + "  ", "unknown-id"]) + "\n").encode()
    r = upload(text, name="from text")
    assert r.status_code == 201, r.text
    assert (
        r.json()["name"] == "from text"
        and r.json()["matched"] == 30
        and r.json()["unmatched_examples"] == ["unknown-id"]
    )
    assert ids_of(client, r.json()["id"]) == {by_ext[e] for e in wanted}

    r = upload(json.dumps(wanted[:5]).encode())
    assert r.status_code == 201 and r.json()["matched"] == 5 and r.json()["recipe"]["import"]["source"] == "ids"
    renamed = [{**x, "id": f"new-{k}"} for k, x in enumerate(recs[30:40])]
    r = upload(json.dumps(renamed).encode())
    assert r.status_code == 201 and r.json()["matched_by"] == {"id": 0, "content": 10}

    buf = io.BytesIO()
    pq.write_table(pa.table({"id": wanted[:7], "score": list(range(7))}), buf)
    r = upload(buf.getvalue())
    assert r.status_code == 201 and r.json()["matched"] == 7
    # A text file that happens to start with '[' is still read as text when told so.
    r = upload(b"[odd]\n" + wanted[0].encode(), format="text")
    assert r.status_code == 201 and r.json()["matched"] == 1 and r.json()["unmatched_examples"] == ["[odd]"]

    before = len(client.get(f"/api/datasets/{ds}/selections").json())
    buf = io.BytesIO()
    pq.write_table(pa.table({"sample": wanted[:3]}), buf)
    for data, form, needle in [
        (buf.getvalue(), {}, "no 'id' column"),
        (b"PAR1 not really", {}, "not a readable Parquet file"),
        (b'{"ids": ["a"]}', {"format": "json"}, "expected a JSON list"),
        (b"[1, 2", {}, "not valid JSON"),
        (b"\xff\xfe\x00bad", {}, "not UTF-8 text"),
        (b"", {}, "nothing matched"),
        (json.dumps([{"id": "a"}, 5]).encode(), {}, "llava[1]: record is not an object"),
    ]:
        r = upload(data, **form)
        assert r.status_code == 422 and needle in r.json()["detail"], (needle, r.text)
    assert len(client.get(f"/api/datasets/{ds}/selections").json()) == before
    assert client.post("/api/datasets/999/selections/import/file", files={"file": ("x", b"a")}).status_code == 404
