"""Image roles: what a test case may ask the catalogue for (`images["update"]`), and what each must be.

Plain data: the bench loader validates `images.catalogue` against it without importing the catalogue.
"""

from __future__ import annotations

#: Every role a test case may ask for, and what the image must be.
ROLES: dict[str, str] = {
    "baseline": "the image the bench restores the board to (confirmed, lowest security counter)",
    "update": "an ordinary update: newer version, same configuration schema, passes its self-test",
    "major_update": "a newer update that migrates the configuration to a new schema",
    "major_update_selftest_fail": "a configuration-migrating update whose self-test fails",
    "selftest_fail": "an update whose self-test fails (the board must revert)",
    "crash_at_boot": "an update that crashes during start-up (hard fault)",
    "hang": "an update that hangs at start-up until the watchdog fires",
    "timing_overrun": "an update whose SOC task overruns its cycle now and then",
    "wrong_hardware": "an update built for another hardware number",
    "older_version": "a correctly signed image with a lower version than the baseline",
    "higher_security_counter": "an update with a security counter above the baseline's",
    "higher_security_counter_selftest_fail": "like higher_security_counter, but its self-test fails",
    "incompatible_config": "an update that needs a configuration schema the board does not have",
    "largest": "the largest image the slot holds",
    "single_bank_stall": "an update built for a single-bank part: its SOC task stalls while flash is erased",
    "unknown_key": "the update signed with a key the board does not trust",
}
