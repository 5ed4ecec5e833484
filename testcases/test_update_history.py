"""The board remembers how every update attempt ended, and keeps a DTC for each one that failed.

Fault-matrix row 25 (the fleet operator's deployment report: which vehicles updated, whether any
rollbacks occurred). History over the DID of role UPDATE_HISTORY (its record layout and depth: the DUT
profile's `records`); DTCs with ReadDTCInformation 0x19, cleared with 0x14.
"""

from __future__ import annotations

import pytest

from hil.bench.contract import DTC_STATUS_FAILED, Dtc, Reason, UpdateState
from hil.errors import UpdateFailed

pytestmark = [pytest.mark.destructive]


def _version(v: tuple[int, int, int]) -> str:
    return ".".join(map(str, v))


@pytest.mark.fault(row=25, expect="history entries for success and rollback; DTC for the rollback; 0x14 clears it")
@pytest.mark.requirement("BMS-update-history", "R156-inform-result", "ISO24089-reporting")
def test_history_and_dtc_after_success_and_rollback(dut, flasher, images, dut_profile):
    dut.clear_dtcs()
    assert dut.dtcs() == {}, "ClearDiagnosticInformation left DTCs behind"
    baseline = dut.version()
    before = len(dut.update_history())

    assert flasher.update(images["update"]).state is UpdateState.SUCCESS
    history = dut.update_history()
    last = history[-1]
    assert (_version(last.from_version), _version(last.to_version), last.result, last.reason) == \
        (baseline, images.version("update"), UpdateState.SUCCESS, Reason.NONE), [str(e) for e in history]
    assert last.boot_count == dut.boot_count(), f"{last} recorded at another boot than the current {dut.boot_count()}"
    assert dut.dtcs() == {}, "a successful update must not set a DTC"

    assert flasher.update(images["selftest_fail"]).state is UpdateState.ROLLED_BACK
    history = dut.update_history()
    last = history[-1]
    assert (last.result, last.reason, _version(last.from_version)) == \
        (UpdateState.ROLLED_BACK, Reason.SELFTEST_FAILED, images.version("selftest_fail")), [str(e) for e in history]
    assert len(history) == min(before + 2, dut_profile.records.history_depth), [str(e) for e in history]
    assert dut.dtcs() == {int(Dtc.UPDATE_ROLLED_BACK): DTC_STATUS_FAILED}

    dut.clear_dtcs()
    assert dut.dtcs() == {}, "0x14 did not clear the DTC"
    assert [str(e) for e in dut.update_history()] == [str(e) for e in history], "0x14 must not erase the history"


@pytest.mark.fault(row=25, expect="a rejected image leaves a history entry with its reason and a DTC")
@pytest.mark.requirement("BMS-update-history", "R156-inform-result")
def test_rejected_image_recorded_with_reason_and_dtc(dut, flasher, images):
    dut.clear_dtcs()
    with pytest.raises(UpdateFailed):
        flasher.update(images.container.flip_bit(images["update"], "payload"))
    last = dut.update_history()[-1]
    assert (last.result, last.reason, _version(last.to_version)) == (UpdateState.REJECTED, Reason.HASH_MISMATCH, images.version("update")), str(last)
    assert dut.dtcs() == {int(Dtc.UPDATE_REJECTED): DTC_STATUS_FAILED}
