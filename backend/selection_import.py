"""Import a subset made elsewhere (a list of external ids, or LLaVA records) as a saved selection.

Input is validated as a whole before anything is written: one malformed entry refuses the import, naming its
index and field (``llava[3].conversations[0].value``), and nothing is created. Ids that name no sample are
reported (count and examples), not fatal, unless nothing matches (then nothing is created either).

Matching:

- ``ids``: external ids (the LLaVA ``id`` as ingested; numbers are compared as their decimal text). Repeated ids
  count once.
- ``llava``: by ``id`` first; a record whose id is missing or names no sample is matched by *content*: its image
  (path(s), normalised as ingest does) and its first human question, compared with the ``<image>`` token removed
  and whitespace collapsed. Several records with the same content key take distinct samples with that key, lowest
  id first, while there are any.

The saved recipe is ``{region: {type: "ids", selection: <its own id>}, exclude_errors: false, ...}`` plus an
``import`` block (what was given and matched), so the imported subset resolves, draws, compares, exports and
serves as an experiment arm like any other selection.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from backend.ingest import ROLES, check_relative_path
from backend.models import Dataset, Selection
from backend.regions import IdsRegion
from backend.schemas import SelectionOut
from backend.selection_combine import ids_digest, sorted_unique
from backend.selections import SelectionError, SelectionRequest, ids_to_bytes
from backend.space import is_postgres

IdArray = npt.NDArray[np.int32]
MAX_EXAMPLES = 20
SCAN_FRACTION = 8  # look up more than n_samples / 8 ids by one scan of the dataset instead of batches
BATCH = {"sqlite": 5_000, "postgresql": 50_000}  # SQLite allows 32766 bound variables per statement
ContentKey = tuple[tuple[str, ...], str]
# (image, first human question) of a stored sample, per dialect; roles are stored normalised to human/gpt.
CONTENT_SQL = {
    "postgresql": (
        "image::text",
        "(SELECT t ->> 'value' FROM json_array_elements(conversations) t WHERE t ->> 'from' = 'human' LIMIT 1)",
    ),
    "sqlite": (
        "image",
        "(SELECT json_extract(t.value, '$.value') FROM json_each(samples.conversations) t "
        "WHERE json_extract(t.value, '$.from') = 'human' LIMIT 1)",
    ),
}


class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    ids: list[Any] | None = Field(default=None, description="external sample ids (strings or integers)")
    llava: list[Any] | None = Field(default=None, description="LLaVA records: {id?, image?, conversations?}")

    @model_validator(mode="after")
    def _one_source(self) -> ImportRequest:
        if (self.ids is None) == (self.llava is None):
            raise ValueError("give exactly one of 'ids' (external ids) or 'llava' (records)")
        return self


class SelectionImportOut(SelectionOut):
    matched: int
    unmatched: int
    unmatched_examples: list[str]
    duplicates: int = 0
    matched_by: dict[str, int] = Field(default_factory=dict)


class ImportRefused(SelectionError):
    """Malformed input, or input that matches nothing: HTTP 422, nothing created."""


@dataclass
class Matched:
    ids: IdArray  # sorted, unique sample ids
    given: int
    unmatched: int
    examples: list[str]
    duplicates: int
    matched_by: dict[str, int] = field(default_factory=dict)


@dataclass
class _Record:
    index: int
    external_id: str | None
    key: ContentKey | None


# -- parsing -----------------------------------------------------------------------------------------------------


def external_id(value: Any, where: str) -> str:
    """An id as ingest stores it (``str(raw)``); ImportRefused naming `where` for anything else."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ImportRefused(f"{where}: must be a string or an integer, got {type(value).__name__}")
    text = str(value)
    if not text:
        raise ImportRefused(f"{where}: empty id")
    return text


def question_key(text: str) -> str:
    return " ".join(text.replace("<image>", " ").split())


def _image_key(image: Any, where: str) -> tuple[str, ...]:
    if image is None or image == []:
        return ()
    paths = [image] if isinstance(image, str) else image
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ImportRefused(f"{where}: must be a path or a list of paths, got {type(image).__name__}")
    try:
        return tuple(check_relative_path(p) for p in paths)
    except ValueError as exc:
        raise ImportRefused(f"{where}: {exc}") from None


def _first_question(convs: Any, where: str) -> str | None:
    if not isinstance(convs, list):
        raise ImportRefused(f"{where}: must be a list of turns, got {type(convs).__name__}")
    first = None
    for t, turn in enumerate(convs):
        if not isinstance(turn, dict):
            raise ImportRefused(f"{where}[{t}]: turn is not an object (got {type(turn).__name__})")
        role, value = turn.get("from"), turn.get("value")
        if not isinstance(role, str) or role not in ROLES:
            raise ImportRefused(f"{where}[{t}].from: unknown role {role!r} (expected human/gpt or user/assistant)")
        if not isinstance(value, str):
            raise ImportRefused(f"{where}[{t}].value: must be a string, got {type(value).__name__}")
        if first is None and ROLES[role] == "human":
            first = value
    return first


def parse_llava(records: Sequence[Any]) -> list[_Record]:
    out = []
    for i, rec in enumerate(records):
        where = f"llava[{i}]"
        if not isinstance(rec, dict):
            raise ImportRefused(f"{where}: record is not an object (got {type(rec).__name__})")
        rid = None if rec.get("id") in (None, "") else external_id(rec["id"], f"{where}.id")
        image = _image_key(rec.get("image"), f"{where}.image")
        convs = rec.get("conversations")
        question = None if convs is None else _first_question(convs, f"{where}.conversations")
        if rid is None and question is None:
            raise ImportRefused(f"{where}: needs an 'id' or a human turn in 'conversations' to match by")
        out.append(_Record(i, rid, None if question is None else (image, question_key(question))))
    return out


def parse_upload(data: bytes, name: str | None, fmt: str = "auto") -> ImportRequest:
    """An uploaded file as an import request: ``text`` (one id per line), ``json`` (a list of ids or of LLaVA
    records) or ``parquet`` (its ``id`` column); ``auto`` tells them apart by their first bytes."""
    if fmt == "auto":
        fmt = "parquet" if data[:4] == b"PAR1" else "json" if data.lstrip()[:1] == b"[" else "text"
    if fmt == "parquet":
        try:
            pf = pq.ParquetFile(io.BytesIO(data))
            names = pf.schema_arrow.names
            if "id" not in names:
                raise ImportRefused(f"file: the Parquet file has no 'id' column (it has {names[:20]})")
            return ImportRequest(name=name, ids=pf.read(columns=["id"]).column("id").to_pylist())
        except (pa.ArrowException, OSError) as exc:
            raise ImportRefused(f"file: not a readable Parquet file ({exc})") from None
    if fmt == "json":
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ImportRefused(f"file: not valid JSON ({exc})") from None
        if not isinstance(obj, list):
            raise ImportRefused(f"file: expected a JSON list of ids or of LLaVA records, got {type(obj).__name__}")
        if obj and isinstance(obj[0], dict):
            return ImportRequest(name=name, llava=obj)
        return ImportRequest(name=name, ids=obj)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRefused(f"file: not UTF-8 text (byte {exc.start})") from None
    return ImportRequest(name=name, ids=[line.strip() for line in text.splitlines() if line.strip()])


# -- lookups -----------------------------------------------------------------------------------------------------


def _batches(session: Session, sql: str, params: Sequence[Any], size: int = 50_000) -> Iterator[list[Any]]:
    """Rows straight from the DBAPI cursor, in lists of `size` (`{p}` is the driver's placeholder)."""
    dbapi = session.connection().connection.dbapi_connection
    assert dbapi is not None
    cur = dbapi.cursor()
    try:
        cur.execute(sql.replace("{p}", "%s" if is_postgres(session) else "?"), tuple(params))
        while rows := cur.fetchmany(size):
            yield list(rows)
    finally:
        cur.close()


def lookup_external(session: Session, ds: Dataset, keys: Sequence[str]) -> dict[str, int]:
    """external id -> sample id for those of `keys` (distinct) that name a sample of `ds`."""
    if not keys:
        return {}
    if len(keys) > ds.n_samples // SCAN_FRACTION:
        every: dict[str, int] = {}
        for rows in _batches(session, "SELECT external_id, id FROM samples WHERE dataset_id = {p}", (ds.id,)):
            every.update(rows)  # dict.update over (key, value) tuples runs in C
        return {k: every[k] for k in keys if k in every}
    found: dict[str, int] = {}
    pg = is_postgres(session)
    step = BATCH["postgresql" if pg else "sqlite"]
    for lo in range(0, len(keys), step):
        batch = list(keys[lo : lo + step])
        if pg:
            where, params = "= ANY({p})", [ds.id, batch]
        else:
            where, params = f"IN ({', '.join('?' for _ in batch)})", [ds.id, *batch]
        sql = f"SELECT external_id, id FROM samples WHERE dataset_id = {{p}} AND external_id {where}"
        for rows in _batches(session, sql, params):
            found.update(rows)
    return found


def content_index(session: Session, ds: Dataset, wanted: set[ContentKey]) -> dict[ContentKey, list[int]]:
    """Content key -> sample ids (ascending) for the keys in `wanted`, by one scan of the dataset."""
    image, question = CONTENT_SQL["postgresql" if is_postgres(session) else "sqlite"]
    sql = f"SELECT id, {image}, {question} FROM samples WHERE dataset_id = {{p}} ORDER BY id"
    out: dict[ContentKey, list[int]] = defaultdict(list)
    for rows in _batches(session, sql, (ds.id,)):
        for sid, raw_image, q in rows:
            if q is None:
                continue
            img = orjson.loads(raw_image) if raw_image else None
            key = (() if img is None else (img,) if isinstance(img, str) else tuple(img), question_key(q))
            if key in wanted:
                out[key].append(int(sid))
    return out


# -- matching ----------------------------------------------------------------------------------------------------


def match_ids(session: Session, ds: Dataset, raw: Sequence[Any]) -> Matched:
    # All non-empty strings is the usual case: checked in one pass before the per-item path that names the culprit.
    keys = (
        list(raw)
        if all(type(v) is str and v for v in raw)
        else [external_id(v, f"ids[{i}]") for i, v in enumerate(raw)]
    )
    distinct = list(dict.fromkeys(keys))
    found = lookup_external(session, ds, distinct)
    missing = [k for k in distinct if k not in found]
    ids = sorted_unique(np.fromiter(found.values(), dtype=np.int32, count=len(found)))
    return Matched(ids, len(keys), len(missing), missing[:MAX_EXAMPLES], len(keys) - len(distinct), {"id": len(ids)})


def match_llava(session: Session, ds: Dataset, raw: Sequence[Any]) -> Matched:
    records = parse_llava(raw)
    by_id = lookup_external(session, ds, list(dict.fromkeys(r.external_id for r in records if r.external_id)))
    chosen: set[int] = set()
    n_id = n_content = duplicates = 0
    seen_ids: set[str] = set()
    rest: list[_Record] = []
    for r in records:
        if r.external_id is not None and r.external_id in by_id:
            if r.external_id in seen_ids:
                duplicates += 1
                continue
            seen_ids.add(r.external_id)
            chosen.add(by_id[r.external_id])
            n_id += 1
        else:
            rest.append(r)
    index = content_index(session, ds, {r.key for r in rest if r.key is not None}) if rest else {}
    next_free: dict[ContentKey, int] = defaultdict(int)  # per key: candidates before this one are taken
    unmatched: list[str] = []
    for r in rest:
        candidates = index.get(r.key, []) if r.key is not None else []
        k = next_free[r.key] if r.key is not None else 0
        while k < len(candidates) and candidates[k] in chosen:
            k += 1
        if k < len(candidates):
            assert r.key is not None
            chosen.add(candidates[k])
            next_free[r.key] = k + 1
            n_content += 1
        elif candidates:
            duplicates += 1  # same content as earlier records, and no other sample left with it
        else:
            unmatched.append(f"llava[{r.index}]" + (f" (id {r.external_id!r})" if r.external_id else ""))
    ids = sorted_unique(np.fromiter(chosen, dtype=np.int32, count=len(chosen)))
    return Matched(
        ids, len(records), len(unmatched), unmatched[:MAX_EXAMPLES], duplicates, {"id": n_id, "content": n_content}
    )


def import_selection(session: Session, ds: Dataset, req: ImportRequest) -> tuple[Selection, Matched]:
    """Match the request's ids or records and save them as a selection (flushed, not committed)."""
    m = match_ids(session, ds, req.ids) if req.ids is not None else match_llava(session, ds, req.llava or [])
    if len(m.ids) == 0:
        shown = ", ".join(m.examples[:5])
        raise ImportRefused(
            f"nothing matched: none of the {m.given} given {'ids' if req.ids is not None else 'records'} names a "
            f"sample of dataset {ds.id}" + (f" (e.g. {shown})" if shown else "") + "; nothing was created"
        )
    sel = Selection(dataset_id=ds.id, name=req.name, recipe={}, count=len(m.ids), sample_ids=ids_to_bytes(m.ids))
    session.add(sel)
    session.flush()
    recipe = SelectionRequest(region=IdsRegion(selection=sel.id), exclude_errors=False).model_dump(
        mode="json", exclude={"name"}
    )
    recipe["population"] = ds.n_samples
    recipe["import"] = {
        "source": "ids" if req.ids is not None else "llava",
        "given": m.given,
        "matched": len(m.ids),
        "unmatched": m.unmatched,
        "duplicates": m.duplicates,
        "matched_by": m.matched_by,
        "ids_sha256": ids_digest(m.ids),
    }
    sel.recipe = recipe
    session.flush()
    return sel, m
