"""Corrupted, truncated, unsigned, foreign, downgraded and oversized images are rejected; the running image is untouched.

Fault-matrix rows 5, 6, 7, 10, 11, 12. Every case stages the bad image through the normal UDS
sequence; the DUT must say why (check routine status + update status reason), refuse activation,
and keep running the old image with its configuration.
"""

from __future__ import annotations


import pytest

from hil.dut.checks import Expected, check_evidence, check_final_state
from hil.bench.contract import Nrc, Reason, UpdateState
from hil.errors import UdsError


def _flip(region: str):
    return lambda images, cfg: images.container.flip_bit(images["update"], region)


def _cut_short(images, cfg):
    """The update's download without its last 100 bytes (the container says what a download sends)."""
    image = images["update"]
    return images.container.truncate(image, images.container.size(image) - 100)


def _resign_untrusted(images, cfg):
    return images["unknown_key"]  # the update re-signed with a key the board never saw


def _case(make, reason: Reason, row: int, case_id: str):
    expect = "rejected with a reason, old image untouched, stored counter unchanged"
    return pytest.param(make, reason, id=case_id, marks=pytest.mark.fault(row=row, expect=expect))


CASES = [
    _case(_flip("payload"), Reason.HASH_MISMATCH, 5, "image-flipped_payload_bit"),
    _case(_flip("header"), Reason.HASH_MISMATCH, 5, "image-flipped_header_bit"),
    _case(_flip("protected_tlv"), Reason.HASH_MISMATCH, 5, "image-flipped_protected_tlv_bit"),
    _case(_cut_short, Reason.TRUNCATED, 5, "image-truncated_tlv_area"),
    _case(_flip("signature"), Reason.SIGNATURE_INVALID, 6, "signature-flipped_bit"),
    _case(_resign_untrusted, Reason.UNKNOWN_KEY, 6, "signature-unknown_key"),
    _case(lambda images, cfg: images.container.strip_signature(images["update"]), Reason.UNSIGNED, 6,
          "signature-missing"),
    _case(lambda images, cfg: images["older_version"], Reason.DOWNGRADE_VERSION, 7, "downgrade-older_version"),
    _case(lambda images, cfg: images["wrong_hardware"], Reason.WRONG_HARDWARE, 10, "target-wrong_hardware_id"),
    _case(lambda images, cfg: images["incompatible_config"], Reason.CONFIG_INCOMPATIBLE, 11,
          "compatibility-configuration_schema_unsupported"),
]


@pytest.mark.requirement("R156-integrity", "R155-M16", "ISO24089-integrity", "ISO21434-verification")
@pytest.mark.parametrize(("make_image", "reason"), CASES)
def test_bad_image_is_rejected(request, make_image, reason, dut, flasher, images, bench_config, measure, evidence,
                               console_if_any):
    baseline = dut.version()
    counter = dut.security_counter()
    config = dut.config()
    bad = make_image(images, bench_config)
    staged = flasher.stage(bad)
    assert not staged.accepted, f"the DUT accepted a bad image ({request.node.callspec.id})"
    assert staged.reason is reason, f"check routine reason {staged.reason.name}, expected {reason.name}"
    try:
        flasher.activate()
    except UdsError as refused:
        assert refused.nrc == Nrc.REQUEST_SEQUENCE_ERROR, f"activation of a rejected image: {refused}"
    # Refused outright (an activation routine), or - where activation is the reset itself - without effect:
    # either way the old image must run afterwards, still reporting the rejection.
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.REJECTED, reason, config), measure)
    assert dut.security_counter() == counter, "a rejected image must not move the anti-rollback counter"
    check_evidence(evidence, console_if_any)


@pytest.mark.fault(row=12, expect="NRC 0x31, nothing overwritten")
@pytest.mark.requirement("R156-integrity", "ISO24089-integrity")
def test_oversized_image_is_refused_before_download(dut, flasher, uds, images, bench_config, measure):
    baseline = dut.version()
    address, capacity = flasher.capacity()  # where a download goes, and the most the board takes there
    flasher.unlock()
    flasher.erase()
    with pytest.raises(UdsError) as refused:
        uds.request_download(address, capacity + 4096)
    assert refused.value.nrc == Nrc.REQUEST_OUT_OF_RANGE, str(refused.value)
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.REJECTED, Reason.OVERSIZE), measure)
