"""The configuration store survives updates: preserved on success, migrated forward, restored on rollback.

Fault-matrix row 15 (the BMS use case: protection limits and calibration must never be lost).
"""

from __future__ import annotations

import pytest

from hil.dut.checks import Expected, check_final_state
from hil.bench.contract import Reason, UpdateState

pytestmark = [pytest.mark.destructive]

def _customise(dut, config_packages) -> dict:
    """Customer configuration as the field gets it: the first signed package of the board's vehicle group."""
    name = config_packages.sequence(dut.vehicle_group())[0]
    result = config_packages.apply(name)
    assert result.applied, f"{name}: {result}"
    config = dut.config()
    assert config["profile"] == name, "profile did not become active"
    return config


@pytest.mark.fault(row=15, expect="configuration preserved across a successful update")
@pytest.mark.requirement("BMS-config-preserved")
def test_configuration_preserved_on_success(dut, config_packages, flasher, images, bench_config, measure):
    config = _customise(dut, config_packages)
    outcome = flasher.update(images["update"])
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(images.version("update"), UpdateState.SUCCESS, Reason.NONE, config), measure)


@pytest.mark.fault(row=15, expect="configuration migrated to the new schema, customer values kept")
@pytest.mark.requirement("BMS-config-preserved")
def test_configuration_migrated_by_new_major_version(dut, config_packages, flasher, images, bench_config, measure):
    config = _customise(dut, config_packages)
    schema_before, _crc = dut.config_version()
    outcome = flasher.update(images["major_update"])
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(images.version("major_update"), UpdateState.SUCCESS, Reason.NONE, config), measure)
    schema, _crc = dut.config_version()
    assert schema > schema_before, f"the major update must migrate the configuration past schema {schema_before}, " \
                                   f"DUT reports {schema}"
    assert "balancing_threshold_mV" in dut.config()


@pytest.mark.fault(row=15, expect="configuration restored from its backup when the update rolls back")
@pytest.mark.requirement("BMS-config-preserved", "R156-recovery")
def test_configuration_restored_on_rollback(dut, config_packages, flasher, images, bench_config, measure):
    baseline = dut.version()
    config = _customise(dut, config_packages)
    before = dut.config_version()
    outcome = flasher.update(images["major_update_selftest_fail"])
    assert outcome.state is UpdateState.ROLLED_BACK, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.ROLLED_BACK, Reason.SELFTEST_FAILED),
                      measure)
    assert dut.config() == config, "configuration not restored after rollback"
    assert dut.config_version() == before, "schema/CRC must be back to the pre-update record"
