"""How the demo talks: a line for the terminal (:data:`Echo`), and :class:`DemoError` when it cannot go on."""

from __future__ import annotations

import sys
from collections.abc import Callable

Echo = Callable[[str], None]


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do."""


def say(msg: str) -> None:
    """The default :data:`Echo`: a line on stderr (stdout stays free for what a command prints)."""
    print(msg, file=sys.stderr, flush=True)
