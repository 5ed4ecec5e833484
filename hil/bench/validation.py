"""Validation errors as the user reads them: one line per problem with the file, the field path, the
value and what is accepted. Shared by every loader of a YAML file (bench, DUT profile, rack, recipes)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError


def _accepted(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Field names accepted at `loc` (for unknown-key errors)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return ""
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return ""
    return ", ".join(n for n in current.model_fields if n != "source")


def format_validation_error(source: str, exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem: file, field path, value, what is accepted."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: {path}: unknown key; accepted here: {_accepted(model, loc)}")
        elif err["type"] == "missing":
            lines.append(f"{source}: {path}: required field is missing")
        else:
            value = err.get("input")
            shown = repr(value) if not isinstance(value, dict) else "{...}"
            lines.append(f"{source}: {path}: got {shown} - {err['msg']}")
    return "\n".join(lines)
