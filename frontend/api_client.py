"""The UI's one door to qspace: a small typed client of the REST API (httpx).

The Dash server calls the API over HTTP like any other client (in `qspace serve` that is the same
process, over loopback). Nothing here touches the database. Every failure becomes an `ApiError` whose
message is a sentence a person can read: the API's `detail`, or what went wrong on the wire.

The typed shapes of its answers (and `ApiError`) live in `frontend.api_shapes`; they are imported here too,
so `from frontend.api_client import Dataset, ApiError` keeps working.
"""

from __future__ import annotations

import json
import threading
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import numpy.typing as npt

from frontend.api_shapes import (
    ApiError,
    Axis,
    Dataset,
    EvalSuite,
    Experiment,
    IngestAccepted,
    Job,
    Neighbour,
    Points,
    Run,
    Sample,
    SearchResult,
    Selection,
    SelectionComparison,
    SelectionPreview,
    decode_ids,
    decode_points,
)

__all__ = [
    "ApiClient",
    "ApiError",
    "Axis",
    "Dataset",
    "EvalSuite",
    "Experiment",
    "Job",
    "Neighbour",
    "Points",
    "Run",
    "Sample",
    "SearchResult",
    "Selection",
    "SelectionComparison",
    "SelectionPreview",
]


# The token of the browser session a UI request comes from (frontend/app.py sets it for each Dash request from the
# X-Qspace-Token header that assets/token.js adds); every call made while serving that request carries it.
REQUEST_TOKEN: ContextVar[str | None] = ContextVar("qspace_request_token", default=None)


def _detail_text(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # FastAPI's default validation error list
        parts = []
        for e in detail[:3]:
            if isinstance(e, dict):
                loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {e.get('msg', '')}".strip(": "))
            else:
                parts.append(str(e))
        return "; ".join(parts)
    return json.dumps(detail)[:500]


class ApiClient:
    """Typed calls of the qspace REST API. Thread-safe; one per UI process is enough."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._timeout = timeout
        self._transport = transport
        self._lock = threading.Lock()
        self._http = self._make(transport)

    def _make(self, transport: httpx.BaseTransport | None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(self._timeout, connect=5.0),
            transport=transport,
            headers={"User-Agent": "qspace-ui"},
        )

    def close(self) -> None:
        self._http.close()

    def rebase(self, base_url: str) -> None:
        """Point the client at another server (the old connection pool is closed)."""
        with self._lock:
            old = self._http
            self.base_url = base_url.rstrip("/")
            self._http = self._make(self._transport)
        old.close()

    # -- plumbing ---------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        token: str | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        headers = {}
        bearer = token or self.token or REQUEST_TOKEN.get()
        if bearer:  # reads too: with any token configured, the API wants one on every route
            headers["Authorization"] = f"Bearer {bearer}"
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        try:
            resp = self._http.request(
                method,
                "/api" + path,
                params=clean,
                json=body,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException:
            raise ApiError(f"the API did not answer {method} {path} in time; try again in a moment") from None
        except httpx.TransportError as exc:
            raise ApiError(
                f"cannot reach the qspace API at {self.base_url} ({exc.__class__.__name__}: {exc})"
            ) from None
        if resp.status_code >= 400:
            raise self._error(resp, method, path)
        return resp

    @staticmethod
    def _error(resp: httpx.Response, method: str, path: str) -> ApiError:
        detail: Any = None
        body: Any = None
        try:
            body = resp.json()
            detail = body.get("detail")
        except (ValueError, AttributeError):
            detail = None
        if detail is None:
            text = resp.text.strip()[:300] or resp.reason_phrase
            message = f"{method} {path} failed: HTTP {resp.status_code} {text}"
        else:
            message = _detail_text(detail)
            if resp.status_code >= 500:
                message = f"server error ({resp.status_code}) on {method} {path}: {message}"
            elif resp.status_code == 401:
                message = f"{message} (enter the API token at the top right)"
        return ApiError(message, status=resp.status_code, detail=detail, body=body)

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._request(method, path, **kw)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise ApiError(f"{method} {path}: the server's answer is not JSON") from None

    # -- health, datasets, samples -----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = self._json("GET", "/health", timeout=5.0)
        return out

    def datasets(self) -> list[Dataset]:
        out: list[Dataset] = self._json("GET", "/datasets")
        return out

    def dataset(self, ds: int) -> Dataset:
        out: Dataset = self._json("GET", f"/datasets/{int(ds)}")
        return out

    def create_dataset(self, body: dict[str, Any], token: str | None = None) -> IngestAccepted:
        """Start an ingest: `{job, dataset_id: null}` at once; the job's result holds the dataset's id."""
        out: IngestAccepted = self._json("POST", "/datasets", body=body, token=token)
        return out

    def delete_dataset(self, ds: int, token: str | None = None) -> None:
        self._json("DELETE", f"/datasets/{int(ds)}", token=token)

    def samples(self, ds: int, task_type: str | None = None, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        out: dict[str, Any] = self._json(
            "GET", f"/datasets/{int(ds)}/samples", params={"task_type": task_type, "offset": offset, "limit": limit}
        )
        return out

    def sample(self, sample_id: int) -> Sample:
        out: Sample = self._json("GET", f"/samples/{int(sample_id)}")
        return out

    def neighbours(self, sample_id: int, run: int, k: int = 12) -> list[Neighbour]:
        """The `k` samples nearest to this one by a clip run's kept image embeddings, best first."""
        out: list[Neighbour] = self._json(
            "GET", f"/samples/{int(sample_id)}/neighbours", params={"run": int(run), "k": int(k)}
        )
        return out

    def search(self, ds: int, run: int, text: str, k: int = 48, token: str | None = None) -> SearchResult:
        """The samples nearest to a typed text (a worker embeds it: 504 when none answers, 422 on empty text)."""
        body = {"run": int(run), "text": text, "k": int(k)}
        out: SearchResult = self._json("POST", f"/datasets/{int(ds)}/search", body=body, token=token)
        return out

    @staticmethod
    def image_path(sample_id: int, index: int = 0, max_side: int | None = 256) -> str:
        """The browser-relative URL of a sample's image (thumbnails are JPEG, cached by the server)."""
        q = f"?index={int(index)}" + (f"&max_side={int(max_side)}" if max_side else "")
        return f"/api/samples/{int(sample_id)}/image{q}"

    # -- scorers and runs ---------------------------------------------------------------------------

    def scorers(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self._json("GET", "/scorers")
        return out

    def start_run(self, ds: int, kind: str, params: dict[str, Any], token: str | None = None) -> Run:
        out: Run = self._json("POST", f"/datasets/{int(ds)}/runs", body={"kind": kind, "params": params}, token=token)
        return out

    def runs(self, ds: int) -> list[Run]:
        out: list[Run] = self._json("GET", f"/datasets/{int(ds)}/runs")
        return out

    def run(self, run_id: int) -> Run:
        out: Run = self._json("GET", f"/runs/{int(run_id)}")
        return out

    def cancel_run(self, run_id: int, token: str | None = None) -> Run:
        out: Run = self._json("POST", f"/runs/{int(run_id)}/cancel", token=token)
        return out

    def cluster_summary(self, run_id: int) -> dict[str, Any]:
        """A finished clusters run's clusters: `{run_id, k, clusters: [{id, size, label, medians, examples}]}`."""
        out: dict[str, Any] = self._json("GET", f"/runs/{int(run_id)}/clusters")
        return out

    # -- background jobs ----------------------------------------------------------------------------

    def jobs(self, ds: int | None = None, active: bool | None = None) -> list[Job]:
        """Jobs, newest first: only dataset `ds`'s, only active (queued or running) ones when `active`."""
        params: dict[str, Any] = {"dataset_id": None if ds is None else int(ds)}
        if active is not None:
            params["active"] = "true" if active else "false"
        out: list[Job] = self._json("GET", "/jobs", params=params)
        return out

    def job(self, job_id: int) -> Job:
        out: Job = self._json("GET", f"/jobs/{int(job_id)}")
        return out

    def cancel_job(self, job_id: int, token: str | None = None) -> Job:
        out: Job = self._json("POST", f"/jobs/{int(job_id)}/cancel", token=token)
        return out

    # -- the plane ----------------------------------------------------------------------------------

    def axes(self, ds: int) -> list[Axis]:
        out: list[Axis] = self._json("GET", f"/datasets/{int(ds)}/axes")
        return out

    def metadata_fields(self, ds: int) -> dict[str, list[Any]]:
        """Low-cardinality metadata fields and their values (the server may add a count per value)."""
        raw = self._json("GET", f"/datasets/{int(ds)}/metadata_fields")
        out: dict[str, list[Any]] = {}
        for name, values in (raw or {}).items():
            if isinstance(values, dict):  # {value: count}: most frequent first
                out[str(name)] = [k for k, _ in sorted(values.items(), key=lambda kv: (-int(kv[1] or 0), str(kv[0])))]
            elif isinstance(values, list):
                out[str(name)] = list(values)
        return out

    def space(
        self,
        ds: int,
        x: str,
        y: str,
        color: str | None = None,
        task_type: str | None = None,
        max_points: int | None = None,
        x_range: tuple[float, float] | None = None,
        y_range: tuple[float, float] | None = None,
    ) -> Points:
        """The plane's points; with `max_points` / ranges a density-aware sample of that view (`meta` then holds
        `total_in_view` and `sampled`)."""
        params = {"x": x, "y": y, "format": "arrow", "color": color, "task_type": task_type, "max_points": max_points}
        resp = self._request(
            "GET", f"/datasets/{int(ds)}/space", params={**params, **_ranges(x_range, y_range)}, timeout=300.0
        )
        return decode_points(resp.content)

    def density(
        self,
        ds: int,
        x: str,
        y: str,
        bins: int = 64,
        x_range: tuple[float, float] | None = None,
        y_range: tuple[float, float] | None = None,
        task_type: str | None = None,
    ) -> dict[str, Any]:
        params = {"x": x, "y": y, "bins": bins, "task_type": task_type, **_ranges(x_range, y_range)}
        out: dict[str, Any] = self._json("GET", f"/datasets/{int(ds)}/density", params=params)
        return out

    def summary(self, ds: int, x: str, y: str) -> dict[str, Any]:
        out: dict[str, Any] = self._json("GET", f"/datasets/{int(ds)}/summary", params={"x": x, "y": y})
        return out

    # -- selections and curricula -------------------------------------------------------------------

    def preview(
        self, ds: int, body: dict[str, Any], limit: int = 12, offset: int = 0, token: str | None = None
    ) -> SelectionPreview:
        payload = {**body, "limit": int(limit)}
        if offset:
            payload["offset"] = int(offset)
        out: SelectionPreview = self._json("POST", f"/datasets/{int(ds)}/selections/preview", body=payload, token=token)
        return out

    def create_selection(self, ds: int, body: dict[str, Any], token: str | None = None) -> Selection:
        out: Selection = self._json("POST", f"/datasets/{int(ds)}/selections", body=body, token=token)
        return out

    def selections(self, ds: int) -> list[Selection]:
        out: list[Selection] = self._json("GET", f"/datasets/{int(ds)}/selections")
        return out

    def selection(self, sel: int) -> Selection:
        out: Selection = self._json("GET", f"/selections/{int(sel)}")
        return out

    def selection_samples(self, sel: int, offset: int = 0, limit: int = 12) -> dict[str, Any]:
        out: dict[str, Any] = self._json(
            "GET", f"/selections/{int(sel)}/samples", params={"offset": offset, "limit": limit}
        )
        return out

    def selection_members(self, sel: int) -> npt.NDArray[np.int32]:
        """Every sample id of a saved selection (the ids of the plane's points), sorted."""
        resp = self._request("GET", f"/selections/{int(sel)}/members", params={"format": "arrow"}, timeout=300.0)
        return decode_ids(resp.content)

    def recipe_members(self, ds: int, body: dict[str, Any], token: str | None = None) -> npt.NDArray[np.int32]:
        """Every sample id an unsaved recipe selects (the server decides membership, over all points)."""
        resp = self._request(
            "POST",
            f"/datasets/{int(ds)}/selections/members",
            params={"format": "arrow"},
            body=body,
            token=token,
            timeout=300.0,
        )
        return decode_ids(resp.content)

    def compare_selections(self, sels: list[int]) -> SelectionComparison:
        """2 or 3 saved selections of one dataset side by side: sizes, task types, metric quartiles, overlaps."""
        out: SelectionComparison = self._json(
            "GET", "/selections/compare", params={"ids": ",".join(str(int(s)) for s in sels)}
        )
        return out

    @staticmethod
    def selection_export_path(sel: int, fmt: str) -> str:
        return f"/api/selections/{int(sel)}/export?format={quote(fmt)}"

    def create_curriculum(self, ds: int, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = self._json("POST", f"/datasets/{int(ds)}/curricula", body=body, token=token)
        return out

    def curriculum(self, cur: int) -> dict[str, Any]:
        out: dict[str, Any] = self._json("GET", f"/curricula/{int(cur)}")
        return out

    def preview_curriculum(self, ds: int, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = self._json("POST", f"/datasets/{int(ds)}/curricula/preview", body=body, token=token)
        return out

    @staticmethod
    def curriculum_export_path(cur: int) -> str:
        return f"/api/curricula/{int(cur)}/export"

    # -- experiments --------------------------------------------------------------------------------

    def eval_suites(self) -> list[EvalSuite]:
        out: list[EvalSuite] = self._json("GET", "/eval_suites")
        return out

    def experiments(self, ds: int) -> list[Experiment]:
        """The dataset's experiments, each with its arms, jobs and results (statistics included)."""
        out: list[Experiment] = self._json("GET", f"/datasets/{int(ds)}/experiments")
        return out

    def experiment(self, exp: int) -> Experiment:
        out: Experiment = self._json("GET", f"/experiments/{int(exp)}")
        return out

    def create_experiment(self, ds: int, body: dict[str, Any], token: str | None = None) -> Experiment:
        """Start (or, posted again, resume) an experiment: 202 with its arms and queued jobs."""
        out: Experiment = self._json("POST", f"/datasets/{int(ds)}/experiments", body=body, token=token)
        return out

    def cancel_experiment(self, exp: int, token: str | None = None) -> Experiment:
        out: Experiment = self._json("POST", f"/experiments/{int(exp)}/cancel", token=token)
        return out

    @staticmethod
    def experiment_manifest_path(exp: int) -> str:
        return f"/api/experiments/{int(exp)}/manifest"

    @staticmethod
    def experiment_results_csv_path(exp: int) -> str:
        return f"/api/experiments/{int(exp)}/results.csv"


def _ranges(x_range: tuple[float, float] | None, y_range: tuple[float, float] | None) -> dict[str, str | None]:
    """The `x_range` / `y_range` query parameters of a view (`lo,hi`; absent when None)."""
    return {
        k: None if r is None else f"{float(r[0])!r},{float(r[1])!r}"
        for k, r in (("x_range", x_range), ("y_range", y_range))
    }
