from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from tests.live_server import served
from tests.seeding import seed_scored

ROOT = Path(__file__).resolve().parent.parent


def test_paper_curriculum_script_against_live_server(
    session_factory: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    seeded = seed_scored(session_factory, tmp_path, n=600)
    env = {"QSPACE_DATA_DIR": str(tmp_path / "data"), "QSPACE_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"}
    with served(env, tmp_path / "server.log") as server:
        url = server.url
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
