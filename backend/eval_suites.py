"""The eval suite registry: which suites an experiment may name, and what each holds.

Suites come from two places, in this order: the files (or folders of ``*.jsonl`` files) configured by
``QSPACE_EVAL_SUITES``, then every ``*.jsonl`` under ``data_dir/eval_suites/`` (where the demo writes its own).
A suite is named by its file's stem; when two files share a stem, the later one is named by its path relative to
its root without the suffix (``svit/clean``). An experiment names suites only by these names, so the API never
reads a file it was not configured to read. The format and its checks are :mod:`backend.eval_specs`.

lmms-eval tasks are suites too, named ``lmms:<task>``: those ``QSPACE_LMMS_TASKS`` lists and those the task YAMLs
under ``QSPACE_LMMS_INCLUDE`` define (listed after the files; :mod:`backend.lmms_specs`).

Loaded suites are cached per process by (path, size, mtime): a changed file is read again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.eval_specs import EvalSuite, EvalSuiteError, load_eval_suite
from backend.lmms_specs import UnknownLmmsTask, find_lmms_suite, is_lmms_suite, lmms_suites
from backend.settings import Settings

__all__ = ["SuiteEntry", "UnknownSuite", "find_suite", "list_suites", "suite_entries", "suite_types"]

SUITES_DIR = "eval_suites"


class UnknownSuite(LookupError):
    """A suite name the registry does not list (HTTP 422: it is a field of the request)."""


@dataclass(frozen=True)
class SuiteEntry:
    name: str
    path: Path


_cache: dict[tuple[str, int, int], EvalSuite | EvalSuiteError] = {}
_lock = threading.Lock()


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if root.is_dir():
        return sorted(p for p in root.rglob("*.jsonl") if p.is_file())
    return []


def suite_entries(settings: Settings) -> list[SuiteEntry]:
    """Every suite file the registry lists, named (configured ones first)."""
    roots = [Path(p).expanduser() for p in settings.eval_suites] + [settings.data_dir / SUITES_DIR]
    out: list[SuiteEntry] = []
    names: set[str] = set()
    seen: set[Path] = set()
    for root in roots:
        for path in _files(root):
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            name = path.stem
            if name in names and root.is_dir():
                name = path.relative_to(root).with_suffix("").as_posix()
            if name in names:
                continue  # a configured file shadows a same-named one in the data directory
            names.add(name)
            out.append(SuiteEntry(name, real))
    return out


def _load(entry: SuiteEntry) -> EvalSuite:
    """The suite of `entry` (cached by path, size and mtime); EvalSuiteError when malformed."""
    try:
        st = entry.path.stat()
    except OSError as e:
        raise EvalSuiteError(entry.path, 0, "", f"cannot read: {e.strerror or e}") from None
    key = (str(entry.path), st.st_size, st.st_mtime_ns)
    with _lock:
        hit = _cache.get(key)
    if hit is None:
        try:
            hit = load_eval_suite(entry.path, name=entry.name)
        except EvalSuiteError as e:
            hit = e
        with _lock:
            _cache[key] = hit
    if isinstance(hit, EvalSuiteError):
        raise hit
    return hit


def suite_types(suite: EvalSuite) -> list[str]:
    """The item types a suite has (sorted), for per-type figures."""
    return sorted({it.type for it in suite.items if it.type is not None})


def describe(entry: SuiteEntry) -> dict[str, Any]:
    """What ``GET /api/eval_suites`` lists of one suite; a malformed one says why in ``error``."""
    try:
        suite = _load(entry)
    except EvalSuiteError as e:
        return {
            "name": entry.name,
            "path": str(entry.path),
            "n_items": 0,
            "metrics": [],
            "types": [],
            "digest": None,
            "error": str(e),
        }
    return {**suite.describe(), "types": suite_types(suite), "error": None}


def list_suites(settings: Settings) -> list[dict[str, Any]]:
    return [describe(e) for e in suite_entries(settings)] + lmms_suites(settings.lmms_tasks, settings.lmms_include)


def find_suite(settings: Settings, name: str) -> EvalSuite:
    """The suite called `name`: UnknownSuite when none is, EvalSuiteError (file, line, field) when malformed."""
    if is_lmms_suite(name):
        try:
            return find_lmms_suite(settings.lmms_tasks, settings.lmms_include, name)
        except UnknownLmmsTask as exc:
            raise UnknownSuite(str(exc)) from None
    entries = suite_entries(settings)
    for entry in entries:
        if entry.name == name:
            return _load(entry)
    known = ", ".join(e.name for e in entries) or "none (set QSPACE_EVAL_SUITES or add files to data_dir/eval_suites)"
    raise UnknownSuite(f"eval.suites: unknown suite {name!r} (known: {known})")
