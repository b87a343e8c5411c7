"""How every page declares a callback: outputs, inputs and states by name (Dash's flexible signatures).

Dash calls the function with one keyword argument per input and state, and takes back a dict keyed by
output name. An output the function leaves out of its dict stays as it was (`no_update`); a name that is
not an output is a bug and fails loudly. Given `alert`, the callback never dies silently: an exception
becomes a sentence in that output and every other output stays as it was (see frontend.errors).

Browser-side callbacks (`app.clientside_callback`) cannot take names: Dash hands a JavaScript function its
arguments in order, so those keep plain lists whose order the function in assets/qspace.js follows.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from dash import ClientsideFunction, Dash, Input, Output, State, no_update

from frontend.errors import Outputs, guarded

Callback = Callable[..., Outputs]


def named_callback(
    app: Dash,
    *,
    output: Mapping[str, Output],
    inputs: Mapping[str, Input],
    state: Mapping[str, State] | None = None,
    alert: str | None = None,
    **options: Any,
) -> Callable[[Callback], Callback]:
    """Register the decorated function as a callback of `app` with named outputs, inputs and states;
    `options` go to Dash as they are (prevent_initial_call, ...). Returns the function unchanged."""
    names = tuple(output)
    clash = set(inputs) & set(state or {})
    if clash:
        raise ValueError(f"a callback's inputs and states need distinct names; both have {sorted(clash)}")
    guard = guarded(names, alert) if alert is not None else None  # checks `alert` names an output, now

    def deco(fn: Callback) -> Callback:
        try:  # a misspelt name fails here, when the app is built, not on the first click
            inspect.signature(fn).bind(**dict.fromkeys([*inputs, *(state or {})]))
        except TypeError as exc:
            raise TypeError(f"callback {fn.__name__} does not take its inputs and states by name: {exc}") from None
        body = guard(fn) if guard is not None else fn

        @functools.wraps(fn)
        def answer(**kwargs: Any) -> Outputs:
            got = body(**kwargs)
            unknown = set(got) - set(names)
            if unknown:
                raise KeyError(f"callback {fn.__name__} answered {sorted(unknown)}, which are not its outputs {names}")
            return {name: got.get(name, no_update) for name in names}

        # Dash merges the states into the dict it is given: hand it copies, never the caller's mappings.
        app.callback(output=dict(output), inputs=dict(inputs), state=dict(state or {}), **options)(answer)
        return fn

    return deco


def browser_callback(
    app: Dash,
    function_name: str,
    *,
    output: Output,
    inputs: Mapping[str, Input],
    state: Mapping[str, State] | None = None,
    **options: Any,
) -> None:
    """Register `window.dash_clientside.qspace[function_name]` (assets/qspace.js) as a callback.

    The names document the JavaScript function's parameters: it takes the inputs, then the states, in the
    order given here (Dash passes a browser function its arguments by position).
    """
    app.clientside_callback(
        ClientsideFunction(namespace="qspace", function_name=function_name),
        output=output,
        inputs=list(inputs.values()),
        state=list((state or {}).values()),
        **options,
    )
