"""Ingest through the API as its clients do: POST /api/datasets (202, a job), then follow the job to its end."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

ENDED = ("done", "failed", "cancelled")


def wait_job(
    client: TestClient, job_id: int, headers: dict[str, str] | None = None, timeout: float = 60.0
) -> dict[str, Any]:
    """The job once it has ended (done, failed or cancelled)."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/api/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        if job["status"] in ENDED:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout} s: {job}"
        time.sleep(0.05)


def post_ingest(client: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """POST the ingest, check the 202 answer, and return the ended job."""
    r = client.post("/api/datasets", json=body, headers=headers)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["dataset_id"] is None and accepted["job"]["kind"] == "ingest"
    return wait_job(client, accepted["job"]["id"], headers)


def ingest_via_api(client: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The dataset a successful ingest made (GET /api/datasets/{result.dataset_id})."""
    job = post_ingest(client, body, headers)
    assert job["status"] == "done", job
    r = client.get(f"/api/datasets/{job['result']['dataset_id']}", headers=headers)
    assert r.status_code == 200, r.text
    dataset: dict[str, Any] = r.json()
    return dataset
