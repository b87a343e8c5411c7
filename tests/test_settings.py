from __future__ import annotations

from pathlib import Path

import pytest

from backend.settings import Settings, get_settings


def test_defaults_are_server_less(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.sqlalchemy_url == f"sqlite:///{tmp_path / 'qspace.db'}"
    assert s.celery_broker_url.startswith("sqla+sqlite:///")
    assert s.host == "127.0.0.1"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QSPACE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("QSPACE_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("QSPACE_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("QSPACE_API_TOKEN", "t")
    monkeypatch.setenv("QSPACE_IMAGE_ROOTS", f"{tmp_path}/a:{tmp_path}/b")
    s = Settings()
    assert s.data_dir == tmp_path and s.sqlalchemy_url == "postgresql://u@h/db"
    assert s.celery_result_backend == "redis://127.0.0.1:6379/0"
    assert s.api_token == "t"
    assert s.image_roots == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setenv("QSPACE_IMAGE_ROOTS", f'["{tmp_path}/c"]')
    assert Settings().image_roots == [tmp_path / "c"]


def test_get_settings_is_built_once() -> None:
    assert get_settings() is get_settings()
