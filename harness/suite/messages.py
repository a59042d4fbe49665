"""One-line error messages: ``<file>: <key path>: <bad value> <rule>``.

Pydantic's own text is multi-line and names internal types; users see none of it. The first
error (an unknown key first: a misspelt key usually explains a 'missing' one) is rewritten
from its error type, its location and its input.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.suite.model import Suite, did_you_mean

Loc = tuple[str | int, ...]

#: error type -> rule, for errors whose rule needs no context.
_RULES = {
    "int_type": "is not an integer",
    "int_parsing": "is not an integer",
    "int_from_float": "is not an integer",
    "float_type": "is not a number",
    "float_parsing": "is not a number",
    "bool_type": "is not true or false",
    "bool_parsing": "is not true or false",
    "string_type": "is not a string",
    "tuple_type": "is not a list",
    "list_type": "is not a list",
    "too_short": "is empty (give at least one value)",
    "model_type": "is not a mapping",
    "model_attributes_type": "is not a mapping",
    "dict_type": "is not a mapping",
}


def show(value: Any, limit: int = 60) -> str:
    """A value as the user wrote it in YAML (strings quoted), shortened to one short line."""
    import yaml

    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        except yaml.YAMLError:
            text = repr(value)
        text = text.removesuffix("...").strip()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def display_loc(loc: Loc, raw: Any) -> Loc:
    """``loc`` as the user wrote the data: drop steps the loader added, walking ``raw``.

    A scalar wrapped into a 1-tuple gains an index (``batch: 8`` -> ``batch[0]``) and a bare
    layer name gains ``.name``; neither exists in the user's file, so neither is shown.
    """
    out: list[str | int] = []
    node = raw
    for step in loc:
        if isinstance(step, int):
            if isinstance(node, list | tuple):
                out.append(step)
                node = node[step] if 0 <= step < len(node) else None
            continue
        if isinstance(node, dict) or node is None:
            out.append(step)
            node = node.get(step) if isinstance(node, dict) else None
        # else: a scalar the loader expanded into a mapping; the step is not the user's
    return tuple(out)


def render_loc(loc: Loc) -> str:
    text = ""
    for step in loc:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text or "(top level)"


def known_keys(parent: Loc) -> list[str]:
    """The keys a mapping at ``parent`` may hold, found by walking the model classes."""
    model: type[BaseModel] | None = Suite
    for step in parent:
        if isinstance(step, int) or model is None:
            continue
        field = model.model_fields.get(step)
        model = _model_in(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _first(errors: Sequence[Any]) -> dict[str, Any]:  # pydantic's ErrorDetails dicts
    for error in errors:
        if error["type"] in ("extra_forbidden", "invalid_key"):
            return error
    return errors[0]


def _rule(error: dict[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind in _RULES:
        return _RULES[kind]
    if kind == "greater_than":
        if ctx.get("gt") == 0:
            return "is not a positive integer" if isinstance(value, int) else "is not positive"
        return f"is not greater than {ctx.get('gt')}"
    if kind == "greater_than_equal":
        if ctx.get("ge") == 0:
            return "is negative (must be 0 or more)"
        return f"is less than {ctx.get('ge')}"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    message = str(error.get("msg", "is invalid"))
    return message.replace("Input should", "should")


def translate(exc: ValidationError, source: str, raw: Any, notes: dict[Loc, str]) -> str:
    """The one line for ``exc``: file, key path, bad value, rule (+ where an override set it)."""
    error = _first(exc.errors(include_url=False))
    kind = error["type"]
    if kind == "invalid_key":  # a non-string key such as 1 or null; pydantic puts it in loc
        loc = display_loc(tuple(error["loc"])[:-1], raw)
        known = ", ".join(known_keys(loc))
        text = f"key {show(error.get('input'))} is not a known key (known keys: {known})"
        return locate(source, loc, text, notes)
    loc = display_loc(tuple(error["loc"]), raw)
    if kind == "extra_forbidden":
        choices = known_keys(loc[:-1])
        hint = did_you_mean(str(loc[-1]), choices) if loc else ""
        if not hint and choices:
            hint = f" (known keys: {', '.join(choices)})"
        text = f"unknown key{hint}"
    elif kind == "missing":
        text = "required key is missing"
    else:
        text = f"{show(error.get('input'))} {_rule(error)}"
    return locate(source, loc, text, notes)


def locate(source: str, loc: Loc, text: str, notes: dict[Loc, str]) -> str:
    """``<source>: <loc>: <text>``, naming the override that set this key, if one did."""
    suffix = ""
    for path, note in notes.items():
        if loc[: len(path)] == path:
            suffix = f" (set by override {note!r})"
    return f"{source}: {render_loc(loc)}: {text}{suffix}"
