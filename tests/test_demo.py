"""`qspace demo`: synthetic data, tiny models trained here, scored through the real queue - and the scores mean something.

One pipeline run at a reduced size (1,000 samples; the models train on their own, full-size corpus), then the
same command again, which must find everything cached and score nothing.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from backend.db import make_engine, make_session_factory
from backend.models import Dataset, Run, Sample, Score
from backend.settings import Settings
from qspace.demo import DemoResult, auc, dataset_name, quality_figures, run_demo

SIZE = 1000
REPO = Path(__file__).resolve().parent.parent


def _settings(data_dir: Path) -> Settings:
    """The embedded default, explicitly: SQLite store, server-less SQLite broker, in a fresh data directory."""
    return Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'qspace.db'}",
        broker_url=f"sqla+sqlite:///{data_dir / 'broker.db'}",
        result_backend=f"db+sqlite:///{data_dir / 'results.db'}",
        api_token=None,
    )


def _cli_env(settings: Settings) -> dict[str, str]:
    """The environment of a `qspace` command that uses the same embedded store and broker as ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QSPACE_")}
    env.update(
        QSPACE_DATA_DIR=str(settings.data_dir),
        QSPACE_DATABASE_URL=settings.sqlalchemy_url,
        QSPACE_BROKER_URL=settings.celery_broker_url,
        QSPACE_RESULT_BACKEND=settings.celery_result_backend,
    )
    return env


def test_auc_counts_ties_half() -> None:
    assert auc([3, 4], [1, 2]) == 1.0
    assert auc([1, 2], [3, 4]) == 0.0
    assert auc([1, 2], [1, 2]) == 0.5
    assert auc([2, 2, 3], [1, 2]) == pytest.approx((1.0 + 0.5 + 1.0 + 0.5 + 1.0 + 1.0) / 6)


def test_quality_figures_orientation() -> None:
    rows: list[dict[str, Any]] = [
        {"task_type": "conversation", "defect": "none", "similarity": 0.9, "loss_mean": 1.0, "loss_sum": 10.0},
        {"task_type": "conversation", "defect": "swapped_image", "similarity": 0.1, "loss_mean": 1.0, "loss_sum": 9.0},
        {"task_type": "conversation", "defect": "shuffled", "similarity": 0.8, "loss_mean": 3.0, "loss_sum": 30.0},
        {"task_type": "referring_qa", "defect": "none", "similarity": None, "loss_mean": 0.5, "loss_sum": 2.0},
    ]
    f = quality_figures(rows)
    assert f["clip_auc"] == 1.0  # clean pairs score above swapped images
    assert f["loss_auc"] == 1.0  # corrupted answers score above clean ones
    assert f["loss_sum_by_type"]["conversation"] == 10.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, DemoResult, list[str]]:
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    settings = _settings(data_dir)
    lines: list[str] = []
    try:
        result = run_demo(
            settings, size=SIZE, seed=0, serve=False, open_browser=False, progress=False, echo=lines.append
        )
    except BaseException:
        log = data_dir / "demo-worker.log"
        print("\n".join(lines), file=sys.stderr)
        if log.exists():
            print(log.read_text()[-5000:], file=sys.stderr)
        raise
    return settings, result, lines


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_demo_scores_find_the_defects(demo: tuple[Settings, DemoResult, list[str]]) -> None:
    settings, result, lines = demo
    f = result.figures
    print("\n".join(lines), f, result.seconds, sep="\n")
    assert f["n"] == SIZE
    # swapped images score lower CLIP similarity than clean pairs
    assert f["clip_auc"] >= 0.9, f
    # corrupted answers (shuffled, wrong facts, truncated, filler) score higher loss_mean than clean ones
    assert f["loss_auc"] >= 0.9, f
    # the paper's observation: long answers carry a larger summed loss
    sums = f["loss_sum_by_type"]
    assert sums["detail_description"] > sums["referring_qa"], sums

    # it went through the store and the queue: one dataset, two finished runs, every sample scored
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with make_session_factory(engine)() as session:
            ds = session.scalar(select(Dataset).where(Dataset.name == dataset_name(SIZE, 0)))
            assert ds is not None and ds.id == result.dataset_id and ds.n_samples == SIZE
            assert ds.task_type_prompts.keys() == {
                "conversation",
                "complex_reasoning",
                "detail_description",
                "referring_qa",
            }
            types = dict(
                session.execute(
                    select(Sample.task_type, func.count()).where(Sample.dataset_id == ds.id).group_by(Sample.task_type)
                ).all()
            )
            assert types == {t: SIZE // 4 for t in ds.task_type_prompts}
            runs = {r.kind: r for r in session.scalars(select(Run).where(Run.dataset_id == ds.id))}
            assert set(runs) == {"clip", "mllm_loss"} and {k: r.id for k, r in runs.items()} == result.runs
            for run in runs.values():
                assert (run.status, run.done, run.errors) == ("done", SIZE, 0), run.message
                n = session.scalar(select(func.count()).select_from(Score).where(Score.run_id == run.id))
                assert n == SIZE
            # the defect label travels as sample metadata (the UI colours and filters by it)
            defects = {m.get("defect") for m in session.scalars(select(Sample.meta).where(Sample.dataset_id == ds.id))}
            assert defects == {"none", "swapped_image", "shuffled", "wrong_fact", "truncated", "filler"}
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_again_starts_at_once(demo: tuple[Settings, DemoResult, list[str]]) -> None:
    """The command a user types, a second time: data, models, dataset and scores all cached, nothing re-scored."""
    settings, first, _ = demo
    env = _cli_env(settings)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "qspace", "demo", "--size", str(SIZE), "--no-serve", "--no-open", "--no-progress"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    out = proc.stderr
    assert "models from the cache" in out and "both runs are scored already" in out, out
    assert "training" not in out and "writing a synthetic" not in out, out
    assert f"/explore?ds={first.dataset_id}" in out, out
    assert elapsed < 60, (elapsed, out)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_serves_the_scored_plane_and_stops_on_ctrl_c(demo: tuple[Settings, DemoResult, list[str]]) -> None:
    """The served form of the command: the explore page and the scored plane answer; Ctrl-C ends it cleanly."""
    settings, first, _ = demo
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _cli_env(settings)
    cmd = [sys.executable, "-m", "qspace", "demo", "--size", str(SIZE), "--no-open", "--no-progress"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    assert proc.stderr is not None
    lines: list[str] = []
    url = None
    try:
        deadline = time.monotonic() + 240
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"open (http://\S+/explore\?ds=(\d+))", line)
            if m:
                url = m.group(1)
                assert int(m.group(2)) == first.dataset_id
        assert url is not None, "".join(lines)
        assert url.startswith(f"http://127.0.0.1:{port}/"), url
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()
        base = f"http://127.0.0.1:{port}/api"
        space = httpx.get(
            f"{base}/datasets/{first.dataset_id}/space",
            params={"x": f"{first.runs['mllm_loss']}:loss_mean", "y": "clip", "format": "json"},
            timeout=30,
        )
        assert space.status_code == 200, space.text
        plane = space.json()
        assert len(plane["ids"]) == SIZE  # every sample is a point: both runs scored all of them
        colours = httpx.get(f"{base}/datasets/{first.dataset_id}/metadata_fields", timeout=30).json()
        assert colours["defect"]["swapped_image"] > 0, colours  # the label the plane can be coloured by
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            rest = proc.stderr.read()
            proc.stderr.close()
    assert rc == 0, "".join(lines) + rest
