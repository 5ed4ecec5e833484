"""A staged fleet campaign rehearsed on the bench given: the deployment report agrees with every board.

The bench plays vehicle after vehicle of a small fleet (its own hardware variant; baseline restored,
VIN and vehicle group provisioned between vehicles) and acts as each vehicle's gateway: background
download while the vehicle drives, install in the depot's charging window. Fault-matrix rows 5
(corrupted download), 24 (link lost mid-download), 9 (a bad build fails its self-test) and 25 (the
outcome recorded: every report entry is reconciled with the board's update history and DTCs). The
white paper's 200-vehicle fleet is benchmarks/fleet_campaign.py and the nightly run (docs/campaigns.md).
"""

from __future__ import annotations

import json

import pytest

from hil.campaign import rehearse_on_bench
from hil.campaign.plan import assign_conditions, fleet_vehicles
from hil.campaign.results import Outcome
from hil.campaign.spec import campaign_from_data
from hil.timing.measure import Measurement

pytestmark = [pytest.mark.destructive]


def _fleet(variant: str, groups: list[str]) -> dict:
    """Two depots of two vehicles, all of the bench's own hardware variant (a bench plays only its variant), in the
    bench's first and last vehicle groups."""
    return {"name": "bench fleet", "vin_prefix": "VBMSBENCH", "depots": [
        {"name": "depot-a", "group": groups[0], "window": {"start": "22:00", "end": "05:00"}, "vehicles": {variant: 2}},
        {"name": "depot-b", "group": groups[-1], "window": {"start": "23:00", "end": "06:00"}, "vehicles": {variant: 2}},
    ]}


def _campaign(name: str, bench_config, stages: list[dict], conditions: dict) -> dict:
    fleet = _fleet(bench_config.dut.hardware_number, list(bench_config.config_packages.groups))
    return {"campaign": name, "release": {"name": "the bench's update", "image": "update"}, "fleet": fleet,
            "stages": stages, "conditions": conditions}


def _record(measure, run) -> None:
    """The rehearsal's verdict as measurements: disagreements with the boards and boards without a working image."""
    measure(Measurement("campaign_report_disagreements", float(len({v for v, _ in run.findings})), "vehicles", 0.0, 0.0))
    measure(Measurement("campaign_vehicles_without_working_image",
                        float(sum(not r.working_image for r in run.results)), "vehicles", 0.0, 0.0))


@pytest.mark.fault(row=[5, 24, 25], expect="corrupted download refused with its reason, lost link resumes, a vehicle "
                                           "never reached is pending; every report entry agrees with the board")
@pytest.mark.requirement("BMS-fleet-campaign", "R156-inform-result", "ISO24089-reporting", "BMS-resumable-download")
def test_staged_campaign_report_agrees_with_every_board(bench, bench_config, images, evidence, measure):
    """A staged campaign on the bench: its deployment report agrees with every board's history"""
    variant = bench_config.dut.hardware_number
    conditions = {"corrupted_download": {"rate": 0.25, "seed": 1}, "link_lost_mid_download": {"rate": 0.25, "seed": 2},
                  "never_connects": {"rate": 0.25, "seed": 3}}
    draft = campaign_from_data(_campaign("bench-campaign", bench_config, [{"name": "all", "rest": True,
                               "success_threshold": 0, "error_threshold": 100}], conditions), "draft")
    met = assign_conditions(draft, fleet_vehicles(draft))
    plain = [v.vin for v in fleet_vehicles(draft) if v.vin not in met]
    assert len(plain) == 1 and len(met) == 3, met
    campaign = campaign_from_data(_campaign("bench-campaign", bench_config, [
        {"name": "canary", "vehicles": plain, "success_threshold": 100, "error_threshold": 0},
        {"name": "rest", "rest": True, "success_threshold": 30, "error_threshold": 40}], conditions), "campaign")
    run = rehearse_on_bench(campaign, bench, evidence)
    _record(measure, run)
    assert run.passed, "the report disagrees with the boards:\n" + "\n".join(f"{v}: {f}" for v, f in run.findings)
    assert run.stopped_at is None, [s.decision.why for s in run.stages]
    by = {r.condition: r for r in run.results}
    update = images.version("update")
    assert (by[None].outcome, by[None].version_after) == (Outcome.UPDATED, update), by[None]
    resumed = by["link_lost_mid_download"]
    assert resumed.outcome is Outcome.UPDATED and resumed.details["link_lost"]["resumed_from"] > 0, resumed.details
    refused = by["corrupted_download"]
    assert (refused.outcome, refused.reason) == (Outcome.REFUSED, "HASH_MISMATCH"), refused
    assert refused.version_after == refused.version_before != update
    assert by["never_connects"].outcome is Outcome.PENDING, by["never_connects"]
    report = json.loads((evidence / "campaign-report.json").read_text())
    assert report["reconciliation"]["disagree"] == 0 and report["counts"]["updated"] == 2, report["counts"]
    assert "HASH_MISMATCH" in (evidence / "campaign-report.md").read_text()


@pytest.mark.fault(row=[9, 25], expect="the bad build rolls back at the canary, the campaign stops, every other vehicle "
                                       "is held on its old release; the report agrees with every board")
@pytest.mark.requirement("BMS-fleet-campaign", "R156-recovery", "R156-inform-result", "ISO24089-reporting")
def test_bad_build_stops_the_campaign_at_the_canary(bench, bench_config, evidence, measure):
    """A build that fails its self-test on the bench's variant stops the campaign at its canary"""
    variant = bench_config.dut.hardware_number
    campaign = campaign_from_data(_campaign("bench-bad-build", bench_config, [
        {"name": "canary", "sample": 1, "success_threshold": 100, "error_threshold": 0},
        {"name": "depot-a", "depots": ["depot-a"], "success_threshold": 90, "error_threshold": 10},
        {"name": "rest", "rest": True, "success_threshold": 90, "error_threshold": 10}],
        {"bad_build": {"variant": variant, "image": "selftest_fail"}}), "campaign")
    run = rehearse_on_bench(campaign, bench, evidence)
    _record(measure, run)
    assert run.passed, "the report disagrees with the boards:\n" + "\n".join(f"{v}: {f}" for v, f in run.findings)
    assert run.stopped_at == "canary", [s.decision.why for s in run.stages]
    canary = [r for r in run.results if r.stage == "canary"]
    assert [(r.outcome, r.reason) for r in canary] == [(Outcome.ROLLED_BACK, "SELFTEST_FAILED")], canary
    held = [r for r in run.results if r.stage != "canary"]
    assert len(held) == 3 and all(r.outcome is Outcome.HELD for r in held), held
    baseline = canary[0].version_before
    assert all(r.version_after == baseline and not r.board.history_new for r in held), held
    text = (evidence / "campaign-report.md").read_text()
    assert "stopped at stage canary" in text and "SELFTEST_FAILED" in text and held[0].vin in text
