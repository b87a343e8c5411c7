"""The launch form's callbacks: open it from Explore's selection panel or from the Curriculum page (prefilled),
close it, start the experiment (saving Explore's selection first when it is not saved yet, as its Save button
does). Every output, input and state by name (frontend.callbacks)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.api_shapes import ApiError
from frontend.callbacks import named_callback
from frontend.components import alert
from frontend.context import UiContext
from frontend.errors import Outputs, describe
from frontend.pages.launch.form import (
    CURRENT,
    arm_ref,
    current_option,
    curriculum_option,
    experiment_body,
    parse_seeds,
    saved_match,
    selection_option,
    suite_choices,
)
from frontend.pages.saved import saved_selections

SHOWN = {"display": "flex"}
HIDDEN = {"display": "none"}

# What opening the form fills in (both openers answer the same outputs).
FORM_OUTPUTS = {
    "style": Output(ids.XP_DIALOG, "style", allow_duplicate=True),
    "arm_options": Output(ids.XP_FORM_ARMS, "options", allow_duplicate=True),
    "arms": Output(ids.XP_FORM_ARMS, "value", allow_duplicate=True),
    "base": Output(ids.XP_FORM_BASE, "value", allow_duplicate=True),
    "suite_options": Output(ids.XP_FORM_SUITES, "options", allow_duplicate=True),
    "suites": Output(ids.XP_FORM_SUITES, "value", allow_duplicate=True),
    "form": Output(ids.XP_FORM_DS, "data", allow_duplicate=True),
    "status": Output(ids.XP_FORM_STATUS, "children", allow_duplicate=True),
}


def curricula(ctx: UiContext, ds: int, cur_ids: list[int] | None) -> list[dict[str, Any]]:
    """The curricula built in this browser session that belong to `ds`, newest first (the API lists none)."""
    out = []
    for cid in sorted(set(cur_ids or []), reverse=True):
        try:
            cur = ctx.api.curriculum(int(cid))
        except ApiError:
            continue
        if int(cur.get("dataset_id", ds)) == ds:
            out.append(cur)
    return out


def fill(
    ctx: UiContext,
    ds: int,
    picked: list[str],
    current: dict[str, Any] | None,
    saved: list[Any],
    curs: list[dict[str, Any]],
) -> Outputs:
    """The form's contents: the arms on offer (`current` first when given), the picked ones, the dataset's base
    model, the eval suites (usable ones ticked)."""
    options = [current_option(current["label"], int(current["count"]))] if current else []
    options += [selection_option(s) for s in saved] + [curriculum_option(c) for c in curs]
    suite_options, ticked = suite_choices(ctx.api.eval_suites())
    base = ctx.api.dataset(ds).get("experiment_base_model") or ""
    note = None
    if not base:
        note = alert("This dataset has no experiment base model yet: name one (a LLaVA checkpoint folder).", "info")
    elif not suite_options:
        note = alert("No eval suite is registered (QSPACE_EVAL_SUITES, or data_dir/eval_suites/).", "info")
    return {
        "style": SHOWN,
        "arm_options": options,
        "arms": picked,
        "base": base,
        "suite_options": suite_options,
        "suites": ticked,
        "form": {"ds": ds, "current": current},
        "status": note,
    }


def register(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output=FORM_OUTPUTS,
        inputs={"clicks": Input(ids.XP_OPEN_SELECTION, "n_clicks")},
        state={
            "recipe": State(ids.SEL_RECIPE, "data"),
            "name": State(ids.SEL_NAME, "value"),
            "setup": State(ids.EX_SETUP, "data"),
            "saved_ids": State(ids.SAVED_STORE, "data"),
            "cur_ids": State(ids.CURRICULA_STORE, "data"),
        },
        alert="status",
        prevent_initial_call=True,
    )
    def open_from_selection(
        clicks: int | None,
        recipe: dict[str, Any] | None,
        name: str | None,
        setup: dict[str, Any] | None,
        saved_ids: list[int] | None,
        cur_ids: list[int] | None,
    ) -> Outputs:
        """Explore: the current selection is the arm (the saved one with its recipe, else saved at start)."""
        if not clicks or not setup:
            raise PreventUpdate
        ds = int(setup["ds"])
        saved = saved_selections(ctx, ds, saved_ids)
        current = None
        picked: list[str] = []
        if recipe and recipe.get("body"):
            match = saved_match(saved, recipe["body"])
            if match is not None:
                picked = [f"sel:{match}"]
            else:
                label = (name or "").strip() or str(recipe.get("label") or "selection")
                current = {"recipe": recipe["body"], "label": label, "count": int(recipe.get("count") or 0)}
                picked = [CURRENT]
        return fill(ctx, ds, picked, current, saved, curricula(ctx, ds, cur_ids))

    @named_callback(
        app,
        output=FORM_OUTPUTS,
        inputs={"clicks": Input(ids.XP_OPEN_CURRICULUM, "n_clicks")},
        state={
            "setup": State(ids.CU_SETUP, "data"),
            "saved_ids": State(ids.SAVED_STORE, "data"),
            "cur_ids": State(ids.CURRICULA_STORE, "data"),
        },
        alert="status",
        prevent_initial_call=True,
    )
    def open_from_curriculum(
        clicks: int | None, setup: dict[str, Any] | None, saved_ids: list[int] | None, cur_ids: list[int] | None
    ) -> Outputs:
        """Curriculum: the curriculum built last (in this session) is the arm."""
        if not clicks or not setup:
            raise PreventUpdate
        ds = int(setup["ds"])
        curs = curricula(ctx, ds, cur_ids)
        picked = [f"cur:{curs[0]['id']}"] if curs else []
        return fill(ctx, ds, picked, None, saved_selections(ctx, ds, saved_ids), curs)

    @named_callback(
        app,
        output={"style": Output(ids.XP_DIALOG, "style", allow_duplicate=True)},
        inputs={"clicks": Input(ids.XP_FORM_CLOSE, "n_clicks")},
        prevent_initial_call=True,
    )
    def close(clicks: int | None) -> Outputs:
        if not clicks:
            raise PreventUpdate
        return {"style": HIDDEN}

    @named_callback(
        app,
        output={
            "status": Output(ids.XP_FORM_STATUS, "children", allow_duplicate=True),
            "saved_ids": Output(ids.SAVED_STORE, "data", allow_duplicate=True),
            "arm_options": Output(ids.XP_FORM_ARMS, "options", allow_duplicate=True),
            "arms_value": Output(ids.XP_FORM_ARMS, "value", allow_duplicate=True),
            "form_out": Output(ids.XP_FORM_DS, "data", allow_duplicate=True),
        },
        inputs={"clicks": Input(ids.XP_FORM_START, "n_clicks")},
        state={
            "arms": State(ids.XP_FORM_ARMS, "value"),
            "options": State(ids.XP_FORM_ARMS, "options"),
            "base": State(ids.XP_FORM_BASE, "value"),
            "seeds": State(ids.XP_FORM_SEEDS, "value"),
            "suites": State(ids.XP_FORM_SUITES, "value"),
            "preset": State(ids.XP_FORM_PRESET, "value"),
            "name": State(ids.XP_FORM_NAME, "value"),
            "form": State(ids.XP_FORM_DS, "data"),
            "saved_ids": State(ids.SAVED_STORE, "data"),
            "token": State(ids.TOKEN, "value"),
        },
        alert="status",
        prevent_initial_call=True,
    )
    def start(
        clicks: int | None,
        arms: list[str] | None,
        options: list[dict[str, Any]] | None,
        base: str | None,
        seeds: str | None,
        suites: list[str] | None,
        preset: str | None,
        name: str | None,
        form: dict[str, Any] | None,
        saved_ids: list[int] | None,
        token: str | None,
    ) -> Outputs:
        if not clicks or not form:
            raise PreventUpdate
        ds = int(form["ds"])
        picked = list(arms or [])
        try:
            # Every field is checked before anything is saved; the unsaved selection holds its place meanwhile.
            refs = [{"selection": 0} if a == CURRENT else arm_ref(a) for a in picked]
            request = experiment_body(refs, base, parse_seeds(seeds), suites or [], preset or "", name)
        except ValueError as exc:
            return {"status": alert(str(exc))}
        out: Outputs = {}
        if CURRENT in picked:
            current = form.get("current") or {}
            body = {**current.get("recipe", {}), "name": str(current.get("label") or "selection")[:200]}
            sel = ctx.api.create_selection(ds, body, token=token or None)
            sid = int(sel["id"])
            request["arms"][picked.index(CURRENT)] = {"selection": sid}
            # Saved now: the form (and Explore's saved list) know it by its id, so a second start saves nothing.
            out = {
                "saved_ids": [*(saved_ids or []), sid],
                "arm_options": [o for o in options or [] if o.get("value") != CURRENT] + [selection_option(sel)],
                "arms_value": [f"sel:{sid}" if a == CURRENT else a for a in picked],
                "form_out": {**form, "current": None},
            }
        try:
            exp = ctx.api.create_experiment(ds, request, token=token or None)
        except ApiError as exc:
            return {**out, "status": alert(describe(exc))}
        n_jobs = len(exp.get("jobs") or [])
        href = f"/experiments?{urlencode({'ds': ds, 'exp': exp['id']})}"
        message = html.Div(
            [
                alert(
                    f"Experiment #{exp['id']} is {exp.get('status', 'queued')}: {len(request['arms'])} arm(s) and "
                    f"their random controls, {len(request['seeds'])} seed(s): {n_jobs} training jobs.",
                    "ok",
                ),
                dcc.Link(
                    "Watch it on the Experiments page \u2192",
                    href=href,
                    className="btn btn-primary",
                    id="xp-form-watch",
                ),
            ]
        )
        return {**out, "status": message}
