"""Scorer parameter forms from the JSON schemas of `/api/scorers`, and back (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ParamField", "form_fields", "params_from_form"]


@dataclass(frozen=True)
class ParamField:
    name: str
    kind: str  # "string" | "integer" | "number" | "boolean" | "enum"
    default: Any
    nullable: bool
    description: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    runtime: bool = False  # speed only (not part of the scorer key)
    title: str = ""


def _resolve(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        merged = dict(defs.get(ref.removeprefix("#/$defs/"), {}))
        merged.update({k: v for k, v in prop.items() if k != "$ref"})
        return merged
    return prop


def form_fields(schema: dict[str, Any]) -> list[ParamField]:
    """One field per property of a pydantic JSON schema; the model name first, speed knobs last."""
    defs = schema.get("$defs") or {}
    fields = []
    for name, raw in (schema.get("properties") or {}).items():
        prop = _resolve(raw, defs)
        options = [_resolve(o, defs) for o in prop.get("anyOf", [prop])]
        nullable = any(o.get("type") == "null" for o in options)
        real = [o for o in options if o.get("type") != "null"] or [{"type": "string"}]
        first = real[0]
        enum = first.get("enum") or ([first["const"]] if "const" in first else None)
        if enum is None and all("const" in o for o in real) and len(real) > 1:
            enum = [o["const"] for o in real]
        if enum:
            kind = "enum"
        else:
            t = first.get("type", "string")
            kind = t if t in ("string", "integer", "number", "boolean") else "string"
        minimum = first.get("minimum", first.get("exclusiveMinimum"))
        fields.append(
            ParamField(
                name=name,
                kind=kind,
                default=prop.get("default"),
                nullable=nullable,
                description=str(prop.get("description", "")),
                choices=tuple(enum or ()),
                minimum=float(minimum) if isinstance(minimum, int | float) else None,
                runtime=bool(prop.get("runtime") or raw.get("runtime")),
                title=str(prop.get("title") or name),
            )
        )
    fields.sort(key=lambda f: (f.runtime, f.name != "model"))
    return fields


def _coerce(field: ParamField, value: Any) -> tuple[bool, Any]:
    """(keep?, value): empty inputs fall back to null (nullable) or to the server's default."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return (True, None) if field.nullable else (False, None)
    if field.kind == "boolean":
        if isinstance(value, str):
            return True, value.lower() in ("true", "1", "yes", "on")
        return True, bool(value)
    if field.kind == "integer":
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{field.name}: {value!r} is not a whole number") from None
        if f != int(f):
            raise ValueError(f"{field.name}: {value!r} is not a whole number")
        return True, int(f)
    if field.kind == "number":
        try:
            return True, float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{field.name}: {value!r} is not a number") from None
    if field.kind == "enum":
        for c in field.choices:
            if str(c) == str(value):
                return True, c
        raise ValueError(f"{field.name}: choose one of {', '.join(map(str, field.choices))}")
    return True, str(value).strip()


def params_from_form(fields: Sequence[ParamField], values: dict[str, Any]) -> dict[str, Any]:
    """The `params` of a run from the form's values; raises ValueError naming the bad field."""
    out: dict[str, Any] = {}
    by_name = {f.name: f for f in fields}
    for name, value in values.items():
        field = by_name.get(name)
        if field is None:
            continue
        keep, v = _coerce(field, value)
        if keep:
            out[name] = v
    return out
