"""Example of a vendor's own seed-to-key function, plugged in by dotted path (`hil.bench.seedkeys:aes_cmac`).

A profile names any importable `module:function(secret, seed, level) -> bytes`; the framework cuts
the result to the profile's key length. The tester and the virtual board call the same function.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.ciphers import algorithms


def aes_cmac(secret: bytes, seed: bytes, level: int) -> bytes:
    """AES-CMAC over level byte + seed, keyed with the 16/24/32-byte secret (a common OEM scheme)."""
    mac = CMAC(algorithms.AES(secret))
    mac.update(bytes([level]) + seed)
    return mac.finalize()
