"""Dataset ingest: LLaVA JSON / JSONL files into the store, validated, in one transaction."""

from __future__ import annotations

import contextlib
import posixpath
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

import ijson
import orjson
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from backend.models import Dataset
from backend.task_types import Rule, TaskTyper

ROLES = {"human": "human", "gpt": "gpt", "user": "human", "assistant": "gpt"}
RESERVED_KEYS = ("id", "image", "conversations")
BATCH_ROWS = 5000
MAX_ERRORS = 20
SAMPLE_COLUMNS = (
    "dataset_id",
    "position",
    "external_id",
    "image",
    "conversations",
    "task_type",
    "n_turns",
    "question_chars",
    "answer_chars",
    "metadata",
)


class IngestError(ValueError):
    """Input that cannot be ingested; the message says which file, record and field."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        text = self.problems[0] if len(self.problems) == 1 else "\n".join(self.problems)
        super().__init__(text)


class _RecordError(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        self.field = field
        self.message = message


@dataclass
class IngestOptions:
    name: str
    paths: Sequence[Path]
    image_root: Path | None = None
    task_type_field: str | None = None
    task_type_rules: Sequence[Rule] = ()
    task_type_prompts: dict[str, str] = field(default_factory=dict)
    task_type_from_file: bool | None = None  # None: when several files are given
    dedupe: bool = False


@dataclass
class IngestProgress:
    """Where an ingest stands, reported between batches; the callback may raise to stop it (nothing is kept)."""

    samples: int  # records read so far (valid or not)
    bytes_done: int  # of the input files, read so far
    bytes_total: int


class _Meter:
    """The file :func:`iter_records` is reading, so a caller can tell how far into it the parser is."""

    fh: IO[bytes] | None = None

    def tell(self) -> int:
        try:
            return self.fh.tell() if self.fh is not None and not self.fh.closed else 0
        except (OSError, ValueError):
            return 0


@dataclass
class IngestReport:
    dataset_id: int
    n_samples: int
    task_types: dict[str, int]
    duplicates_dropped: int
    seconds: float


def check_relative_path(path: str) -> str:
    """The normalised form of an image path that must stay inside its root."""
    if not path or "\x00" in path:
        raise ValueError("empty image path" if not path else "image path contains a NUL byte")
    unix = path.replace("\\", "/")
    if unix.startswith("/") or (len(unix) > 1 and unix[1] == ":"):
        raise ValueError(f"image path {path!r} is absolute; it must be relative to the image root")
    # normpath only changes a path with an empty, "." or ".." segment or a trailing slash; most have none
    # (this runs once per record: ~2 s per million).
    plain = not unix.startswith(".") and "/." not in unix and "//" not in unix and not unix.endswith("/")
    norm = unix if plain else posixpath.normpath(unix)
    if norm == ".." or norm.startswith("../"):
        raise ValueError(f"image path {path!r} climbs out of the image root")
    return norm


def _iter_json_list(fh: IO[bytes], where: str) -> Iterator[tuple[int, Any]]:
    index = 0
    try:
        for record in ijson.items(fh, "item", use_float=True):
            yield index, record
            index += 1
    except ijson.IncompleteJSONError as exc:
        raise IngestError([f"{where}: record {index}: truncated or invalid JSON ({_short(exc)})"]) from exc
    except ijson.JSONError as exc:
        raise IngestError([f"{where}: record {index}: invalid JSON ({_short(exc)})"]) from exc


def _short(exc: Exception) -> str:
    # yajl's messages carry a multi-line caret diagram; the first line is the useful part.
    return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__


def _iter_jsonl(fh: IO[bytes], where: str) -> Iterator[tuple[int, Any]]:
    index = 0
    for lineno, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise IngestError([f"{where}: record {index} (line {lineno}): invalid JSON ({exc})"]) from exc
        yield index, record
        index += 1


def _looks_like_jsonl(fh: IO[bytes]) -> bool:
    """A .json file is read as JSONL when its first two lines are each a whole object."""
    first, second = fh.readline(), fh.readline()
    while second and not second.strip():
        second = fh.readline()
    fh.seek(0)
    try:
        return isinstance(orjson.loads(first), dict) and isinstance(orjson.loads(second), dict)
    except orjson.JSONDecodeError:
        return False


def iter_records(path: Path, meter: _Meter | None = None) -> Iterator[tuple[int, Any]]:
    """(index, parsed record) for a LLaVA JSON list or a JSONL file, streamed (`meter` follows the open file)."""
    where = str(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise IngestError([f"{where}: cannot open: {exc.strerror}"]) from exc
    if meter is not None:
        meter.fh = fh
    with fh:
        head = fh.read(4096).lstrip()
        fh.seek(0)
        if not head:
            raise IngestError([f"{where}: file is empty"])
        first = head[:1]
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            yield from _iter_jsonl(fh, where)
        elif first == b"[":
            yield from _iter_json_list(fh, where)
        elif first == b"{":
            # A JSON object at the top level is an error unless its first line is a whole record (JSONL).
            if not _looks_like_jsonl(fh):
                raise IngestError(
                    [
                        f"{where}: top level is an object; expected a list of records"
                        " (or JSONL, one record per line, named .jsonl)"
                    ]
                )
            yield from _iter_jsonl(fh, where)
        else:
            raise IngestError(
                [f"{where}: top level is not a list of records (starts with {first.decode(errors='replace')!r})"]
            )


@dataclass
class _Row:
    external_id: str
    image: Any
    conversations: list[dict[str, str]]
    task_type: str
    n_turns: int
    question_chars: int
    answer_chars: int
    meta: dict[str, Any]


def _normalise(record: Any, index: int, stem: str, typer: TaskTyper) -> _Row:
    if not isinstance(record, dict):
        raise _RecordError(None, f"record is not an object (got {type(record).__name__})")
    raw_id = record.get("id")
    external_id = f"{stem}:{index}" if raw_id is None or raw_id == "" else str(raw_id)

    convs = record.get("conversations")
    if convs is None:
        raise _RecordError("conversations", "missing")
    if not isinstance(convs, list):
        raise _RecordError("conversations", f"must be a list of turns, got {type(convs).__name__}")
    if not convs:
        raise _RecordError("conversations", "empty")
    turns: list[dict[str, str]] = []
    human: list[str] = []
    n_answers = q_chars = a_chars = 0
    for t, turn in enumerate(convs):
        # The happy path first, the location string only for an error: this loop runs ~50M times at 10M samples.
        is_dict = isinstance(turn, dict)
        role = turn.get("from") if is_dict else None
        value = turn.get("value") if is_dict else None
        norm_role = ROLES.get(role) if isinstance(role, str) else None
        if norm_role is None or not isinstance(value, str):
            _bad_turn(turn, t)
        turns.append({"from": norm_role, "value": value})
        if norm_role == "human":
            human.append(value)
            q_chars += len(value)
        else:
            n_answers += 1
            a_chars += len(value)

    image = _normalise_image(record.get("image"))

    task_type = typer(record, "\n".join(human), image is not None, stem)
    meta = {k: v for k, v in record.items() if k not in RESERVED_KEYS}
    return _Row(external_id, image, turns, task_type, n_answers, q_chars, a_chars, meta)


def _bad_turn(turn: Any, t: int) -> NoReturn:
    """Raise the error that says what is wrong with turn ``t``."""
    where = f"conversations[{t}]"
    if not isinstance(turn, dict):
        raise _RecordError(where, f"turn is not an object (got {type(turn).__name__})")
    role = turn.get("from")
    if role is None:
        raise _RecordError(f"{where}.from", "missing")
    if not isinstance(role, str) or role not in ROLES:
        raise _RecordError(f"{where}.from", f"unknown role {role!r} (expected human/gpt or user/assistant)")
    value = turn.get("value")
    if value is None:
        raise _RecordError(f"{where}.value", "missing")
    raise _RecordError(f"{where}.value", f"must be a string, got {type(value).__name__}")


def _normalise_image(image: Any) -> str | list[str] | None:
    try:
        if image is None or image == []:
            return None
        if isinstance(image, str):
            return check_relative_path(image)
        if isinstance(image, list):
            if not all(isinstance(p, str) for p in image):
                raise ValueError("a list of images must hold only strings")
            return [check_relative_path(p) for p in image]
    except ValueError as exc:
        raise _RecordError("image", str(exc)) from None
    raise _RecordError("image", f"must be a path or a list of paths, got {type(image).__name__}")


def _describe(path: Path, index: int, record: Any, err: _RecordError) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    who = f"record {index}" + (f" (id {rid!r})" if rid is not None else "")
    fld = f": field '{err.field}'" if err.field else ""
    return f"{path}: {who}{fld}: {err.message}"


def _flush(session: Session, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        # COPY is several times faster than executemany on PostgreSQL.
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cols = ", ".join(f'"{c}"' for c in SAMPLE_COLUMNS)
        with raw.cursor() as cur, cur.copy(f"COPY samples ({cols}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join("?" for _ in SAMPLE_COLUMNS)
        conn.exec_driver_sql(f"INSERT INTO samples ({', '.join(SAMPLE_COLUMNS)}) VALUES ({marks})", rows)
    rows.clear()


class _Writer:
    """Batches into the store. On PostgreSQL each batch's COPY runs on a thread while the next batch is parsed:
    the server's share of an ingest (~20%, the client waiting on it) then overlaps the client's parsing. Only
    one thread uses the session at a time: a batch waits for the one before it, and ``close`` for the last."""

    def __init__(self, session: Session) -> None:
        self.session = session
        pg = session.connection().dialect.name == "postgresql"
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="qspace-copy") if pg else None
        self.pending: Future[None] | None = None

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        """Hand over the rows (the list is emptied for the next batch)."""
        batch = rows.copy()
        rows.clear()
        if self.pool is None:
            _flush(self.session, batch)
            return
        self.wait()
        self.pending = self.pool.submit(_flush, self.session, batch)

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()  # a COPY that failed raises here

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)

    def abandon(self) -> None:
        """Wait for the COPY in flight without raising its error: the ingest is failing for another reason."""
        with contextlib.suppress(Exception):
            self.close()


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def precheck(session: Session, opts: IngestOptions) -> None:
    """The refusals that need no reading of the files (a name, the files being there): IngestError, at once."""
    name = opts.name.strip()
    if not name:
        raise IngestError(["dataset name must not be empty"])
    existing = session.scalar(select(Dataset.id).where(Dataset.name == name))
    if existing is not None:
        raise IngestError([f"dataset name {name!r} is taken (dataset {existing})"])
    if not opts.paths:
        raise IngestError(["no input files given"])
    for p in opts.paths:
        if not Path(p).is_file():
            raise IngestError([f"{p}: no such file"])


def ingest(
    session: Session, opts: IngestOptions, progress: Callable[[IngestProgress], None] | None = None
) -> IngestReport:
    """Validate and insert every record of `opts.paths` as one new dataset.

    The caller owns the transaction: on IngestError nothing must be committed. `progress` is called every
    BATCH_ROWS records and at the end of each file; whatever it raises ends the ingest (a cancelled job).
    """
    start = time.perf_counter()
    precheck(session, opts)
    name = opts.name.strip()
    paths = [Path(p) for p in opts.paths]
    image_root = (opts.image_root or paths[0].parent).expanduser().resolve()

    from_file = opts.task_type_from_file if opts.task_type_from_file is not None else len(paths) > 1
    typer = TaskTyper(opts.task_type_field, opts.task_type_rules, file_names=from_file)

    dataset = Dataset(
        name=name,
        image_root=str(image_root),
        sources=[str(p.resolve()) for p in paths],
        task_type_prompts={},
        n_samples=0,
    )
    session.add(dataset)
    session.flush()

    problems: list[str] = []
    seen: set[str] = set()
    duplicates: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    rows: list[tuple[Any, ...]] = []
    position = read = 0
    sizes = [p.stat().st_size for p in paths]
    meter = _Meter()

    def report(file_no: int) -> None:
        if progress is not None:
            progress(IngestProgress(read, sum(sizes[:file_no]) + meter.tell(), sum(sizes)))

    dataset_id = dataset.id  # read here: the session is the COPY thread's while a batch is written
    writer = _Writer(session)
    try:
        for file_no, path in enumerate(paths):
            stem = path.stem
            for index, record in iter_records(path, meter):
                read += 1
                if read % BATCH_ROWS == 0:
                    report(file_no)
                try:
                    row = _normalise(record, index, stem, typer)
                except _RecordError as err:
                    problems.append(_describe(path, index, record, err))
                    if len(problems) >= MAX_ERRORS:
                        problems.append(f"stopped after {MAX_ERRORS} problems")
                        raise IngestError(problems) from None
                    continue
                if row.external_id in seen:
                    duplicates[row.external_id] += 1
                    continue
                seen.add(row.external_id)
                if problems or (duplicates and not opts.dedupe):
                    continue  # keep validating, but this ingest will be refused
                counts[row.task_type] += 1
                rows.append(
                    (
                        dataset_id,
                        position,
                        row.external_id,
                        None if row.image is None else _dumps(row.image),
                        _dumps(row.conversations),
                        row.task_type,
                        row.n_turns,
                        row.question_chars,
                        row.answer_chars,
                        _dumps(row.meta),
                    )
                )
                position += 1
                if len(rows) >= BATCH_ROWS:
                    writer.write(rows)
            report(file_no + 1)
        if duplicates and not opts.dedupe:
            shown = ", ".join(repr(k) for k in list(duplicates)[:20])
            more = "" if len(duplicates) <= 20 else f" and {len(duplicates) - 20} more"
            problems.append(f"duplicate ids ({len(duplicates)}): {shown}{more}; pass --dedupe to keep the first")
        if problems:
            raise IngestError(problems)
        if position == 0:
            raise IngestError([f"{', '.join(map(str, paths))}: no records"])
        writer.write(rows)
        writer.close()  # the last COPY done before the caller commits
    except BaseException:
        writer.abandon()  # no COPY left running when the caller rolls back
        raise

    present = set(counts)
    prompts = {k: v for k, v in typer.prompts.items() if k in present}
    prompts.update({k: v for k, v in opts.task_type_prompts.items() if k in present})
    dataset.n_samples = position
    dataset.task_type_prompts = prompts
    dataset.task_type_counts = dict(counts)
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        # Fresh statistics, so the planner does not treat a table that just grew by 665k rows as empty.
        session.execute(text("ANALYZE samples"))
    return IngestReport(
        dataset_id=dataset.id,
        n_samples=position,
        task_types=dict(counts),
        duplicates_dropped=sum(duplicates.values()),
        seconds=time.perf_counter() - start,
    )
