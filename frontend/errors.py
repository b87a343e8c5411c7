"""Callbacks never die silently: any failure becomes a sentence in the page's alert area."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from dash import no_update
from dash.exceptions import PreventUpdate

from frontend.api_client import ApiError
from frontend.components import alert

log = logging.getLogger("qspace.ui")


def describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return exc.message
    return f"Something went wrong in the UI ({exc.__class__.__name__}: {exc}). The details are in the server log."


def guarded(n_outputs: int, alert_at: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a callback with `n_outputs` outputs: on an exception every output stays as it was, except
    the one at `alert_at`, which shows the error in words (and is cleared on success by the callback)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            except PreventUpdate:
                raise
            except Exception as exc:
                if not isinstance(exc, ApiError):
                    log.exception("UI callback %s failed", fn.__name__)
                message = alert(describe(exc))
                if n_outputs == 1:
                    return message
                out: list[Any] = [no_update] * n_outputs
                out[alert_at] = message
                return tuple(out)
            finally:
                log.debug("callback %s took %.0f ms", fn.__name__, 1000 * (time.perf_counter() - t0))

        return wrapper

    return deco
