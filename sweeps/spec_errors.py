"""pydantic's validation errors as the spec reports them: a dotted path in the spec, the value given, what is
allowed, and for an unknown key the closest allowed one (did-you-mean)."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["closest", "drop", "error_message", "field_errors", "pydantic_errors"]


def closest(word: str, allowed: list[str]) -> list[str]:
    """The allowed key a typo most likely meant: the closest spelling, else the one key it begins (``clip`` ->
    ``clip_param``); [] if none."""
    close = difflib.get_close_matches(word, allowed, n=1)
    if close:
        return close
    starts = [a for a in allowed if a.startswith(word) or word.startswith(a)]
    return starts if len(starts) == 1 else []


def _path(parts: list[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _locate(data: Any, loc: tuple[Any, ...], missing: bool) -> list[Any] | None:
    """A pydantic error's location as a path in the data given: the member tags pydantic adds for a union
    type ("int", "list[int]") are dropped; None for an error of the union member that does not match the data
    (a dict checked as the list alternative): noise beside the error of the member that does."""
    node, parts = data, []
    for i, part in enumerate(loc):
        if ((isinstance(node, dict) and part in node)
                or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node))):
            node = node[part]
        elif missing and i == len(loc) - 1:
            pass
        elif isinstance(part, str):  # a union member's tag
            if isinstance(node, dict | list) and not part.startswith("dict[" if isinstance(node, dict) else "list["):
                return None
            continue
        parts.append(part)
    return parts


def _model_at(model: type[BaseModel] | None, parts: list[Any]) -> type[BaseModel] | None:
    """The pydantic model that holds the field at parts[:-1] (for the keys it allows), or None."""
    for p in parts[:-1]:
        field = model.model_fields.get(p) if model is not None and isinstance(p, str) else None
        ann = field.annotation if field is not None else None
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model


def error_message(err: Any) -> str:
    """One pydantic error's message, with the value given when the message does not already say it."""
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] not in ("missing", "extra_forbidden") and not isinstance(err["input"], dict) and "got " not in msg:
        msg += f" (got {err['input']!r})"
    return msg


def field_errors(model: type[BaseModel], values: dict[str, Any], field: str, value: Any) -> list[str]:
    """The messages of model's own checks of ``field`` set to ``value`` (the other fields from values; their
    errors, and those of checks across fields, left out): is this value one the field allows?"""
    try:
        model(**{**values, field: value})
    except ValidationError as e:
        return list(dict.fromkeys(error_message(err) for err in e.errors() if err["loc"][:1] == (field,)))
    return []


def pydantic_errors(e: ValidationError, model: type[BaseModel], data: dict[str, Any], prefix: str = ""
                     ) -> tuple[list[tuple[str, str]], list[list[Any]]]:
    """A ValidationError as (path, message) pairs that name the dotted field, the value given and what is
    allowed (an unknown key: the closest allowed one); and the paths (in data) of the values at fault."""
    errors: dict[str, list[str]] = {}
    faulty: list[list[Any]] = []
    for err in e.errors():
        parts = _locate(data, err["loc"], err["type"] == "missing")
        if parts is None:
            continue
        path = ".".join(p for p in (prefix, _path(parts)) if p) or "<spec>"
        msg = error_message(err)
        if err["type"] == "extra_forbidden":
            holder = _model_at(model, parts)
            allowed = sorted(holder.model_fields) if holder is not None else []
            close = closest(str(parts[-1]), allowed)
            where = path.rsplit(".", 1)[0] + "." if "." in path else ""
            msg = (f"unknown key, not permitted (value {err['input']!r}); "
                   + (f"did you mean {where + close[0]!r}?" if close else f"expected one of {allowed}"))
        errors.setdefault(path, [])
        if msg not in errors[path]:
            errors[path].append(msg)
        faulty.append(parts)
    return [(p, "; or ".join(ms)) for p, ms in errors.items()], faulty


def drop(data: dict[str, Any], parts: list[Any]) -> str | None:
    """Remove the value at parts (up to the first list in the way) so the field's default stands in; returns
    the dotted path removed, None if nothing could be (an error of the whole spec)."""
    cut = next((i for i, p in enumerate(parts) if isinstance(p, int)), len(parts))
    parts = parts[:cut]
    if not parts:
        return None
    node = data
    for p in parts[:-1]:
        node = node.get(p) if isinstance(node, dict) else None
    if not isinstance(node, dict) or parts[-1] not in node:
        return None
    del node[parts[-1]]
    return ".".join(parts)
