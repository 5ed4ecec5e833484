"""Dropped, repeated and reordered TransferData blocks, endless data, and a tester that vanishes.

Fault-matrix rows 12 (endless data) and 13 (partial bundle, drop-request). The old image keeps
running throughout; a new tester can always start over. A tester that goes silent finds, after S3,
the default session and a closed transfer - the board's own session timer ran out, with no request
arriving; one that keeps sending TesterPresent keeps its session (S3 and every period here come
from the DUT profile and the bench file).
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

import pytest

from hil.dut.checks import Expected, check_final_state
from hil.bench.contract import (MSG_SOC_CORE, MSG_UPDATE_STATUS, SIG_UPDATE_REASON, SIG_UPDATE_STATE, Did, Nrc, Reason,
                                UpdateState)
from hil.errors import HilTimeout, UdsError
from hil.timing.measure import Measurement

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
@pytest.mark.requirement("ISO24089-integrity", "R156-integrity")
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
    _address, first = flasher.downloads(image)[0]  # the first RequestDownload's data (the family knows its layout)
    blocks = -(-len(first) // per_block)
    flasher.block_filter = endless(blocks)
    with pytest.raises(UdsError) as refused:
        flasher.stage(image)
    assert refused.value.nrc == Nrc.TRANSFER_DATA_SUSPENDED, str(refused.value)
    check_final_state(dut, bench_config.timing, Expected(baseline, config=config), measure)


@pytest.mark.fault(row=13, expect="NRC 0x24 for out-of-sequence requests")
@pytest.mark.requirement("ISO24089-integrity", "R155-M16")
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
    """Announce the first download of the image whole, send all but its last block, then ask to exit: the DUT must refuse."""
    from hil.bench.contract import SESSION_DEFAULT

    baseline = dut.version()
    config = dut.config()
    image = images["update"]
    address, data = flasher.downloads(image)[0]  # the family's first RequestDownload: where, and what
    flasher.unlock()
    flasher.erase()
    per_block = uds.request_download(address, len(data)) - 2  # the DUT's maxNumberOfBlockLength, less SID and counter
    blocks = [data[i:i + per_block] for i in range(0, len(data), per_block)]
    for n, block in enumerate(blocks[:-1], start=1):  # the last block never leaves the tester
        uds.transfer_data(n & 0xFF, block)
    with pytest.raises(UdsError) as refused:
        uds.request_transfer_exit()
    assert refused.value.nrc == Nrc.REQUEST_SEQUENCE_ERROR, f"short download: {refused.value}"
    status = dut.status()
    assert status.state is not UpdateState.DOWNLOADED, "a short download must never count as complete"
    with pytest.raises(UdsError) as no_check:
        flasher.verify(image)  # the family's check step(s) on what arrived
    assert no_check.value.nrc == Nrc.REQUEST_SEQUENCE_ERROR, str(no_check.value)
    uds.session(SESSION_DEFAULT)  # the tester gives up: the DUT abandons the download
    check_final_state(dut, bench_config.timing, Expected(baseline, config=config), measure)


class TesterPaused(Exception):
    """Raised from a progress hook: the tester stops sending blocks (it goes silent, or only keeps the session)."""

    __test__ = False

    def __init__(self, sent: int) -> None:
        self.sent = sent
        super().__init__(f"tester paused after {sent} bytes")


def _pause_download(flasher, image: bytes, fraction: float) -> int:
    """Stage `image` until `fraction` of it is sent, then stop talking; the bytes sent so far."""
    def pause(sent: int, total: int) -> None:
        if sent >= total * fraction:
            raise TesterPaused(sent)

    flasher.on_progress.append(pause)
    try:
        with pytest.raises(TesterPaused) as paused:
            flasher.stage(image)
    finally:
        flasher.on_progress.clear()
    return paused.value.sent


@pytest.mark.fault(row=13, expect="a silent tester: after S3 the board is in its default session on its own, the transfer "
                                  "closed (NRC 0x24), the download abandoned (IDLE/DOWNLOAD_ABORTED) and resumable")
@pytest.mark.requirement("BMS-session-timeout", "R156-recovery")
def test_silent_tester_finds_the_default_session_and_a_closed_transfer_after_s3(dut, flasher, uds, can, images,
                                                                                 dut_profile, bench_config, measure):
    baseline = dut.version()
    config = dut.config()
    image = images["update"]
    s3 = dut_profile.uds.s3_s
    margin = bench_config.tester.host_margin_ms / 1000.0
    cycle = bench_config.timing.soc_period_ms / 1000.0
    _pause_download(flasher, image, 0.5)
    silent_since = time.monotonic()
    # Silence: the tester only listens. The board must end the session by itself and say so on CAN
    # (the update-status message is sent in the cycle after a change of state or reason).
    abandoned = {SIG_UPDATE_STATE: dut_profile.encode(UpdateState.IDLE),
                 SIG_UPDATE_REASON: dut_profile.encode(Reason.DOWNLOAD_ABORTED)}
    with can.recorder(MSG_SOC_CORE) as soc:
        try:
            frame = can.wait_for(MSG_UPDATE_STATUS, abandoned, timeout=s3 + cycle + 2 * margin, since=silent_since)
        except HilTimeout as exc:
            pytest.fail(f"no IDLE/DOWNLOAD_ABORTED on CAN within S3 ({s3:g} s) + {cycle + 2 * margin:g} s of silence: "
                        f"the session timer did not run out with no request arriving\n{exc.seen}")
    measure(Measurement("s3_expiry_after_the_last_request", frame.received - silent_since, "s",
                        s3 - margin, s3 + cycle + margin))
    assert len(soc) >= 0.5 * (frame.received - silent_since) / cycle, f"SOC core stalled: {len(soc)} frames"
    # The same tester comes back: no session change of its own, so whatever it finds the board did.
    assert uds.read_did(Did.ACTIVE_SESSION) == bytes([dut_profile.sessions.default]), "session still open after S3"
    assert flasher.open_transfer is not None, "the paused stage left no transfer to continue"
    counter, block = flasher.open_transfer.next_block()  # the block the tester would have sent next
    with pytest.raises(UdsError) as closed:
        uds.transfer_data(counter, block)
    assert closed.value.nrc == Nrc.REQUEST_SEQUENCE_ERROR, f"TransferData after S3: {closed.value}"
    with pytest.raises(UdsError) as no_exit:
        uds.request_transfer_exit()
    assert no_exit.value.nrc == Nrc.REQUEST_SEQUENCE_ERROR, f"RequestTransferExit after S3: {no_exit.value}"
    status = dut.status()
    assert (status.state, status.reason) == (UpdateState.IDLE, Reason.DOWNLOAD_ABORTED), status
    # What the board had stored stays for a resume.
    resumed = flasher.stage(image, resume=True)
    assert resumed.resumed_from > 0, "the board kept nothing of the abandoned download for a resume (DID role DOWNLOAD_RESUME)"
    assert resumed.accepted, resumed.reason.name
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.VERIFIED, config=config), measure)


@pytest.mark.fault(row=13, expect="TesterPresent with the suppress bit (3E 80) keeps the session and the open transfer "
                                  "beyond S3")
@pytest.mark.requirement("BMS-session-timeout")
def test_tester_present_keeps_the_session_and_the_transfer_beyond_s3(dut, flasher, uds, can, images, dut_profile,
                                                                      bench_config, measure):
    baseline = dut.version()
    config = dut.config()
    image = images["update"]
    s3 = dut_profile.uds.s3_s
    margin = bench_config.tester.host_margin_ms / 1000.0
    sent = _pause_download(flasher, image, 0.25)
    # A gateway keeping the session open: TesterPresent every S3/2.5 (ISO 14229-2's 2 s for S3 = 5 s),
    # for longer than two S3 periods, nothing else.
    hold = 2 * s3 + margin
    start = time.monotonic()
    with can.recorder(MSG_UPDATE_STATUS) as status_frames:
        while time.monotonic() - start < hold:
            uds.tester_present(suppress_response=True)
            can.collect(MSG_SOC_CORE, s3 / 2.5)
    held = time.monotonic() - start
    measure(Measurement("session_held_by_tester_present", held, "s", 2 * s3, None))
    dropped = [f.describe() for f in status_frames
               if f.signals[SIG_UPDATE_REASON] == dut_profile.encode(Reason.DOWNLOAD_ABORTED)]
    assert not dropped, f"the board abandoned the download although TesterPresent kept coming: {dropped}"
    assert uds.read_did(Did.ACTIVE_SESSION) == bytes([dut_profile.sessions.programming]), \
        f"TesterPresent every {s3 / 2.5:g} s did not keep the programming session for {held:.1f} s"
    # The transfer is still open: the rest of its blocks go through with the counters that follow (no new
    # RequestDownload), then the family's remaining downloads, and the board accepts the image.
    staged = flasher.finish_stage(image)
    assert staged.resumed_from == sent, f"the open transfer was taken up at {staged.resumed_from} bytes, paused at {sent}"
    assert staged.accepted, f"the image completed after the hold was rejected: {staged.reason.name}"
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.VERIFIED, config=config), measure)
