"""Dropped, repeated and reordered TransferData blocks, endless data, and a tester that vanishes.

Fault-matrix rows 12 (endless data) and 13 (partial bundle, drop-request). The old image keeps
running throughout; a new tester can always start over.
"""

from __future__ import annotations

from typing import Callable, Iterable

import pytest

from hil.dut.checks import Expected, check_final_state
from hil.bench.contract import MSG_SOC_CORE, Nrc, UpdateState
from hil.errors import UdsError

Filter = Callable[[int, bytes], Iterable[tuple[int, bytes]]]


def drop_block(n: int) -> Filter:
    """Block n is never sent."""
    return lambda c, d: [] if c == n else [(c, d)]


def repeat_block(n: int) -> Filter:
    """Block n is sent twice (a lost positive response makes a tester repeat it)."""
    return lambda c, d: [(c, d), (c, d)] if c == n else [(c, d)]


def swap_blocks(n: int) -> Filter:
    """Blocks n and n+1 arrive in the wrong order."""
    held: list[tuple[int, bytes]] = []

    def f(c: int, d: bytes) -> Iterable[tuple[int, bytes]]:
        if c == n:
            held.append((c, d))
            return []
        if c == n + 1 and held:
            return [(c, d), held.pop()]
        return [(c, d)]
    return f


def wrong_counter(n: int, counter: int) -> Filter:
    return lambda c, d: [(counter, d)] if c == n else [(c, d)]


def endless(total_blocks: int) -> Filter:
    """After the last block, the tester keeps sending data."""
    return lambda c, d: [(c, d), ((c + 1) & 0xFF, d)] if c == total_blocks else [(c, d)]


@pytest.mark.fault(row=13, expect="NRC 0x73, old image keeps running, a new tester restarts")
@pytest.mark.requirement("R156-recovery", "ISO24089-integrity")
@pytest.mark.parametrize("block_filter", [
    pytest.param(drop_block(3), id="transfer-dropped_block"),
    pytest.param(swap_blocks(3), id="transfer-reordered_blocks"),
    pytest.param(wrong_counter(3, 7), id="transfer-wrong_block_counter"),
])
def test_broken_block_sequence_is_refused(block_filter, dut, flasher, images, bench_config, measure):
    baseline = dut.version()
    config = dut.config()
    flasher.block_filter = block_filter
    with pytest.raises(UdsError) as refused:
        flasher.stage(images["update"])
    assert refused.value.nrc == Nrc.WRONG_BLOCK_SEQUENCE_COUNTER, str(refused.value)
    flasher.block_filter = None
    restarted = flasher.stage(images["update"])
    assert restarted.accepted, f"a clean restart after the fault must stage: {restarted.reason.name}"
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.VERIFIED, config=config), measure)


@pytest.mark.fault(row=13, expect="a repeated block is acknowledged and not written twice")
def test_repeated_block_is_acknowledged_not_written_twice(dut, flasher, images, bench_config, measure):
    baseline = dut.version()
    config = dut.config()
    flasher.block_filter = repeat_block(2)
    staged = flasher.stage(images["update"])
    assert staged.accepted, f"image corrupted by a repeated block: {staged.reason.name}"
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.VERIFIED, config=config), measure)


@pytest.mark.fault(row=12, expect="NRC 0x71 on data beyond the announced size, nothing overwritten")
@pytest.mark.requirement("ISO24089-integrity")
def test_endless_transfer_data_is_suspended(dut, flasher, images, bench_config, measure, uds, dut_profile):
    baseline = dut.version()
    config = dut.config()
    image = images["update"]
    per_block = dut_profile.uds.max_block_length - 2  # SID and block counter
    blocks = -(-len(image) // per_block)
    flasher.block_filter = endless(blocks)
    with pytest.raises(UdsError) as refused:
        flasher.stage(image)
    assert refused.value.nrc == Nrc.TRANSFER_DATA_SUSPENDED, str(refused.value)
    check_final_state(dut, bench_config.timing, Expected(baseline, config=config), measure)


@pytest.mark.fault(row=13, expect="NRC 0x24 for out-of-sequence requests")
def test_out_of_sequence_requests_are_refused(dut, flasher, uds, bench_config, measure):
    baseline = dut.version()
    config = dut.config()
    flasher.unlock()
    with pytest.raises(UdsError) as no_download:
        uds.transfer_data(1, b"\x00" * 16)
    assert no_download.value.nrc == Nrc.REQUEST_SEQUENCE_ERROR
    with pytest.raises(UdsError) as no_exit:
        uds.request_transfer_exit()
    assert no_exit.value.nrc == Nrc.REQUEST_SEQUENCE_ERROR
    check_final_state(dut, bench_config.timing, Expected(baseline, config=config), measure)


class TesterVanished(Exception):
    """Raised from a progress hook: the tester stops talking mid-transfer."""

    __test__ = False  # not a test class, whatever its name says


@pytest.mark.fault(row=13, expect="download abandoned after S3, old image runs, a new tester restarts")
@pytest.mark.requirement("R156-recovery")
def test_tester_vanishes_mid_transfer_then_a_new_tester_restarts(dut, flasher, can, images, bench_config, measure,
                                                                 dut_profile):
    baseline = dut.version()
    config = dut.config()

    def vanish(done: int, total: int) -> None:
        if done > total // 2:
            raise TesterVanished(f"tester gone at {done}/{total} bytes")

    flasher.on_progress.append(vanish)
    with pytest.raises(TesterVanished):
        flasher.stage(images["update"])
    flasher.on_progress.clear()
    # No tester: the SOC core keeps running while the ECU's S3 timer runs out.
    window_s = dut_profile.uds.s3_s + 1.0
    frames = can.collect(MSG_SOC_CORE, window_s)
    due = window_s * 1000.0 / bench_config.timing.soc_period_ms
    assert len(frames) >= 0.66 * due, (f"SOC core stalled while the download hung: {len(frames)} frames in "
                                       f"{window_s:g} s, {due:.0f} due")
    restarted = flasher.stage(images["update"])
    assert restarted.accepted, restarted.reason.name
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.VERIFIED, config=config), measure)




@pytest.mark.fault(row=13, expect="RequestTransferExit refuses a download shorter than announced (NRC 0x24); nothing staged")
@pytest.mark.requirement("ISO24089-integrity", "R156-integrity")
def test_short_download_is_refused_at_transfer_exit(dut, flasher, uds, images, bench_config, measure):
    """Announce the whole image, send all but its last block, then ask to exit: the DUT must refuse."""
    import struct

    from hil.bench.contract import SESSION_DEFAULT, Did, Routine

    baseline = dut.version()
    config = dut.config()
    image = images["update"]
    address, _slot, _sector = struct.unpack(">III", uds.read_did(Did.FLASH_LAYOUT))
    flasher.unlock()
    uds.routine(Routine.ERASE_MEMORY)
    per_block = uds.request_download(address, len(image)) - 2  # the DUT's maxNumberOfBlockLength, less SID and counter
    blocks = [image[i:i + per_block] for i in range(0, len(image), per_block)]
    for n, block in enumerate(blocks[:-1], start=1):  # the last block never leaves the tester
        uds.transfer_data(n & 0xFF, block)
    with pytest.raises(UdsError) as refused:
        uds.request_transfer_exit()
    assert refused.value.nrc == Nrc.REQUEST_SEQUENCE_ERROR, f"short download: {refused.value}"
    status = dut.status()
    assert status.state is not UpdateState.DOWNLOADED, "a short download must never count as complete"
    with pytest.raises(UdsError) as no_check:
        uds.routine(Routine.CHECK_PROGRAMMING_DEPENDENCIES)
    assert no_check.value.nrc == Nrc.REQUEST_SEQUENCE_ERROR, str(no_check.value)
    uds.session(SESSION_DEFAULT)  # the tester gives up: the DUT abandons the download
    check_final_state(dut, bench_config.timing, Expected(baseline, config=config), measure)
