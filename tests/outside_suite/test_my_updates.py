"""A user's own update cases, written from docs/fixtures.md alone: upgrade, revert, signature, downgrade.

Run from any folder: `pytest --bench path/to/bench.yaml` (no -p, no conftest.py).
"""

from pathlib import Path

import pytest

from hil.bench.contract import ActivationMode, Reason, UpdateState
from hil.timing.measure import Measurement

HERE = Path(__file__).parent

pytestmark = pytest.mark.destructive


@pytest.fixture(autouse=True)
def starts_clean(dut):
    """The reference promises every test starts on the baseline with nothing staged."""
    assert dut.status().state in (UpdateState.IDLE, UpdateState.SUCCESS), dut.status()
    return dut.version()


def test_upgrade_is_confirmed_and_keeps_the_old_image_as_backup(dut, flasher, images, measure, starts_clean):
    outcome = flasher.update(images["1.1.0"])
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    m = measure(Measurement("update_seconds", outcome.seconds, "s", 0.0, 60.0))
    assert m.passed, str(m)
    assert dut.version() == "1.1.0"
    assert dut.backup_version() == starts_clean
    dut.reset()
    assert dut.version() == "1.1.0", "a confirmed image must survive a reset"


def test_failing_self_test_reverts_to_the_old_image(dut, flasher, images, starts_clean):
    staged = flasher.stage(images["1.1.0-selftest-fail"])
    assert staged.accepted, staged.reason
    flasher.activate(ActivationMode.TEST)
    outcome = flasher.wait_outcome(timeout=60)
    assert outcome.rolled_back and outcome.reason is Reason.SELFTEST_FAILED, outcome.states_seen
    assert dut.version() == starts_clean
    assert dut.backup_version() == "", "a reverted image is not a backup"


@pytest.mark.parametrize(("make", "reason"), [
    (lambda images: images[str(HERE / "recipes/1.1.0-my-key.yaml")], Reason.UNKNOWN_KEY),
    (lambda images: images.container.strip_signature(images["1.1.0"]), Reason.UNSIGNED),
    (lambda images: images.container.flip_bit(images["1.1.0"], "payload", 1234), Reason.HASH_MISMATCH),
], ids=["untrusted_key", "unsigned", "flipped_bit"])
def test_image_without_a_valid_signature_is_refused(dut, flasher, images, make, reason, starts_clean):
    staged = flasher.stage(make(images))
    assert not staged.accepted
    assert staged.reason is reason, staged.reason.name
    assert dut.status().state is UpdateState.REJECTED
    assert dut.version() == starts_clean
    assert dut.backup_version() == "", "a rejected download is not a backup"


def test_downgrade_is_refused_and_the_counter_stays(dut, flasher, images, starts_clean):
    counter = dut.security_counter()
    staged = flasher.stage(images["0.9.0-downgrade"])
    assert not staged.accepted and staged.reason is Reason.DOWNGRADE_VERSION, staged.reason.name
    assert dut.version() == starts_clean
    assert dut.security_counter() == counter
