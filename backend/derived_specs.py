"""Derived run kinds: projection, clusters and duplicates of a ``clip`` run's kept embeddings. Torch-free.

A derived run is a run like any other (progress, cancel, errors, axes ``RUN:METRIC``), whose work is one task on
the ``default`` queue that reads the embeddings file of ``embeddings_run`` and writes one score row per sample.
Its key hashes (kind, params, the embeddings run's scorer key), so posting the same request again resumes or
returns the same run.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Source = Literal["image", "text", "both"]
_SOURCE_DOC = (
    "Which embeddings: 'image', 'text', or 'both' (each half normalised and concatenated: a cosine is the mean "
    "of the image-image and text-text cosines)."
)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    embeddings_run: int = Field(ge=1, description="A finished clip run of this dataset with keep_embeddings: true.")
    source: Source = Field("image", description=_SOURCE_DOC)


class ProjectionParams(_Params):
    """2D coordinates (metrics map_x, map_y) of the embeddings: UMAP (umap-learn) or PaCMAP."""

    method: Literal["umap", "pacmap"] = Field("umap", description="Dimension reduction method.")
    n_neighbors: int = Field(15, ge=2, le=200, description="Neighbourhood size of the method.")
    min_dist: float = Field(0.1, ge=0.0, le=1.0, description="UMAP's min_dist (ignored by PaCMAP).")
    pca_dims: int = Field(
        50, ge=2, le=1024, description="PCA to this many dimensions first (what makes 1M points tractable)."
    )
    fit_rows: int = Field(
        200_000,
        ge=1_000,
        le=100_000_000,
        description="Fit the map on at most this many samples (a seeded random sample); the others are placed at "
        "the weighted mean of their nearest fitted neighbours' coordinates, as UMAP's transform starts a new point "
        "(1M points: 7.5 min on 2 cores, with room under the 15-min budget).",
    )
    seed: int = Field(0, ge=0, description="Random seed.")


class ClustersParams(_Params):
    """k-means clusters (metric ``cluster``, 0..k-1) with faiss; labels, sizes and examples per cluster."""

    k: int | None = Field(
        None, ge=2, le=10_000, description="Number of clusters; default round(sqrt(n / 10)), at least 2."
    )
    iterations: int = Field(20, ge=1, le=200, description="k-means iterations.")
    seed: int = Field(0, ge=0, description="Random seed.")


class DuplicatesParams(_Params):
    """Near-duplicate groups (metrics dup_group, dup_rank, dup_size) from a cosine threshold over an ANN index."""

    threshold: float = Field(
        0.95, gt=0.0, le=1.0, description="Two samples are duplicates when their cosine is at least this."
    )
    center: bool = Field(
        False,
        description="Compare embeddings minus their mean (re-normalised). CLIP embeddings share a common "
        "direction, so raw cosines of unrelated samples are high; centring spreads them (an untrained model "
        "needs it).",
    )
    max_neighbours: int = Field(
        32, ge=1, le=1000, description="Neighbours looked up per sample (a larger group links through its members)."
    )


DERIVED: dict[str, tuple[type[_Params], tuple[str, ...], str]] = {
    "projection": (ProjectionParams, ("map_x", "map_y"), "map_x"),
    "clusters": (ClustersParams, ("cluster",), "cluster"),
    "duplicates": (DuplicatesParams, ("dup_group", "dup_rank", "dup_size"), "dup_rank"),
}
MAX_K_FRACTION = 1.0  # k may be at most the number of embedded samples


def is_derived(kind: str) -> bool:
    return kind in DERIVED


def derived_metrics(kind: str) -> tuple[str, ...]:
    return DERIVED[kind][1]


def main_metric(kind: str) -> str:
    return DERIVED[kind][2]


def validate_derived(kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Canonical params of a derived kind (defaults filled in); ValueError naming the bad field."""
    if kind not in DERIVED:
        raise ValueError(f"kind: unknown derived kind {kind!r} (known: {', '.join(DERIVED)})")
    model = DERIVED[kind][0]
    try:
        parsed = model.model_validate(params or {})
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(x) for x in first["loc"]) or "params"
        raise ValueError(f"{kind}.{field}: {first['msg']}") from None
    return parsed.model_dump(mode="json")


def default_k(n: int) -> int:
    """The issue's default: about sqrt(n / 10), at least 2."""
    return max(2, round(math.sqrt(n / 10)))


def derived_key(kind: str, params: dict[str, Any], embeddings_key: str) -> str:
    """sha256 of (kind, canonical params, the embeddings run's scorer key)."""
    payload = {"kind": kind, "params": params, "embeddings": embeddings_key}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def list_derived() -> list[dict[str, Any]]:
    return [
        {"kind": k, "params_schema": m.model_json_schema(), "metrics": list(ms), "main_metric": main}
        for k, (m, ms, main) in DERIVED.items()
    ]
