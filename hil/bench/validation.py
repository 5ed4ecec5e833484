"""Validation errors as the user reads them: one line per problem with the file, the field path, the
value and what is accepted. Shared by every loader of a YAML file (bench, DUT profile, rack, recipes)
and by the checks a loader makes after pydantic (DBC names, seed-to-key modules): this module is the
one owner of that text.

Identifiers (CAN and UDS ids, DIDs, routine ids, session and security subfunctions, board codes)
are shown in hexadecimal (`0x7E0`), as datasheets and traces show them - also in pydantic's own
range messages, which would print the limit in decimal.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

#: Field paths whose integer values are identifiers or board codes: shown in hex.
_IDENTIFIER_PATH = re.compile(r"(^|\.)(dids|routines|sessions|encodings)(\.|$)|(_id|_level|padding|address)$")

#: pydantic range error types -> the words we print before the hex limit.
_RANGE_WORDS = {"less_than_equal": ("le", "at most"), "less_than": ("lt", "below"),
                "greater_than_equal": ("ge", "at least"), "greater_than": ("gt", "above")}


def hex_id(value: int) -> str:
    """An identifier as datasheets write it: 0x7E0, 0xF189, 0x01."""
    return f"0x{value:02X}"


def is_identifier_path(path: str) -> bool:
    """Whether integers at this field path are identifiers (shown in hex)."""
    return bool(_IDENTIFIER_PATH.search(path))


def show_value(value: Any, path: str = "") -> str:
    """A value as an error shows it: identifiers in hex, mappings abbreviated, everything else repr()."""
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int) and is_identifier_path(path):
        return hex_id(value)
    if isinstance(value, dict):
        return "{...}"
    return repr(value)


class FieldProblem(ValueError):
    """A validator's finding about one entry below the field it validates (`key`, a dotted sub-path).

    Raised inside pydantic validators; `format_validation_error` prints it as
    `<file>: <field>.<key>: got <value> - <what>; accepted: <accepted>`.
    """

    def __init__(self, key: str, value: Any, what: str, accepted: str = "") -> None:
        self.key = key
        self.value = value
        self.what = what
        self.accepted = accepted
        super().__init__(f"{key}: got {value!r} - {what}" + (f"; accepted: {accepted}" if accepted else ""))


def problem(source: str, path: str, value: Any, what: str, accepted: str = "") -> str:
    """One error line: file, field path, the value (hex for identifiers), what is wrong and what is accepted."""
    line = f"{source}: {path}: got {show_value(value, path)} - {what}"
    return line + (f"; accepted: {accepted}" if accepted else "")


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
        found = (err.get("ctx") or {}).get("error")
        if isinstance(found, FieldProblem):
            sub = f"{path}.{found.key}" if path != "(top level)" else found.key
            lines.append(problem(source, sub, found.value, found.what, found.accepted))
        elif err["type"] == "extra_forbidden":
            lines.append(f"{source}: {path}: unknown key; accepted here: {_accepted(model, loc)}")
        elif err["type"] == "missing":
            lines.append(f"{source}: {path}: required field is missing")
        elif err["type"] in _RANGE_WORDS and is_identifier_path(path) and isinstance(err.get("input"), int):
            key, words = _RANGE_WORDS[err["type"]]
            limit = (err.get("ctx") or {}).get(key)
            lines.append(problem(source, path, err["input"], f"must be {words} "
                                 f"{hex_id(limit) if isinstance(limit, int) else limit}"))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {path}: got {show_value(err.get('input'), path)} - {msg}")
    return "\n".join(lines)
