"""A known state after every test, also after a failure: nominal power, emulators safe, the DUT on its
baseline image, configuration and vehicle group, no staged or reverted image left - or the bench is broken.

The plugin calls this policy; how an image is put back is the DUT profile's restore strategy
(hil/dut/restore.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hil.bench.bench import Bench
from hil.bench.contract import BootMode, Reason, UpdateState
from hil.dut.dut import Dut, wait_dut_up
from hil.errors import BenchBroken, HilTimeout
from hil.plugin.images import ImageStore

@dataclass
class Baseline:
    """What the bench goes back to besides the baseline image: the DUT's configuration and vehicle group as
    found when the bench was opened (None until then)."""

    config: dict[str, Any] | None = None
    group: str | None = None


def known_state(b: Bench, baseline: Baseline, destructive: bool) -> None:
    """Nominal power, load emulator and vehicle safe, DUT on its baseline image and configuration.

    Raises HilError or OSError when the bench cannot be brought back (the caller marks it broken)."""
    if b.load is not None:
        b.load.safe_state()
    if b.vehicle is not None:
        b.vehicle.safe_state()
    b.supply.power_on()
    restore_baseline(b, baseline, destructive)


def restore_baseline(b: Bench, baseline: Baseline, destructive: bool) -> None:
    """The baseline image (through the profile's restore strategy when it differs), configuration and group."""
    dut = b.make_dut()
    try:
        wait_dut_up(dut, b.cfg.dut.boot_timeout_s * 2)
    except HilTimeout as exc:
        raise BenchBroken(f"DUT does not answer UDS: {exc}") from exc
    info = dut.boot_info()
    store = ImageStore(b.cfg)
    image = store.baseline()
    version = dut.version()
    status = dut.status()
    parsed = store.container.read(image)
    needs_image = (info.mode is BootMode.RECOVERY or not info.confirmed or version != parsed.version_str
                   or status.state not in (UpdateState.SUCCESS, UpdateState.IDLE, UpdateState.ROLLED_BACK,
                                           UpdateState.REJECTED, UpdateState.VERIFIED, UpdateState.DOWNLOADED))
    # The baseline's security counter is the baseline image's own (the restore path sets the board's to it):
    # a stored counter above it (an irreversible case confirmed a higher one) needs the restore too.
    baseline_counter = parsed.security_counter
    if needs_image or (destructive and dut.security_counter() > baseline_counter):
        from hil.dut.restore import restore_strategy

        restore_strategy(b.cfg.profile.restore).restore(b, image, b.cfg.dut.baseline_image)
    if baseline.group is not None and dut.vehicle_group() != baseline.group:
        dut.provision_vehicle_group(baseline.group)
    if baseline.config is not None and dut.config() != baseline.config:
        dut.write_config(baseline.config)
    clear_update_state(b, dut)


#: Update states after which the inactive slot holds nothing of a test: the confirmed baseline with its
#: backup (SUCCESS), or an erased slot (IDLE without a reason).
KNOWN_UPDATE_STATES = (UpdateState.SUCCESS, UpdateState.IDLE)


def clear_update_state(b: Bench, dut: Dut) -> None:
    """No test inherits a staged, rejected or reverted image: such a slot is erased (the contract's erase
    routine), so every test starts with the update status IDLE or SUCCESS and a known secondary slot."""
    status = dut.status()
    if status.state in KNOWN_UPDATE_STATES and status.reason is Reason.NONE:
        return
    b.programmer.discard()
    after = dut.status()
    if after.state not in KNOWN_UPDATE_STATES or after.reason is not Reason.NONE:
        raise BenchBroken(f"update status {status.state.name}/{status.reason.name} could not be cleared: "
                          f"after the erase routine it is {after.state.name}/{after.reason.name}")
