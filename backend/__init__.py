"""qspace back end: settings, store, ingest, quality-space queries and the REST API."""

__version__ = "0.1.0"
