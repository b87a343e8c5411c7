"""Launching an experiment from where the selection is made: "Train & compare with random" on Explore's
selection panel and on the Curriculum page opens one form (the same ids on both pages: one page shows at a time).

- `form`: the button, the dialog, and the request it sends (pure); `callbacks`: open, close, start.
"""

from __future__ import annotations

from frontend.pages.launch.callbacks import register
from frontend.pages.launch.form import launch_button, launch_dialog

__all__ = ["launch_button", "launch_dialog", "register"]
