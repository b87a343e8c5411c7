"""Scorers: pure classes that turn ScoreItems into ScoreResults (model loading, batching, the maths).

Import :func:`build_scorer` from :mod:`workers.scorers.registry`; this package import stays light.
"""

from workers.torch_compat import ensure_torchvision

ensure_torchvision()  # before anything here imports open_clip or transformers
