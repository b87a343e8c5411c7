"""Datasets: what is there, ingest a new one, start scorer runs and watch them progress.

- `layout`: the page; `panels`: the datasets table, a scorer's form, the runs; `callbacks`: the wiring.
"""

from __future__ import annotations

from frontend.pages.datasets.callbacks import register
from frontend.pages.datasets.layout import layout

__all__ = ["layout", "register"]
