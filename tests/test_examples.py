from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
from sqlalchemy.orm import Session, sessionmaker

from tests.seed import seed_scored

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_paper_curriculum_script_against_live_server(
    session_factory: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    seeded = seed_scored(session_factory, tmp_path, n=600)
    port = free_port()
    env = {"QSPACE_DATA_DIR": str(tmp_path / "data"), "QSPACE_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"}
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "qspace", "serve", "--port", str(port), "--no-worker", "--no-ui"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        out = tmp_path / "out"
        r = subprocess.run(
            [
                sys.executable,
                str(ROOT / "examples" / "paper_curriculum.py"),
                "--url",
                url,
                "--dataset",
                f"seeded-{0}",
                "--per-stage",
                "30",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr + r.stdout + (tmp_path / "server.log").read_text()
        assert "initialization" in r.stdout and "random control" in r.stdout
        zips = list(out.glob("curriculum-*.zip"))
        manifest = json.loads(zipfile.ZipFile(zips[0]).read("manifest.json"))
        total = sum(s["count"] for s in manifest["stages"])
        assert 0 < total <= 90 and manifest["dataset_id"] == seeded.dataset_id
        control = json.loads(next(out.glob("random-control-*.json")).read_text())
        assert len(control) == total
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
