"""Explore: the quality plane, regions (lasso, box, the paper's presets), the selection panel, gallery.

- `layout`: the controls and the plane; `panels`: the selection column, gallery and detail overlay, and
  what the callbacks put in them; `query`: what the controls ask of the API; `callbacks`: the wiring;
  `waiting`: the poll of the waiting state the page shows while its scores are still being computed.
"""

from __future__ import annotations

from frontend.pages.explore.callbacks import register
from frontend.pages.explore.layout import layout
from frontend.pages.explore.query import preview_page, selection_body

__all__ = ["layout", "preview_page", "register", "selection_body"]
