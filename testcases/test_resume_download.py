"""A background download that loses its link resumes where the board stopped storing, without a new erase.

Fault-matrix row 24 (the white paper's gateway downloading in the background). The board reports
what it has stored (DID role DOWNLOAD_RESUME: size, bytes stored, CRC-32); the Flasher resumes from there. A
resumed image is verified as a whole: one that does not verify is refused like any corrupted image.
"""

from __future__ import annotations

import time

import pytest

from hil.bench import contract
from hil.dut.checks import Expected, check_final_state, wait_dut_up
from hil.bench.contract import Reason, UpdateState
from hil.timing.measure import Measurement

pytestmark = [pytest.mark.destructive]


class LinkLost(Exception):
    """The gateway's link drops mid-transfer (raised from the Flasher's progress hook)."""


def _interrupt_at(flasher, fraction: float) -> None:
    def hook(sent: int, total: int) -> None:
        if sent >= total * fraction:
            raise LinkLost(f"link lost after {sent} of {total} bytes")
    flasher.on_progress.append(hook)


def _interrupted_download(flasher, image: bytes, fraction: float = 0.5) -> None:
    _interrupt_at(flasher, fraction)
    with pytest.raises(LinkLost):
        flasher.stage(image)
    flasher.on_progress.clear()


def _interrupt(how: str, dut, uds, psu, bench_config) -> None:
    if how == "tester_vanishes":
        # A new tester opens its own session: the board abandons the transfer (and keeps what it stored).
        uds.session(contract.SESSION_DEFAULT)
    elif how == "ecu_reset":
        uds.ecu_reset()
        time.sleep(0.3)
    else:
        psu.power_cycle(0.5)
    wait_dut_up(dut, bench_config.dut.boot_timeout_s * 2)


@pytest.mark.fault(row=24, expect="resumes from the stored offset without erasing; the image installs")
@pytest.mark.requirement("BMS-resumable-download", "R156-recovery")
@pytest.mark.parametrize("how", ["tester_vanishes", "ecu_reset", "power_cut"],
                         ids=["download-tester_vanishes", "download-ecu_reset", "download-power_cut"])
def test_interrupted_download_resumes(how, dut, uds, psu, flasher, images, bench_config, measure):
    image = images["update"]
    baseline = dut.version()
    _interrupted_download(flasher, image)
    _interrupt(how, dut, uds, psu, bench_config)
    assert dut.version() == baseline, "the running image changed during an interrupted download"
    phases_before = len(flasher.phases)
    staged = flasher.stage(image, resume=True)
    phases = [p.value for p, _t in flasher.phases[phases_before:]]
    assert staged.resumed_from > 0, "the board reported nothing to resume (DID role DOWNLOAD_RESUME)"
    assert "erase" not in phases, f"a resumed download must not erase: phases {phases}"
    assert staged.accepted, staged.reason
    measure(Measurement("download_resumed_from", staged.resumed_from / staged.size * 100, "%", 1.0, 100.0))
    flasher.activate()
    outcome = flasher.wait_outcome()
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(images.version("update"), UpdateState.SUCCESS, Reason.NONE), measure)


@pytest.mark.fault(row=24, expect="a resumed image that does not verify is refused (HASH_MISMATCH); old image runs")
@pytest.mark.requirement("BMS-resumable-download", "R156-integrity", "ISO24089-integrity")
def test_resumed_image_that_does_not_verify_is_refused(dut, uds, psu, flasher, images, bench_config, measure):
    image = images["update"]
    baseline = dut.version()
    _interrupted_download(flasher, image)
    _interrupt("tester_vanishes", dut, uds, psu, bench_config)
    # The rest of the download arrives corrupted: one bit flipped near the end of the payload.
    bad = images.container.flip_bit(image, "payload", -8 * 64)
    staged = flasher.stage(bad, resume=True)
    assert staged.resumed_from > 0, "expected a resumed download"
    assert not staged.accepted and staged.reason is Reason.HASH_MISMATCH, staged
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.REJECTED, Reason.HASH_MISMATCH), measure)
