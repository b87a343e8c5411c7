"""qspace's front door: the `qspace` command, the server that wires the API, the UI and an embedded worker together,
and the demo with its synthetic data.

The only package that imports `backend` (data and REST), `workers` (scorers, Celery tasks) and `frontend` (the
UI) together; each of those three stays usable without the others.
"""
