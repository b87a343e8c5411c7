"""The dataset's saved selections: Explore lists them, Curriculum offers them as stages."""

from __future__ import annotations

from frontend.api_shapes import ApiError, Selection
from frontend.context import UiContext


def saved_selections(ctx: UiContext, ds: int, session_ids: list[int] | None = None) -> list[Selection]:
    """The dataset's saved selections, newest first."""
    try:
        saved = list(ctx.api.selections(ds))
    except ApiError as exc:
        if exc.status not in (404, 405):
            raise
        saved = []  # an API without the list route: the ones saved in this browser session
        for sid in dict.fromkeys(session_ids or []):
            try:
                sel = ctx.api.selection(int(sid))
            except ApiError:
                continue
            if int(sel.get("dataset_id", ds)) == ds:
                saved.append(sel)
    return sorted(saved, key=lambda s: -int(s["id"]))
