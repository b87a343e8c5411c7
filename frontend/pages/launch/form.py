"""The "Train & compare with random" form: its button, the dialog, and what it sends (pure).

An experiment trains the base model on each arm (a saved selection or curriculum) and on the arm's equal-size
random control, once per seed, then scores every model on the eval suites. The form is prefilled: the current
selection or the curriculum built last as the arm, the dataset's experiment base model, seeds 0, 1, 2, every
usable eval suite ticked, the quick training preset.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from dash import dcc, html

from frontend import ids
from frontend.api_shapes import EvalSuite, Selection

CURRENT = "current"  # the arm value of the explore page's selection while it is not saved yet
DEFAULT_SEEDS = "0, 1, 2"
PRESETS = (
    ("quick", "quick: full fine-tuning, 3 epochs (fits the demo's tiny model on a CPU)"),
    ("paper_lora", "paper LoRA recipe: LLaVA-1.5's LoRA fine-tuning (r 128, lr 2e-4, 1 epoch; a GPU)"),
)
MAX_SEED = 2**31 - 1
RECIPE_KEYS = ("x", "y", "region", "task_types", "metadata", "ranges", "sample")


def launch_button(button_id: str) -> html.Button:
    return html.Button(
        "Train & compare with random",
        id=button_id,
        className="btn xp-launch",
        n_clicks=0,
        title="Train the base model on this and on an equal-size random control, per seed, and compare them "
        "on eval suites",
    )


def launch_dialog() -> html.Div:
    """The form over the page (hidden until a launch button opens it)."""
    return html.Div(
        html.Div(
            [
                html.Button("\u00d7", id=ids.XP_FORM_CLOSE, className="detail-close", n_clicks=0, title="close"),
                html.H2("Train & compare with random", className="detail-title"),
                html.P(
                    "Trains the base model on each arm and on an equal-size random sample of the same population "
                    "(its control), once per seed, then scores both on the eval suites. Progress and results: "
                    "the Experiments page.",
                    className="hint",
                ),
                dcc.Store(id=ids.XP_FORM_DS, data=None),
                html.Label("arms", htmlFor=ids.XP_FORM_ARMS, className="field-label"),
                dcc.Dropdown(
                    id=ids.XP_FORM_ARMS, options=[], value=[], multi=True, placeholder="saved selections, curricula"
                ),
                html.Label("base model", htmlFor=ids.XP_FORM_BASE, className="field-label"),
                dcc.Input(
                    id=ids.XP_FORM_BASE,
                    className="input xp-wide",
                    placeholder="a LLaVA-style checkpoint folder on the server, or org/name",
                    maxLength=1000,
                ),
                html.Div(
                    [
                        html.Div(
                            [
                                html.Label("seeds", htmlFor=ids.XP_FORM_SEEDS, className="field-label"),
                                dcc.Input(id=ids.XP_FORM_SEEDS, className="input", value=DEFAULT_SEEDS, maxLength=200),
                            ]
                        ),
                        html.Div(
                            [
                                html.Label("name", htmlFor=ids.XP_FORM_NAME, className="field-label"),
                                dcc.Input(
                                    id=ids.XP_FORM_NAME, className="input", placeholder="optional", maxLength=200
                                ),
                            ]
                        ),
                    ],
                    className="form-grid",
                ),
                html.Label("training", className="field-label"),
                dcc.RadioItems(
                    id=ids.XP_FORM_PRESET,
                    options=[{"label": label, "value": value} for value, label in PRESETS],
                    value="quick",
                    className="checklist",
                    inputClassName="check",
                ),
                html.Label("eval suites", className="field-label"),
                dcc.Checklist(
                    id=ids.XP_FORM_SUITES, options=[], value=[], className="checklist", inputClassName="check"
                ),
                html.Div(
                    html.Button("Start experiment", id=ids.XP_FORM_START, className="btn btn-primary", n_clicks=0),
                    className="btn-row",
                ),
                dcc.Loading(html.Div(id=ids.XP_FORM_STATUS), type="dot", color="#3B82C4"),
            ],
            className="detail-box xp-dialog-box",
        ),
        id=ids.XP_DIALOG,
        className="detail-overlay",
        style={"display": "none"},
    )


# --- what the form holds -----------------------------------------------------------------------------------


def parse_seeds(text: Any) -> list[int]:
    """'0, 1, 2' -> [0, 1, 2]; ValueError says what is wrong (the API's own bounds: 0 <= seed < 2**31)."""
    parts = [p for p in re.split(r"[,\s]+", str(text or "").strip()) if p]
    if not parts:
        raise ValueError("seeds: give at least one seed, e.g. 0, 1, 2")
    seeds = []
    for p in parts:
        if not p.isdigit() or int(p) > MAX_SEED:
            raise ValueError(f"seeds: {p!r} is not a whole number from 0 to {MAX_SEED}")
        seeds.append(int(p))
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds: a seed is listed twice")
    if len(seeds) > 10:
        raise ValueError("seeds: ten at most")
    return seeds


def arm_ref(value: str) -> dict[str, int]:
    """'sel:3' -> {'selection': 3}, 'cur:2' -> {'curriculum': 2} (an arm of the request)."""
    kind, _, raw = str(value).partition(":")
    if kind not in ("sel", "cur") or not raw.isdigit():
        raise ValueError(f"arms: {value!r} is not a saved selection or curriculum")
    return {"selection" if kind == "sel" else "curriculum": int(raw)}


def _plain(v: Any) -> Any:
    """A recipe part compared by value: numbers as floats, missing and empty parts dropped."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, Mapping):
        out = {str(k): _plain(x) for k, x in v.items()}
        return {k: x for k, x in out.items() if x not in (None, [], {})}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def same_recipe(recipe: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """Whether a saved selection's recipe asks for what `body` (Explore's current selection) asks for."""
    return all(_plain(recipe.get(k)) == _plain(body.get(k)) for k in RECIPE_KEYS)


def saved_match(saved: Sequence[Selection], body: Mapping[str, Any]) -> int | None:
    """The newest saved selection with the same recipe as `body`; None when it is not saved."""
    for sel in sorted(saved, key=lambda s: -int(s["id"])):
        if same_recipe(sel.get("recipe") or {}, body):
            return int(sel["id"])
    return None


def selection_option(sel: Selection) -> dict[str, Any]:
    name = sel.get("name") or "selection"
    return {"label": f"selection #{sel['id']} {name} · {int(sel.get('count', 0)):,}", "value": f"sel:{sel['id']}"}


def curriculum_option(cur: Mapping[str, Any]) -> dict[str, Any]:
    stages = len(cur.get("stages") or [])
    name = cur.get("name") or "curriculum"
    count = int(cur.get("count") or 0)
    return {"label": f"curriculum #{cur['id']} {name} · {stages} stages · {count:,}", "value": f"cur:{cur['id']}"}


def current_option(label: str, count: int) -> dict[str, Any]:
    return {"label": f"this selection: {label} · {count:,} (saved when you start)", "value": CURRENT}


def suite_choices(suites: Sequence[EvalSuite]) -> tuple[list[dict[str, Any]], list[str]]:
    """(a checkbox per suite, the usable ones ticked); a malformed suite is shown disabled with its error."""
    options: list[dict[str, Any]] = []
    ticked: list[str] = []
    for s in suites:
        name = str(s.get("name"))
        metrics = ", ".join(s.get("metrics") or [])
        types = s.get("types") or []
        if s.get("error"):
            options.append({"label": f"{name}: cannot be used ({s['error']})", "value": name, "disabled": True})
            continue
        n = int(s.get("n_items") or 0)
        parts = [name, *([f"{n:,} items"] if n else []), *([metrics] if metrics else [])]
        parts += [f"{len(types)} item types"] if types else []
        options.append({"label": " · ".join(parts), "value": name})
        ticked.append(name)
    return options, ticked


def experiment_body(
    arms: Sequence[dict[str, int]], base: str | None, seeds: list[int], suites: Sequence[str], preset: str, name: Any
) -> dict[str, Any]:
    """The POST /api/datasets/{ds}/experiments body: every arm with its random control."""
    if not arms:
        raise ValueError("arms: pick at least one saved selection or curriculum")
    if not suites:
        raise ValueError("eval suites: tick at least one (none is registered? see QSPACE_EVAL_SUITES)")
    if preset not in dict(PRESETS):
        raise ValueError(f"training: unknown preset {preset!r}")
    body: dict[str, Any] = {
        "arms": list(arms),
        "seeds": seeds,
        "control": "random",
        "train": {"preset": preset},
        "eval": {"suites": list(suites)},
    }
    if base and base.strip():
        body["base_model"] = base.strip()
    if isinstance(name, str) and name.strip():
        body["name"] = name.strip()[:200]
    return body
