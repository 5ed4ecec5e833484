"""SecurityAccess resists brute force: wrong keys, then too many attempts, then the lockout delay.

Fault-matrix row 16 (ISO 14229 0x27; R155 Annex 5 threats to update procedures). How many attempts the
board allows and how long it then refuses: the DUT profile's `security.max_attempts` and `delay_s`.
"""

from __future__ import annotations

import time

import pytest

from hil.bench.contract import SESSION_PROGRAMMING, Nrc
from hil.errors import UdsError
from hil.timing.measure import Measurement

#: How often the tester asks again while the delay runs.
POLL_S = 0.25


class _WrongKey:
    """A security config whose key is always wrong (the tester guesses)."""

    def __init__(self, real) -> None:
        self.real = real
        self.level = real.level

    def compute_key(self, seed: bytes) -> bytes:
        return bytes(b ^ 0xFF for b in self.real.compute_key(seed))


@pytest.mark.fault(row=16, expect="0x35 for wrong keys, 0x36 at the limit, 0x37 during the delay, then unlock works")
@pytest.mark.requirement("R155-M16", "ISO21434-verification")
def test_security_access_brute_force_is_locked_out(uds, bench_config, dut_profile, measure):
    security = bench_config.dut.security
    attempts, delay_s = dut_profile.security.max_attempts, dut_profile.security.delay_s
    uds.session(SESSION_PROGRAMMING)
    nrcs = []
    for _ in range(attempts):
        with pytest.raises(UdsError) as wrong:
            uds.unlock(_WrongKey(security))
        nrcs.append(wrong.value.nrc)
    locked_at = time.monotonic()
    expected = [Nrc.INVALID_KEY] * (attempts - 1) + [Nrc.EXCEEDED_NUMBER_OF_ATTEMPTS]
    assert nrcs == expected, f"{attempts} wrong keys answered {[hex(n or 0) for n in nrcs]}, expected {[hex(n) for n in expected]}"
    if delay_s > 0:
        with pytest.raises(UdsError) as delayed:
            uds.unlock(security)
        assert delayed.value.nrc == Nrc.REQUIRED_TIME_DELAY_NOT_EXPIRED, str(delayed.value)
    margin_s = bench_config.tester.host_margin_ms / 1000.0
    deadline = locked_at + delay_s + margin_s + 5.0
    while True:  # the delay is the DUT's; poll until it lets us in, bounded
        try:
            uds.unlock(security)
            break
        except UdsError as exc:
            assert exc.nrc == Nrc.REQUIRED_TIME_DELAY_NOT_EXPIRED, str(exc)
            assert time.monotonic() < deadline, f"lockout delay did not end within {deadline - locked_at:.1f} s"
            time.sleep(POLL_S)
    # The board refused for at least its delay (less the response time) and let the tester in soon after it.
    lockout = measure(Measurement("security_access_lockout_s", time.monotonic() - locked_at, "s",
                                  max(0.0, delay_s - 0.1), delay_s + POLL_S + margin_s))
    assert lockout.passed, str(lockout)
