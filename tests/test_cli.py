from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from backend.migrate import head

SAMPLE_DIR = Path(__file__).parent / "data" / "sample"


def qspace(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qspace", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ingest_prints_id_and_refuses_bad_input(tmp_path: Path, db_url: str) -> None:
    env = {"QSPACE_DATA_DIR": str(tmp_path / "data"), "QSPACE_DATABASE_URL": db_url}
    r = qspace(
        ["ingest", str(SAMPLE_DIR / "llava_sample.json"), "--name", "s", "--image-root", str(SAMPLE_DIR)], env
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().isdigit() and "19 samples" in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "a", "conversations": []}]))
    r = qspace(["ingest", str(bad), "--name", "bad"], env)
    assert r.returncode == 2
    assert "nothing was ingested" in r.stderr and "record 0" in r.stderr and "'conversations'" in r.stderr
    r = qspace(["db", "current"], env)
    assert r.stdout.strip() == head()
