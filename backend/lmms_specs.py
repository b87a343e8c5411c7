"""lmms-eval tasks as eval suites, without lmms-eval: their names, their task files and their digests.

An experiment names an lmms-eval task as the suite ``lmms:<task>`` (``lmms:pope``, ``lmms:gqa``). The worker runs it
through lmms-eval (:mod:`workers.evaluation.lmms`); the API only lists and checks it, reading the task's YAML files
as text: it never imports lmms-eval (which may not even be installed where the API runs). Two kinds of task:

- **local**: a task YAML under one of the include folders (``QSPACE_LMMS_INCLUDE``, lmms-eval's ``--include_path``):
  every ``*.yaml`` whose ``task`` (after its ``include:`` chain) is a string. The suite's digest covers the YAML
  chain, the ``*.py`` files beside the task YAML (its ``!function`` helpers) and the local data files its
  ``dataset_kwargs.data_files`` name (a relative path counts from the YAML's folder, as lmms-eval reads it), so a
  job refuses a task that changed since its experiment was created.
- **built-in**: a task name listed in ``QSPACE_LMMS_TASKS`` that no include folder defines, resolved by lmms-eval's
  own task index on the worker (its data comes from the Hugging Face cache there). The API cannot check such a
  name; a job naming a task lmms-eval does not know fails with lmms-eval's message. Its digest covers the name only.

Every lmms suite yields one metric, ``accuracy``: per item, the score the task's first metric gives it (1/0, or a
soft score such as VQA accuracy; a metric whose per-item value is a dict counts its ``score_key``, default
``score``), averaged over items. lmms-eval's own aggregates come back beside it in the worker's result.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from backend.eval_specs import ACCURACY, EvalSuite, EvalSuiteError

__all__ = [
    "BUILTIN_PATH",
    "LMMS_PREFIX",
    "LmmsSuite",
    "UnknownLmmsTask",
    "find_lmms_suite",
    "is_lmms_suite",
    "lmms_suites",
    "lmms_task_digest",
    "local_task_index",
    "split_lmms_name",
]

LMMS_PREFIX = "lmms:"
BUILTIN_PATH = "lmms-eval:"  # the ``path`` of a built-in task's suite: this prefix + the task name
LOCAL_BUILDERS = frozenset({"csv", "json", "parquet", "text", "pandas", "arrow"})  # lmms-eval resolves their files
IGNORED_DIRS = frozenset({"__pycache__", ".ipynb_checkpoints"})


class UnknownLmmsTask(LookupError):
    """An ``lmms:`` name that neither QSPACE_LMMS_TASKS nor an include folder lists."""


@dataclass(frozen=True)
class LmmsSuite(EvalSuite):
    """An lmms-eval task in the shape of an eval suite. ``items`` stays empty (the documents live in the task's
    dataset and are read by lmms-eval on the worker); ``n_docs`` counts a local JSON/JSONL test split, 0 when
    unknown."""

    task: str = ""
    yaml_path: str | None = None  # None: a built-in task
    n_docs: int = 0
    output_type: str | None = None

    @property
    def metrics(self) -> list[str]:
        return [ACCURACY]

    def n_items(self, metric: str) -> int:
        return self.n_docs if metric == ACCURACY else 0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "n_items": self.n_docs, "metrics": self.metrics,
                "digest": self.digest}


def is_lmms_suite(name: str) -> bool:
    return name.startswith(LMMS_PREFIX)


def split_lmms_name(name: str) -> str:
    """The task of ``lmms:<task>``."""
    task = name[len(LMMS_PREFIX) :] if is_lmms_suite(name) else ""
    if not task.strip():
        raise UnknownLmmsTask(f"eval.suites: {name!r} names no lmms-eval task (expected lmms:<task>)")
    return task


# -- reading task YAMLs as lmms-eval does, without its import machinery


class _TaskLoader(yaml.SafeLoader):
    """A safe loader that keeps ``!function module.name`` as text (lmms-eval imports it; we only read)."""


def _function_tag(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    return f"!function {loader.construct_scalar(node)}"


_TaskLoader.add_constructor("!function", _function_tag)


@dataclass
class _TaskFile:
    config: dict[str, Any]
    chain: list[Path] = field(default_factory=list)  # the YAML, then the files it includes


def _read_yaml(path: Path, depth: int = 0) -> _TaskFile:
    """The config of a task YAML with its ``include:`` chain merged (later keys win, as lmms-eval merges)."""
    if depth > 8:
        raise EvalSuiteError(path, 0, "include", "includes nest deeper than 8 files (a cycle?)")
    try:
        loaded = yaml.load(path.read_bytes(), Loader=_TaskLoader)  # a SafeLoader subclass
    except OSError as e:
        raise EvalSuiteError(path, 0, "", f"cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise EvalSuiteError(path, line, "", f"not YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(loaded, dict):
        raise EvalSuiteError(path, 0, "", "not a mapping of task settings")
    chain = [path]
    includes = loaded.pop("include", None)
    if includes is None:
        return _TaskFile(loaded, chain)
    merged: dict[str, Any] = {}
    for inc in reversed([includes] if isinstance(includes, str) else list(includes)):
        inc_path = Path(str(inc))
        if not inc_path.is_file():
            inc_path = path.parent / inc_path
        sub = _read_yaml(inc_path, depth + 1)
        merged.update(sub.config)
        chain += sub.chain
    merged.update(loaded)
    return _TaskFile(merged, chain)


def _yaml_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root] if root.suffix == ".yaml" else []
    out: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS)
        out += [Path(folder) / f for f in sorted(files) if f.endswith(".yaml")]
    return out


def local_task_index(include: list[Path]) -> dict[str, Path]:
    """task name -> its YAML, over the include folders in order (the first definition of a name wins). A YAML that
    does not parse, or defines a group or no task, defines nothing (lmms-eval would fail on it only if named)."""
    index: dict[str, Path] = {}
    for root in include:
        for path in _yaml_files(Path(root).expanduser()):
            try:
                task = _read_yaml(path).config.get("task")
            except EvalSuiteError:
                continue
            if isinstance(task, str) and task and task not in index:
                index[task] = path.resolve()
    return index


def _data_files(config: dict[str, Any], yaml_dir: Path) -> list[Path]:
    """The local files ``dataset_kwargs.data_files`` names, found as lmms-eval finds them."""
    if config.get("dataset_path") not in LOCAL_BUILDERS:
        return []
    kwargs = config.get("dataset_kwargs")
    files = kwargs.get("data_files") if isinstance(kwargs, dict) else None
    names: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            names.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(files)
    out = []
    for n in names:
        p = Path(n)
        if not p.is_absolute() and (yaml_dir / p).is_file():
            p = yaml_dir / p
        if p.is_file():
            out.append(p.resolve())
    return out


def _count_docs(config: dict[str, Any], yaml_dir: Path) -> int:
    """Documents of the evaluated split of a local JSON/JSONL task; 0 when that is not cheap to know."""
    split = config.get("test_split") or config.get("validation_split")
    kwargs = config.get("dataset_kwargs")
    files = kwargs.get("data_files") if isinstance(kwargs, dict) else None
    if config.get("dataset_path") != "json" or not split:
        return 0
    named = files.get(split) if isinstance(files, dict) else (files if split == "train" else None)
    if not isinstance(named, str):
        return 0
    p = Path(named) if Path(named).is_absolute() else yaml_dir / named
    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".jsonl":
            return sum(1 for line in text.splitlines() if line.strip())
        data = json.loads(text)
    except (OSError, ValueError):
        return 0
    return len(data) if isinstance(data, list) else 0


_digests: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _lock:
        hit = _digests.get(key)
    if hit is None:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        hit = h.hexdigest()
        with _lock:
            _digests[key] = hit
    return hit


def lmms_task_digest(task: str, yaml_path: str | Path | None) -> str:
    """``sha256:...`` of what defines the task: its name and, for a local task, its YAML chain, the ``*.py`` beside
    it and its local data files (each by its path relative to the task's folder and its bytes)."""
    h = hashlib.sha256(f"lmms-eval task {task}\n".encode())
    if yaml_path is not None:
        path = Path(yaml_path)
        parsed = _read_yaml(path)
        files = [*parsed.chain, *sorted(path.parent.glob("*.py")), *_data_files(parsed.config, path.parent)]
        for f in dict.fromkeys(p.resolve() for p in files):
            rel = os.path.relpath(f, path.parent.resolve())
            h.update(f"{rel}\n{_file_digest(f)}\n".encode())
    return "sha256:" + h.hexdigest()


def _suite(task: str, yaml_path: Path | None) -> LmmsSuite:
    name = LMMS_PREFIX + task
    digest = lmms_task_digest(task, yaml_path)
    if yaml_path is None:
        return LmmsSuite(name, BUILTIN_PATH + task, (), digest, task=task)
    config = _read_yaml(yaml_path).config
    output_type = config.get("output_type")
    return LmmsSuite(
        name,
        str(yaml_path),
        (),
        digest,
        task=task,
        yaml_path=str(yaml_path),
        n_docs=_count_docs(config, yaml_path.parent),
        output_type=output_type if isinstance(output_type, str) else None,
    )


def _entries(tasks: list[str], include: list[Path]) -> dict[str, Path | None]:
    """task -> its local YAML (None: built-in): the configured names first, then the include folders' tasks."""
    index = local_task_index(include)
    out: dict[str, Path | None] = {t: index.get(t) for t in tasks if t.strip()}
    for t, p in index.items():
        out.setdefault(t, p)
    return out


def lmms_suites(tasks: list[str], include: list[Path]) -> list[dict[str, Any]]:
    """What ``GET /api/eval_suites`` lists of the lmms tasks; a task whose files cannot be read says why in
    ``error``."""
    out = []
    for task, path in _entries(tasks, include).items():
        try:
            out.append({**_suite(task, path).describe(), "types": [], "error": None})
        except (EvalSuiteError, OSError) as e:
            out.append({"name": LMMS_PREFIX + task, "path": str(path or BUILTIN_PATH + task), "n_items": 0,
                        "metrics": [], "types": [], "digest": None, "error": str(e)})
    return out


def find_lmms_suite(tasks: list[str], include: list[Path], name: str) -> LmmsSuite:
    """The suite ``lmms:<task>``: UnknownLmmsTask when not configured, EvalSuiteError when its files are bad."""
    task = split_lmms_name(name)
    entries = _entries(tasks, include)
    if task not in entries:
        known = ", ".join(LMMS_PREFIX + t for t in entries) or "none (set QSPACE_LMMS_TASKS or QSPACE_LMMS_INCLUDE)"
        raise UnknownLmmsTask(f"eval.suites: unknown lmms-eval task {name!r} (configured: {known})")
    path = entries[task]
    try:
        return _suite(task, path)
    except OSError as e:
        raise EvalSuiteError(path or name, 0, "", f"cannot read: {e.strerror or e}") from None
