"""Regions over saved selections: ``combine`` (union, intersection, difference) and ``ids`` (one selection's ids).

Reproducible by construction: a combine reads the sample ids stored with each named selection (resolved from its
own recipe when it was saved, like every selection) instead of re-resolving those recipes against today's scores,
so the same combine recipe gives the same ids later, whatever scores changed in between. The saved recipe records
the *lineage*: every selection the result descends from (once each, however often it is reached), with its
count, a digest of its stored ids and its recipe, so a manifest shows what was combined and which runs those
recipes read.

Selections cannot be edited, so a reference cycle cannot be written through the API; the lineage walk still
refuses one (a store written by hand, a restored backup) rather than looping.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from backend.datasets import NotFound
from backend.id_lists import ids_from_bytes
from backend.models import Selection
from backend.regions import CombineRegion, IdsRegion
from backend.regions.arrays import unique_sorted

IdArray = npt.NDArray[np.int32]
MAX_LINEAGE = 1000  # ancestors recorded in one recipe; more is a runaway chain, refused


class CombineError(ValueError):
    """A set region that cannot be resolved (another dataset's selection, a cycle...): HTTP 422."""


@dataclass
class SetResolution:
    ids: IdArray  # sorted, unique
    lineage: list[dict[str, Any]] = field(default_factory=list)


def sorted_unique(ids: npt.ArrayLike) -> IdArray:
    """Sorted distinct int32 ids (:func:`backend.regions.arrays.unique_sorted`: not ``np.unique``, slow here)."""
    out: IdArray = unique_sorted(np.asarray(ids, dtype=np.int32))
    return out


def stored_ids(sel: Selection) -> IdArray:
    """The selection's saved sample ids, sorted and unique."""
    return sorted_unique(ids_from_bytes(sel.sample_ids))


def ids_digest(ids: npt.NDArray[np.int32]) -> str:
    """A short, stable fingerprint of an id set (sha256 of the sorted int32 little-endian ids)."""
    return hashlib.sha256(sorted_unique(ids).astype("<i4").tobytes()).hexdigest()[:16]


def referenced(sel_id: int, recipe: Any) -> list[int]:
    """The selections a saved recipe reads (an ``ids`` region naming the selection itself is its own base)."""
    region = recipe.get("region") if isinstance(recipe, dict) else None
    if not isinstance(region, dict):
        return []
    if region.get("type") == "combine":
        return [int(s) for s in region.get("selections") or [] if isinstance(s, int)]
    if region.get("type") == "ids" and isinstance(region.get("selection"), int) and region["selection"] != sel_id:
        return [int(region["selection"])]
    return []


def _direct(session: Session, ds: int, refs: list[int]) -> list[Selection]:
    rows = []
    for sid in refs:
        row = session.get(Selection, sid)
        if row is None:
            raise NotFound(f"selection {sid} not found")
        if row.dataset_id != ds:
            raise CombineError(f"selection {sid} belongs to dataset {row.dataset_id}, not {ds}; combine within one")
        rows.append(row)
    return rows


def lineage(session: Session, roots: list[Selection]) -> list[dict[str, Any]]:
    """Every selection `roots` descend from, roots first, each once; CombineError on a reference cycle."""
    out: dict[int, dict[str, Any]] = {}
    state: dict[int, str] = {}  # "open" while on the walk's stack, "done" after

    def visit(sel: Selection, path: list[int]) -> None:
        if state.get(sel.id) == "done":
            return
        if state.get(sel.id) == "open":
            cycle = " -> ".join(str(s) for s in [*path[path.index(sel.id) :], sel.id])
            raise CombineError(f"selections refer to each other in a cycle ({cycle}); such a recipe cannot resolve")
        if len(out) >= MAX_LINEAGE:
            raise CombineError(f"the selection descends from more than {MAX_LINEAGE} selections")
        state[sel.id] = "open"
        recipe = sel.recipe if isinstance(sel.recipe, dict) else {}
        refs = referenced(sel.id, recipe)
        out[sel.id] = {
            "id": sel.id,
            "name": sel.name,
            "count": sel.count,
            "ids_sha256": ids_digest(stored_ids(sel)),
            "selections": refs,
            "recipe": {k: v for k, v in recipe.items() if k != "lineage"},
        }
        for ref in refs:
            parent = session.get(Selection, ref)
            if parent is None:
                # Its ids were read when `sel` was saved; the lineage just notes the gap.
                out.setdefault(ref, {"id": ref, "missing": True})
                continue
            visit(parent, [*path, sel.id])
        state[sel.id] = "done"

    for root in roots:
        visit(root, [])
    return list(out.values())


def resolve_set_region(session: Session, ds: int, region: CombineRegion | IdsRegion) -> SetResolution:
    """The sorted sample ids a ``combine`` or ``ids`` region holds, with the lineage to record in the recipe."""
    refs = region.selections if isinstance(region, CombineRegion) else [region.selection]
    rows = _direct(session, ds, refs)
    sets = [stored_ids(r) for r in rows]
    ids: IdArray
    if isinstance(region, IdsRegion) or region.op == "union":
        ids = sorted_unique(np.concatenate(sets)) if sets else np.empty(0, dtype=np.int32)
    elif region.op == "intersection":
        ids = reduce(lambda a, b: np.intersect1d(a, b, assume_unique=True), sets)
    else:
        rest = sorted_unique(np.concatenate(sets[1:]))
        ids = np.setdiff1d(sets[0], rest, assume_unique=True)
    return SetResolution(ids.astype(np.int32), lineage(session, rows))
