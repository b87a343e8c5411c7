"""Schemathesis against the live OpenAPI schema (bounded examples): no 5xx, responses match the schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from backend.api.app import create_app
from backend.db import make_engine, make_session_factory
from backend.migrate import upgrade
from backend.settings import Settings
from tests.seeding import seed_scored


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp / 'fuzz.db'}"
    engine = make_engine(url)
    upgrade(engine)
    seed_scored(make_session_factory(engine), tmp, n=60)
    settings = Settings(data_dir=tmp / "data", database_url=url, broker_url="memory://", data_roots=[tmp])
    app = create_app(settings, engine)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_api_never_5xx_and_matches_schema(api_schema) -> None:  # type: ignore[no-untyped-def]
    # Driven through Hypothesis directly: schemathesis's pytest plugin does not support pytest 9 yet.
    failures = []
    operations = [r.ok() for r in api_schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:  # type: ignore[no-untyped-def]
            # Semantic 422s (an axis naming no run, say) are legitimate for schema-valid input, so
            # positive-data acceptance is not demanded; 5xx and schema conformance are.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Exception as exc:  # collect all, report together
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_schema_is_valid_openapi(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    spec = app.openapi()
    assert spec["openapi"].startswith("3.") and "/api/datasets/{ds}/space" in spec["paths"]
