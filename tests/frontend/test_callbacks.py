"""Callbacks declared by name: outputs left out stay as they were, a failure lands in the named alert output."""

from __future__ import annotations

from typing import Any

import pytest
from dash import Dash, Input, Output, State, dcc, html

from frontend.callbacks import named_callback
from frontend.errors import Outputs


def make_app() -> Dash:
    app = Dash(__name__)
    app.server.testing = True  # exceptions reach the test instead of becoming a 500
    app.layout = html.Div(
        [dcc.Input(id="a"), dcc.Input(id="b"), html.Div(id="one"), html.Div(id="two"), html.Div(id="alert")]
    )

    @named_callback(
        app,
        output={
            "one": Output("one", "children"),
            "two": Output("two", "children"),
            "alert": Output("alert", "children"),
        },
        inputs={"a": Input("a", "value")},
        state={"b": State("b", "value")},
        alert="alert",
    )
    def answer(a: str, b: str) -> Outputs:
        if a == "boom":
            raise RuntimeError("it broke")
        if a == "partial":
            return {"one": f"{a}/{b}"}
        if a == "stray":
            return {"three": 3}
        return {"one": a, "two": b, "alert": None}

    return app


def call(app: Dash, a: str, b: str) -> Any:
    body = {
        "output": "..one.children...two.children...alert.children..",
        "outputs": [{"id": i, "property": "children"} for i in ("one", "two", "alert")],
        "inputs": [{"id": "a", "property": "value", "value": a}],
        "state": [{"id": "b", "property": "value", "value": b}],
        "changedPropIds": ["a.value"],
    }
    return app.server.test_client().post("/_dash-update-component", json=body)


def test_outputs_by_name() -> None:
    app = make_app()
    assert call(app, "x", "y").get_json()["response"] == {
        "one": {"children": "x"},
        "two": {"children": "y"},
        "alert": {"children": None},
    }
    # An output the callback leaves out is not updated.
    assert call(app, "partial", "y").get_json()["response"] == {"one": {"children": "partial/y"}}


def test_a_failure_lands_in_the_alert_output_only() -> None:
    response = call(make_app(), "boom", "y").get_json()["response"]
    assert set(response) == {"alert"}
    assert "RuntimeError: it broke" in str(response["alert"]["children"])


def test_a_name_that_is_not_an_output_fails_loudly() -> None:
    with pytest.raises(KeyError, match="three"):
        call(make_app(), "stray", "y")


def test_alert_must_name_an_output() -> None:
    with pytest.raises(ValueError, match="not one of the callback's outputs"):
        named_callback(Dash(__name__), output={"one": Output("one", "children")}, inputs={}, alert="alert")


def test_a_misspelt_input_fails_when_the_app_is_built() -> None:
    def answer(a: str, c: str) -> Outputs:
        return {"one": a}

    register = named_callback(
        Dash(__name__), output={"one": Output("one", "children")}, inputs={"a": Input("a", "value")},
        state={"b": State("b", "value")},
    )  # fmt: skip
    with pytest.raises(TypeError, match="does not take its inputs and states by name"):
        register(answer)
