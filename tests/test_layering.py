"""The four packages and what each may import, read from every module's source (imports inside functions
included), and no import cycle between files.

- ``qspace/``: the front door; the only package that may import ``backend``, ``workers`` and ``frontend`` together.
- ``backend/``: data and REST; nothing from ``workers``, ``frontend`` or ``qspace``, and never torch.
- ``workers/``: model work; from ``backend`` only the store, settings, queue contract and spec modules.
- ``frontend/``: a pure HTTP client; nothing from the other three.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("backend", "workers", "frontend", "qspace")
MODEL_LIBRARIES = ("torch", "torchvision", "open_clip", "transformers", "peft", "accelerate", "trl")

# What workers/ may use of backend/: the store, the settings, the queue contract and the specs.
WORKER_ALLOWED_BACKEND = re.compile(r"^backend\.(settings|db|models|queue(\..+)?|scorer_specs|\w+_specs)$")


@dataclass(frozen=True)
class Import:
    module: str  # importing module, dotted
    target: str  # imported module, dotted (``from a import b`` gives ``a.b`` when ``a.b`` is a module)
    line: int
    top_level: bool  # executed at import time (not inside a function)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _absolute(module: str, path: Path, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, path: Path, known: set[str]) -> None:
        self.module, self.path, self.known = module, path, known
        self.depth = 0
        self.found: list[Import] = []

    def _add(self, target: str, node: ast.stmt) -> None:
        self.found.append(Import(self.module, target, node.lineno, self.depth == 0))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        # `if TYPE_CHECKING:` imports never run; they still count for the package rules, not for cycles.
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            self.depth += 1
            self.generic_visit(node)
            self.depth -= 1
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _absolute(self.module, self.path, node.level, node.module)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            self._add(sub if sub in self.known else base, node)


def imports_of(module: str, path: Path, known: set[str]) -> list[Import]:
    collector = _Collector(module, path, known)
    collector.visit(ast.parse(path.read_text(), filename=str(path)))
    return collector.found


def package_violation(imp: Import) -> str | None:
    """Why this import breaks the layering, or None."""
    src, target = imp.module.split(".")[0], imp.target
    top = target.split(".")[0]
    if src == "backend":
        if top in ("workers", "frontend", "qspace"):
            return "backend imports nothing from workers, frontend or qspace"
        if top in MODEL_LIBRARIES:
            return "backend never imports torch or model libraries"
    if src == "workers":
        if top in ("frontend", "qspace"):
            return "workers import nothing from frontend or qspace"
        if top == "backend" and not WORKER_ALLOWED_BACKEND.match(target):
            return "workers import from backend only the store, settings, queue contract and specs"
    if src == "frontend":
        if top in ("backend", "workers", "qspace"):
            return "frontend is a pure HTTP client: it imports only frontend"
        if top in MODEL_LIBRARIES:
            return "frontend never imports torch or model libraries"
    return None


def violations(known: dict[str, Path]) -> list[str]:
    out = set()
    for module, path in known.items():
        for imp in imports_of(module, path, set(known)):
            why = package_violation(imp)
            if why:
                out.add(f"{path.relative_to(ROOT)}:{imp.line}: {imp.target}: {why}")
    return sorted(out)


def cycles(known: dict[str, Path]) -> list[list[str]]:
    """Cycles among the import-time edges between project modules (Tarjan's strongly connected components)."""
    edges: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        for imp in imports_of(module, path, set(known)):
            # A package's __init__ importing its own submodules is how packages re-export, not a cycle.
            reexport = path.name == "__init__.py" and imp.target.startswith(module + ".")
            if imp.top_level and imp.target in known and imp.target != module and not reexport:
                edges[module].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_package_imports_only_what_its_layer_allows() -> None:
    assert violations(all_modules()) == []


def test_no_import_cycle_between_modules() -> None:
    assert cycles(all_modules()) == []


def test_the_four_packages_exist() -> None:
    assert all((ROOT / pkg / "__init__.py").is_file() for pkg in PACKAGES)


@pytest.mark.parametrize(
    ("module", "source", "broken"),
    [
        ("backend.space", "def f():\n    from workers.tasks import score_chunk\n", True),
        ("backend.space", "import torch\n", True),
        ("backend.space", "from backend import db\n", False),
        ("workers.tasks", "from backend.runs import plan_run\n", True),
        ("workers.tasks", "from backend.queue.chunks import upsert_scores\n", False),
        ("workers.tasks", "from backend.train_specs import TrainParams\n", False),
        ("workers.tasks", "def f():\n    import qspace.demo\n", True),
        ("frontend.app", "from backend.settings import Settings\n", True),
        ("qspace.server", "from workers.tasks import app\nfrom frontend.mount import mount_ui\n", False),
    ],
)
def test_a_forbidden_import_is_caught(tmp_path: Path, module: str, source: str, broken: bool) -> None:
    """The checker itself: a deliberately added forbidden import fails it, an allowed one does not."""
    path = tmp_path / "probe.py"
    path.write_text(source)
    known = set(all_modules()) | {"backend.queue.chunks", "backend.train_specs"}
    found = [package_violation(imp) for imp in imports_of(module, path, known)]
    assert any(found) is broken, found


def test_a_cycle_is_caught(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import backend.b\n")
    b.write_text("from backend import a\n")
    assert cycles({"backend.a": a, "backend.b": b}) == [["backend.a", "backend.b"]]
