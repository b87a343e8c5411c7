"""Experiments: the dataset's experiments, one open with its jobs' live progress and its results against the
random controls (never a delta without its CI).

- `layout`: the page; `panels`: the list, the head, the jobs table; `results`: every suite's results, the
  contrasts; `callbacks`: polling and cancel. The figures are `frontend.figures.experiments`'; the launch form is
  `frontend.pages.launch`'.
"""

from __future__ import annotations

from frontend.pages.experiments.callbacks import register
from frontend.pages.experiments.layout import layout

__all__ = ["layout", "register"]
