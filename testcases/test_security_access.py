"""SecurityAccess resists brute force: wrong keys, then too many attempts, then the lockout delay.

Fault-matrix row 16 (ISO 14229 0x27; R155 Annex 5 threats to update procedures).
"""

from __future__ import annotations

import time

import pytest

from hil.bench.contract import SESSION_PROGRAMMING, Nrc
from hil.errors import UdsError


class _WrongKey:
    """A security config whose key is always wrong (the tester guesses)."""

    def __init__(self, real) -> None:
        self.real = real
        self.level = real.level

    def compute_key(self, seed: bytes) -> bytes:
        return bytes(b ^ 0xFF for b in self.real.compute_key(seed))


@pytest.mark.fault(row=16, expect="0x35 for wrong keys, 0x36 at the limit, 0x37 during the delay, then unlock works")
@pytest.mark.requirement("R155-M16", "ISO21434-verification")
def test_security_access_brute_force_is_locked_out(uds, bench_config):
    security = bench_config.dut.security
    uds.session(SESSION_PROGRAMMING)
    nrcs = []
    for _ in range(3):
        with pytest.raises(UdsError) as wrong:
            uds.unlock(_WrongKey(security))
        nrcs.append(wrong.value.nrc)
    assert nrcs == [Nrc.INVALID_KEY, Nrc.INVALID_KEY, Nrc.EXCEEDED_NUMBER_OF_ATTEMPTS], [hex(n or 0) for n in nrcs]
    with pytest.raises(UdsError) as delayed:
        uds.unlock(security)
    assert delayed.value.nrc == Nrc.REQUIRED_TIME_DELAY_NOT_EXPIRED, str(delayed.value)
    deadline = time.monotonic() + 30.0
    while True:  # the delay is the DUT's; poll until it lets us in, bounded
        try:
            uds.unlock(security)
            break
        except UdsError as exc:
            assert exc.nrc == Nrc.REQUIRED_TIME_DELAY_NOT_EXPIRED, str(exc)
            assert time.monotonic() < deadline, "lockout delay did not end within 30 s"
            time.sleep(0.5)
