"""The `images` fixture's store: firmware images by role, recipe name or path, built and signed on demand."""

from __future__ import annotations

import time

import pytest

from hil.bench.config import BenchConfig


class ImageStore:
    """Firmware images by role (the bench's image catalogue), recipe name or path, built and signed on demand.

    `images["update"]` is the catalogue's image for that role (hil/images/catalogue.py ROLES). A role the
    bench neither maps nor can derive skips the asking case, naming the role and what is missing; the
    fault matrix then reports the row NOT COVERED. Any other name is a recipe (virtual bench) or a path.
    """

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self._cache: dict[str, bytes] = {}
        self.used: list[tuple[float, str]] = []  # (wall clock, name): which test used which image

    def get(self, name: str) -> bytes:
        """The image, or MissingImage naming the role and the reason (for callers outside a test)."""
        from hil.images.catalogue import DERIVED, catalogue_of, resolve_image

        self.used.append((time.time(), name))
        if name not in self._cache:
            derived = name in DERIVED and name not in catalogue_of(self.cfg)
            update = self.get("update") if derived else None  # cached: derived roles re-sign the update
            self._cache[name] = resolve_image(name, self.cfg, update)
        return self._cache[name]

    def __getitem__(self, name: str) -> bytes:
        from hil.images.catalogue import MissingImage

        try:
            return self.get(name)
        except MissingImage as exc:
            pytest.skip(f"{MISSING_ROLE_PREFIX}{exc.role}: {exc.reason}")
            raise  # unreachable: skip raises

    def version(self, name: str) -> str:
        """The version an image reports (SOFTWARE_VERSION once it runs), from the image header."""
        from hil.images.mcuboot import parse_image

        return parse_image(self[name]).version_str

    def security_counter(self, name: str) -> int:
        """The security counter an image carries (0 if none)."""
        from hil.images.mcuboot import parse_image

        return parse_image(self[name]).security_counter or 0

    def baseline(self) -> bytes:
        """The baseline image: the catalogue's `baseline` role, else dut.baseline_image."""
        from hil.images.catalogue import catalogue_of

        return self["baseline"] if "baseline" in catalogue_of(self.cfg) else self[self.cfg.dut.baseline_image]


#: Skip reasons of cases whose image role is missing start with this (the fault matrix shows the reason).
MISSING_ROLE_PREFIX = "image role missing: "
