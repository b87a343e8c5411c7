"""The UI's copy of the REST contract (`frontend/api_client.py` and the typed shapes of `frontend/api_shapes.py`)
checked against the OpenAPI schema the API serves: every call the client makes exists with its method, and every
field a typed shape declares is a field of the schema that route answers with, of a compatible JSON type. The UI's
copy cannot drift from the server without this failing."""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from backend.api.app import create_app
from backend.db import make_engine
from backend.migrate import upgrade
from backend.settings import Settings
from frontend import api_client
from frontend.api_client import ApiClient

ID_PARAMS = {"ds", "sel", "cur", "run_id", "sample_id", "job_id", "experiment_id", "exp", "index"}


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("contract")
    settings = Settings(data_dir=root / "data", database_url=f"sqlite:///{root / 'q.db'}")
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    try:
        return create_app(settings, engine).openapi()
    finally:
        engine.dispose()


@dataclass
class Call:
    name: str  # client method
    method: str
    path: str  # without /api
    returns: Any  # the method's return annotation


def _dummy(param: inspect.Parameter) -> Any:
    if param.name in ID_PARAMS:
        return 1
    hint = str(param.annotation)
    if "dict" in hint:
        return {}
    if "list" in hint:
        return []
    if "int" in hint:
        return 1
    if "float" in hint:
        return 1.0
    if "bool" in hint:
        return False
    return "x"


def client_calls() -> Iterator[Call]:
    """Each public method of ApiClient called once with placeholder arguments against a recording transport."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    client = ApiClient("http://contract.invalid", transport=httpx.MockTransport(record))
    hints_of = {name: typing.get_type_hints(fn) for name, fn in inspect.getmembers(ApiClient, inspect.isfunction)}
    for name, fn in inspect.getmembers(ApiClient, inspect.isfunction):
        if name.startswith("_") or name in ("close", "rebase"):
            continue
        sig = inspect.signature(fn)
        args = [_dummy(p) for p in sig.parameters.values() if p.name != "self" and p.default is inspect.Parameter.empty]
        seen.clear()
        try:
            out = getattr(client, name)(*args)
        except Exception:  # the placeholder answer need not parse: the request is what is checked
            out = None
        returns = hints_of[name].get("return")
        if seen:
            req = seen[0]
            assert req.url.path.startswith("/api/"), (name, req.url)
            yield Call(name, req.method, req.url.path.removeprefix("/api"), returns)
        elif isinstance(out, str) and out.startswith("/api/"):  # a URL the browser fetches (images, exports)
            yield Call(name, "GET", out.split("?")[0].removeprefix("/api"), returns)
    client.close()


def _route(openapi: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    for template, ops in openapi["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template.removeprefix("/api")) + "$"
        if re.match(pattern, path) and method.lower() in ops:
            return dict(ops[method.lower()])
    return None


def _response_schema(openapi: dict[str, Any], op: dict[str, Any]) -> dict[str, Any] | None:
    for status in ("200", "201", "202"):
        content = op["responses"].get(status, {}).get("content", {}).get("application/json")
        if content:
            return dict(content["schema"])
    return None


def _resolve(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return dict(openapi["components"]["schemas"][ref.rsplit("/", 1)[1]]) if ref else schema


def _json_types(openapi: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    schema = _resolve(openapi, schema)
    if "anyOf" in schema or "oneOf" in schema:
        return set().union(*(_json_types(openapi, s) for s in schema.get("anyOf") or schema["oneOf"]))
    if "type" in schema:
        return {schema["type"]}
    return {"object"} if "properties" in schema else {"any"}


def _python_types(hint: Any) -> set[str]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_python_types(a) for a in typing.get_args(hint)))
    base = origin or hint
    if base is type(None):
        return {"null"}
    if base is Any:
        return {"any"}
    if typing.is_typeddict(base) or base is dict:
        return {"object"}
    table = {int: {"integer"}, float: {"number", "integer"}, str: {"string"}, bool: {"boolean"}, list: {"array"}}
    return table.get(base, {"any"})


def _typed_shape(returns: Any) -> Any:
    """The TypedDict a method returns (itself, or the item of a list of it), or None."""
    if typing.get_origin(returns) is list:
        (returns,) = typing.get_args(returns)
    return returns if typing.is_typeddict(returns) else None


def test_every_call_of_the_client_is_a_route_of_the_api(openapi: dict[str, Any]) -> None:
    calls = list(client_calls())
    assert len(calls) >= 25, [c.name for c in calls]  # the client is read, not skipped
    missing = [f"{c.name}: {c.method} {c.path}" for c in calls if _route(openapi, c.method, c.path) is None]
    assert missing == []


def test_every_typed_shape_field_is_in_the_served_schema(openapi: dict[str, Any]) -> None:
    checked = set()
    problems = []
    for call in client_calls():
        shape = _typed_shape(call.returns)
        op = _route(openapi, call.method, call.path)
        if shape is None or op is None:
            continue
        schema = _response_schema(openapi, op)
        assert schema is not None, f"{call.name}: {call.method} {call.path} declares no JSON response"
        schema = _resolve(openapi, schema)
        if schema.get("type") == "array":
            schema = _resolve(openapi, schema["items"])
        props = schema.get("properties")
        if props is None:  # a free-form object: nothing to compare field by field
            continue
        checked.add(shape.__name__)
        for field, hint in typing.get_type_hints(shape).items():
            if field not in props:
                problems.append(f"{shape.__name__}.{field}: not in the API's {call.method} {call.path} answer")
                continue
            served, declared = _json_types(openapi, props[field]), _python_types(hint)
            if "any" not in served | declared and not served & declared:
                problems.append(f"{shape.__name__}.{field}: the UI expects {declared}, the API sends {served}")
    assert problems == []
    assert {"Dataset", "Run", "Selection", "Sample"} <= checked


def test_the_checker_sees_a_drifted_field(openapi: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A field the API does not send, added to the UI's shape, fails the comparison."""

    class Drifted(typing.TypedDict, total=False):
        id: int
        n_samplez: int

    monkeypatch.setattr(api_client.ApiClient.dataset, "__annotations__", {"ds": "int", "return": Drifted})
    with pytest.raises(AssertionError, match="n_samplez"):
        test_every_typed_shape_field_is_in_the_served_schema(openapi)

