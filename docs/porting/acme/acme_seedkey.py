"""ACME's seed-to-key, as the supplier hands it over (the porting example of docs/porting.md).

The suite calls `key_from_seed(secret, seed, level)`; the profile names it `acme_seedkey:key_from_seed`.
Kept beside the bench file, it is imported from there at load (no PYTHONPATH needed).
"""

from __future__ import annotations

import hashlib


def key_from_seed(secret: bytes, seed: bytes, level: int) -> bytes:
    """Keyed BLAKE2s over the level byte and the seed; the suite cuts it to the profile's key length."""
    return hashlib.blake2s(bytes([level]) + seed, key=secret[:32]).digest()
