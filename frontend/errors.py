"""Callbacks never die silently: any failure becomes a sentence in the page's alert area."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from dash.exceptions import PreventUpdate

from frontend.api_shapes import ApiError
from frontend.components import alert

log = logging.getLogger("qspace.ui")

Outputs = dict[str, Any]  # what a callback returns: a value per output name


def describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return exc.message
    return f"Something went wrong in the UI ({exc.__class__.__name__}: {exc}). The details are in the server log."


def guarded(outputs: Collection[str], alert_output: str) -> Callable[[Callable[..., Outputs]], Callable[..., Outputs]]:
    """Wrap a callback with named `outputs`: on an exception it answers only `alert_output`, the error in
    words (every other output stays as it was); the callback clears that output itself on success."""
    if alert_output not in outputs:
        raise ValueError(f"the alert output {alert_output!r} is not one of the callback's outputs {sorted(outputs)}")

    def deco(fn: Callable[..., Outputs]) -> Callable[..., Outputs]:
        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Outputs:
            t0 = time.perf_counter()
            try:
                return fn(**kwargs)
            except PreventUpdate:
                raise
            except Exception as exc:
                if not isinstance(exc, ApiError):
                    log.exception("UI callback %s failed", fn.__name__)
                return {alert_output: alert(describe(exc))}
            finally:
                log.debug("callback %s took %.0f ms", fn.__name__, 1000 * (time.perf_counter() - t0))

        return wrapper

    return deco
