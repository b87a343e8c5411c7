"""Which axes a page can plot: the metrics of finished scorer runs, the paper's shortcuts, their labels."""

from __future__ import annotations

from frontend.api_shapes import Axis

SHORTCUTS = {"loss", "clip"}
MAIN_METRIC = {"clip": "similarity", "mllm_loss": "loss_sum", "lm_loss": "loss_sum", "ifd": "ifd", "length": "tokens"}


def axis_choices(axes: list[Axis]) -> tuple[list[dict[str, str]], dict[str, str], dict[str, str]]:
    """(dropdown options of finished runs' metrics, label per axis, shortcut -> concrete axis).

    Shortcuts follow the API: `clip` = the newest finished clip run's similarity, `loss` = the newest
    finished mllm_loss (else lm_loss) run's loss_sum. Options use concrete `RUN:METRIC` axes so a saved
    recipe names the run it was drawn from.
    """
    options: list[dict[str, str]] = []
    labels: dict[str, str] = {}
    shortcut: dict[str, str] = {}
    newest: dict[str, tuple[int, str]] = {}
    for a in axes:
        name = str(a.get("axis", ""))
        if a.get("status", "done") != "done":
            continue
        concrete = f"{a['run_id']}:{a['metric']}" if a.get("run_id") is not None and a.get("metric") else name
        label = str(a.get("label") or f"{a.get('kind', '')} {a.get('metric', '')} (run {a.get('run_id', '')})")
        if name in SHORTCUTS:  # an API that lists its shortcuts too
            shortcut[name] = concrete
            labels.setdefault(concrete, label)
            continue
        if concrete not in labels:
            options.append({"label": label, "value": concrete})
        labels[concrete] = label
        kind, metric, run = str(a.get("kind", "")), str(a.get("metric", "")), int(a.get("run_id") or 0)
        if MAIN_METRIC.get(kind) == metric and run >= newest.get(kind, (-1, ""))[0]:
            newest[kind] = (run, concrete)
    if "clip" not in shortcut and "clip" in newest:
        shortcut["clip"] = newest["clip"][1]
    if "loss" not in shortcut:
        for kind in ("mllm_loss", "lm_loss"):
            if kind in newest:
                shortcut["loss"] = newest[kind][1]
                break
    for short, concrete in shortcut.items():  # a shortcut whose run is not listed on its own
        if concrete not in {o["value"] for o in options}:
            options.append({"label": labels.get(concrete, short), "value": concrete})
    return options, labels, shortcut


def default_axes(options: list[dict[str, str]], shortcut: dict[str, str]) -> tuple[str | None, str | None]:
    """x = the paper's loss, y = its CLIP score; otherwise the first two axes there are."""
    values = [o["value"] for o in options]
    x = shortcut.get("loss")
    y = shortcut.get("clip")
    rest = [v for v in values if v not in (x, y)]
    if x is None and rest:
        x = rest.pop(0)
    if y is None:
        y = rest.pop(0) if rest else x
    return x, y


def metric_name(axis: str) -> str:
    """'3:loss_sum' -> 'loss_sum' (what a gallery card shows beside each value)."""
    return axis.partition(":")[2] or axis


def short_label(label: str) -> str:
    return label if len(label) <= 48 else label[:47] + "…"
