"""The ingest form at work (frontend/pages/datasets/ingesting.py): a 202 starts following the job, its progress
is drawn with a Cancel, and its end is the dataset (the page moves to it), the error in words, or a cancel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from dash import Dash, dcc, html
from dash.development.base_component import Component

from frontend import ids
from frontend.api_shapes import Job
from frontend.context import UiContext
from frontend.pages.datasets.ingesting import ended, ingest_progress, ingest_watch, moving_ingest, register


def job(status: str, done: int = 0, total: int = 1000, **kw: Any) -> Job:
    return cast(Job, {"id": 7, "kind": "ingest", "status": status, "done": done, "total": total, "unit": "byte", **kw})


def texts(node: Any) -> Iterator[str]:
    if isinstance(node, str | int | float):
        yield str(node)
    elif isinstance(node, list | tuple):
        for n in node:
            yield from texts(n)
    elif isinstance(node, Component):
        yield from texts(getattr(node, "children", None))


def text_of(node: Any) -> str:
    return " ".join(texts(node))


class FakeApi:
    def __init__(self, answers: list[Job]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def create_dataset(self, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        self.calls.append(f"POST {body['name']}")
        return {"job": self.answers.pop(0), "dataset_id": None}

    def job(self, job_id: int) -> Job:
        self.calls.append(f"GET {job_id}")
        return self.answers.pop(0)

    def cancel_job(self, job_id: int, token: str | None = None) -> Job:
        self.calls.append(f"CANCEL {job_id}")
        return self.answers.pop(0)


def test_progress_shows_the_bar_the_bytes_and_a_cancel() -> None:
    row = ingest_progress(job("running", 250, 1000, message="ingest 'x': 5,000 samples read"))
    text = text_of(row)
    assert "250 / 1,000 bytes" in text and "25%" in text and "5,000 samples read" in text and "ingesting" in text
    assert "Cancel" in text


def test_the_end_of_a_job_in_words() -> None:
    done = ended(job("done", 1000, result={"dataset_id": 3, "n_samples": 19}))
    assert done["search"] == "?ds=3" and done["poll_off"] is True and "19 samples" in text_of(done["result"])
    failed = ended(job("failed", error="/d/a.json: record 7: field 'image': climbs out\n/d/a.json: record 9: x"))
    assert "search" not in failed and "record 7: field 'image'" in text_of(failed["result"])
    assert "record 9" in text_of(failed["result"])
    assert "cancelled" in text_of(ended(job("cancelled"))["result"]).lower()


def test_an_ingest_under_way_is_followed_when_the_page_opens() -> None:
    others = [job("running", kind="demo_models"), job("done")]
    assert moving_ingest(others) is None
    result, store, poll = ingest_watch(None)
    assert (result.children, store.data, poll.disabled) == (None, None, True)
    newest = {**job("running", 300, 1000), "id": 9}
    assert moving_ingest([*others, job("queued"), cast(Job, newest)]) == newest
    result, store, poll = ingest_watch(cast(Job, newest))
    assert store.data == 9 and poll.disabled is False and "300 / 1,000 bytes" in text_of(result.children)


def app_with(api: FakeApi) -> Dash:
    app = Dash(__name__, suppress_callback_exceptions=True)
    app.server.testing = True
    fields = [ids.INGEST_NAME, ids.INGEST_PATHS, ids.INGEST_IMAGE_ROOT, ids.INGEST_TASK_FIELD, ids.TOKEN]
    app.layout = html.Div(
        [dcc.Location(id=ids.URL), *[dcc.Input(id=i) for i in fields], *ingest_watch()]
    )
    register(app, UiContext(api=api))  # type: ignore[arg-type]
    return app


def key_of(app: Dash, part: str) -> str:
    """The callback's id in Dash (outputs that may be shared carry a hash)."""
    (key,) = [k for k in app.callback_map if part in k]
    return key


def update(app: Dash, body: dict[str, Any]) -> dict[str, Any]:
    r = app.server.test_client().post("/_dash-update-component", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    out: dict[str, Any] = r.get_json()["response"]
    return out


def submit(app: Dash) -> dict[str, Any]:
    outs = [
        (ids.INGEST_RESULT, "children"), (ids.URL, "search"), (ids.INGEST_JOB, "data"), (ids.INGEST_POLL, "disabled"),
    ]  # fmt: skip
    state: dict[str, Any] = {
        ids.INGEST_NAME: "x", ids.INGEST_PATHS: "/d/a.json", ids.INGEST_IMAGE_ROOT: None,
        ids.INGEST_TASK_FIELD: None, ids.INGEST_PROMPTS: None, ids.INGEST_DEDUPE: [], ids.TOKEN: None,
    }  # fmt: skip
    return update(
        app,
        {
            "output": key_of(app, f"{ids.INGEST_JOB}.data"),
            "outputs": [{"id": i, "property": p} for i, p in outs],
            "inputs": [{"id": ids.INGEST_SUBMIT, "property": "n_clicks", "value": 1}],
            "state": [{"id": i, "property": "value", "value": v} for i, v in state.items()],
            "changedPropIds": [f"{ids.INGEST_SUBMIT}.n_clicks"],
        },
    )


def follow(app: Dash, cancel_clicks: list[int], triggered: str) -> dict[str, Any]:
    outs = [(ids.INGEST_RESULT, "children"), (ids.URL, "search"), (ids.INGEST_POLL, "disabled")]
    cancel_id = {"type": ids.INGEST_CANCEL, "job": 7}
    return update(
        app,
        {
            "output": key_of(app, f"{ids.INGEST_RESULT}.children@"),
            "outputs": [{"id": i, "property": p} for i, p in outs],
            "inputs": [
                {"id": ids.INGEST_POLL, "property": "n_intervals", "value": 1},
                [{"id": cancel_id, "property": "n_clicks", "value": c} for c in cancel_clicks],
            ],
            "state": [
                {"id": ids.INGEST_JOB, "property": "data", "value": 7},
                {"id": ids.TOKEN, "property": "value", "value": None},
            ],
            "changedPropIds": [triggered],
        },
    )


def test_submit_follow_and_end_through_the_callbacks() -> None:
    api = FakeApi([job("queued", 0, 1000), job("running", 400, 1000), job("done", 1000, result={"dataset_id": 5})])
    app = app_with(api)
    started = submit(app)
    assert started[ids.INGEST_JOB]["data"] == 7 and started[ids.INGEST_POLL]["disabled"] is False
    moving = follow(app, [0], f"{ids.INGEST_POLL}.n_intervals")
    assert "400 / 1,000 bytes" in str(moving[ids.INGEST_RESULT]["children"])
    finished = follow(app, [0], f"{ids.INGEST_POLL}.n_intervals")
    assert finished[ids.URL]["search"] == "?ds=5" and finished[ids.INGEST_POLL]["disabled"] is True
    assert api.calls == ["POST x", "GET 7", "GET 7"]


def test_cancel_through_the_callbacks() -> None:
    api = FakeApi([job("running", 10, 1000), job("cancelled", 10, 1000)])
    app = app_with(api)
    submit(app)
    out = follow(app, [1], '{"job":7,"type":"' + ids.INGEST_CANCEL + '"}.n_clicks')
    assert "nothing was ingested" in str(out[ids.INGEST_RESULT]["children"]).lower()
    assert out[ids.INGEST_POLL]["disabled"] is True and api.calls == ["POST x", "CANCEL 7"]
