"""Curriculum: the paper's staged builder drawn on the plane, or saved selections as stages; zip export.

- `layout`: the form and the plane; `builder`: the form's defaults and request body (pure);
  `panels`: the planned stages' table and a built curriculum's card; `callbacks`: the wiring.
"""

from __future__ import annotations

from frontend.pages.curriculum.builder import builder_body, builder_defaults, round_sig
from frontend.pages.curriculum.callbacks import register
from frontend.pages.curriculum.layout import layout

__all__ = ["builder_body", "builder_defaults", "layout", "register", "round_sig"]
