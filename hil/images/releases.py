"""The DBC of each firmware release: the tester decodes a board's frames with the messages its build speaks.

The one DBC (benches/dbc/bms.dbc) marks every message with the release that introduced it
(`BA_ "IntroducedIn" BO_ <id> "<version>"`, default "1.0.0"). `release_database(db, "1.1.0")` is that
DBC cut down to the messages of release 1.1.0, so a frame of a newer message is *unknown* to it:
a board that keeps sending a 2.0.0 message after rolling back to 1.0.0 shows up as an unknown frame.
"""

from __future__ import annotations

from typing import Any

import cantools

INTRODUCED_IN = "IntroducedIn"
FIRST_RELEASE = "1.0.0"


def version_tuple(version: str) -> tuple[int, ...]:
    """"1.10.0" -> (1, 10, 0); ValueError naming the text otherwise."""
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        raise ValueError(f"version {version!r} is not dotted numbers like 1.0.0") from None


def introduced_in(message: Any) -> str:
    """The release that introduced `message` (a cantools Message), from its IntroducedIn attribute."""
    specifics = getattr(message, "dbc", None)
    attributes = getattr(specifics, "attributes", {}) or {}
    attr = attributes.get(INTRODUCED_IN)
    return str(attr.value) if attr is not None else FIRST_RELEASE


def release_messages(db: Any, version: str) -> list[str]:
    """Names of the messages release `version` sends (introduced at or before it)."""
    wanted = version_tuple(version)
    return [m.name for m in db.messages if version_tuple(introduced_in(m)) <= wanted]


def release_database(db: Any, version: str) -> cantools.database.can.Database:
    """A database holding only the messages of release `version` (same layouts as `db`)."""
    names = set(release_messages(db, version))
    return cantools.database.can.Database(messages=[m for m in db.messages if m.name in names],
                                          nodes=list(db.nodes), buses=list(db.buses), version=db.version)


def new_messages(db: Any, old: str, new: str) -> list[str]:
    """Messages release `new` sends that release `old` does not."""
    before = set(release_messages(db, old))
    return [n for n in release_messages(db, new) if n not in before]
