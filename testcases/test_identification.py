"""Software identification: the RXSWIN is readable, protected against change, and follows the installed software.

UN R156 7.2.1.2 (per the public text): the RXSWIN identifies the type-approval-relevant software,
can be read (here over diagnostics, the DID of role RXSWIN) and is protected against unauthorised change;
ISO 24089 asks for software identification readable from the ECU. Fixtures only: these cases run
unchanged on a real bench. Where the image is one of this project's builds, its declared RXSWIN is
read from the image file itself (the tester's artefact, not the board) and must match.
"""

from __future__ import annotations

import pytest

from hil.dut.checks import Expected, check_final_state, wait_dut_up
from hil.bench.contract import SESSION_DEFAULT, SESSION_EXTENDED, Did, Reason, UpdateState
from hil.errors import UdsError


def _declared_rxswin(images, image: bytes) -> str | None:
    """The RXSWIN an image of this project's builds declares (None for an image without our descriptor)."""
    from hil.images.payload import PayloadError, decode_payload

    try:
        return decode_payload(images.container.payload(image)).rxswin or None
    except (PayloadError, ValueError):
        return None


def _check_readable(dut, images, image: bytes) -> str:
    rxswin = dut.rxswin()
    assert rxswin, "RXSWIN (DID role RXSWIN) reads empty in application mode"
    assert rxswin.isprintable() and rxswin.isascii(), f"RXSWIN is not printable ASCII: {rxswin!r}"
    assert dut.rxswin() == rxswin, "RXSWIN changed between two reads"
    declared = _declared_rxswin(images, image)
    if declared is not None:
        assert rxswin == declared, f"DUT reports RXSWIN {rxswin!r}, the running image declares {declared!r}"
    return rxswin


@pytest.mark.requirement("R156-rxswin", "ISO24089-identification")
def test_rxswin_is_readable_and_refuses_to_be_written(dut, uds, images, bench_config, psu):
    rxswin = _check_readable(dut, images, images.baseline())
    assert dut.version(), "software version (DID role SOFTWARE_VERSION) reads empty"
    # Unauthorised change: neither without security access nor with the programming level's key.
    uds.session(SESSION_DEFAULT)
    with pytest.raises(UdsError) as refused_default:
        uds.write_did(Did.RXSWIN, b"R156-FORGED-0000")
    uds.session(SESSION_EXTENDED)
    uds.unlock(bench_config.dut.security)
    with pytest.raises(UdsError) as refused_unlocked:
        uds.write_did(Did.RXSWIN, b"R156-FORGED-0000")
    uds.session(SESSION_DEFAULT)
    assert refused_default.value.nrc is not None and refused_unlocked.value.nrc is not None, \
        "the DUT must answer a refused write with a negative response code"
    assert dut.rxswin() == rxswin, "RXSWIN changed after refused writes"
    # Kept across a power cycle (it belongs to the installed software, not to RAM).
    psu.power_cycle(0.5)
    wait_dut_up(dut, bench_config.dut.boot_timeout_s * 2)
    assert dut.rxswin() == rxswin, "RXSWIN changed across a power cycle"


@pytest.mark.destructive
@pytest.mark.requirement("R156-rxswin", "ISO24089-identification", "R156-inform-result")
def test_rxswin_follows_the_installed_software(dut, flasher, images, bench_config, measure):
    before = _check_readable(dut, images, images.baseline())
    outcome = flasher.update(images["update"])
    assert outcome.state is UpdateState.SUCCESS, f"update ended {outcome.state.name}: {outcome.states_seen}"
    check_final_state(dut, bench_config.timing, Expected(images.version("update"), UpdateState.SUCCESS, Reason.NONE), measure)
    after = _check_readable(dut, images, images["update"])
    assert after != before, f"RXSWIN still {before!r} after installing different type-approval-relevant software"
