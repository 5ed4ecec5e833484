"""The campaign file, the plan, the stage decisions, the reconciliation and the report - without a bench.

The rehearsal on a bench is testcases/test_campaign.py; a virtual fleet run is at the end here
(a handful of in-process virtual boards, private names and ports)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from hil.bench.contract import Reason, UpdateHistoryEntry, UpdateState
from hil.campaign.plan import assign_conditions, fleet_vehicles, make_plan, spread_sample
from hil.campaign.reconcile import new_entries, reconcile, working_image_findings
from hil.campaign.results import (BoardRecord, HistoryView, Outcome, StageTally, VehicleResult, decide,
                                  error_threshold_passed)
from hil.campaign.spec import campaign_from_data, load_campaign
from hil.errors import CampaignError

from bench_ports import private_bench_file

ROOT = Path(__file__).resolve().parents[1]


def _data(**changes) -> dict:
    data = {
        "campaign": "unit",
        "release": {"name": "1.1.0", "image": "update"},
        "fleet": {"name": "f", "depots": [
            {"name": "d1", "group": "north", "window": {"start": "22:00", "end": "05:00"},
             "vehicles": {"HW-A": 6, "HW-B": 2}},
            {"name": "d2", "group": "south", "window": {"start": "23:00", "end": "06:00"}, "vehicles": {"HW-A": 8}}]},
        "stages": [{"name": "canary", "sample": 4, "success_threshold": 75, "error_threshold": 25},
                   {"name": "d1", "depots": ["d1"], "success_threshold": 90, "error_threshold": 10},
                   {"name": "rest", "rest": True, "success_threshold": 90, "error_threshold": 10}],
    }
    data.update(changes)
    return data


# --------------------------------------------------------------------------- the file
def test_shipped_campaigns_load_and_plan():
    for f in sorted((ROOT / "campaigns").glob("*.yaml")):
        plan = make_plan(load_campaign(f))
        assert plan.targets and plan.stages, f


def test_white_paper_fleet_is_200_vehicles_at_8_depots_with_5_percent_field_faults():
    plan = make_plan(load_campaign(ROOT / "campaigns/white-paper-fleet.yaml"))
    assert len(plan.fleet) == len(plan.targets) == 200
    assert len(plan.campaign.fleet.depots) == 8 and len(plan.stages) == 3
    assert sum(len(v) for v in plan.conditions().values()) == 10


@pytest.mark.parametrize("change, expected", [
    ({"release": {"name": "r"}}, r"release: .*exactly one of image .* or package"),
    ({"release": {"name": "r", "image": "update", "package": "winter-north"}}, r"exactly one of image"),
    ({"stages": [{"name": "s", "success_threshold": 90, "error_threshold": 10}]},
     r"stages\.0: .*needs vehicles, depots, groups, variants, sample or rest"),
    ({"stages": [{"name": "s", "rest": True, "success_threshold": 190, "error_threshold": 10}]},
     r"stages\.0\.success_threshold: got 190 - .*less than or equal to 100"),
    ({"stages": [{"name": "s", "depots": ["d9"], "success_threshold": 90, "error_threshold": 10}]},
     r"stages\.0\.depots: 'd9' is not in the fleet; accepted: d1, d2"),
    ({"targets": {"variants": ["HW-Z"]}}, r"targets\.variants: 'HW-Z' is not in the fleet; accepted: HW-A, HW-B"),
    ({"conditions": {"never_connects": {"rate": 1.5, "seed": 1}}},
     r"conditions\.never_connects\.rate: got 1.5 - .*less than or equal to 1"),
    ({"conditions": {"link_lost_mid_download": {"rate": 0.1, "seed": 1, "at": [0.9, 0.2]}}},
     r"conditions\.link_lost_mid_download\.at: .*accepted \[low, high\]"),
    ({"conditions": {"lightning": {"rate": 0.1, "seed": 1}}},
     r"conditions\.lightning: unknown key; accepted here: bad_build, corrupted_download"),
    ({"conditions": {"bad_build": {"variant": "HW-Z", "image": "selftest_fail"}}},
     r"conditions\.bad_build\.variant: 'HW-Z' is not in the fleet"),
    ({"release": {"name": "r", "package": "winter-north"},
      "conditions": {"power_cut_mid_install": {"rate": 0.1, "seed": 1}}},
     r"conditions\.power_cut_mid_install: a configuration package release rehearses only"),
    ({"release": {"name": "r", "package": {"north": "winter-north"}}},
     r"release\.package: no package for vehicle groups \['south'\]"),
])
def test_a_bad_campaign_names_the_field_and_what_is_accepted(change, expected):
    with pytest.raises(CampaignError, match=expected):
        campaign_from_data(_data(**change), "c.yaml")


def test_fleet_mistakes_are_named():
    data = _data()
    data["fleet"]["depots"][0]["window"] = {"start": "25:00", "end": "05:00"}
    with pytest.raises(CampaignError, match=r"fleet\.depots\.0\.window\.start: got '25:00' - .*HH:MM"):
        campaign_from_data(data, "c.yaml")
    data = _data()
    data["fleet"]["vehicles"] = [{"vin": "IOQ45678901234567", "depot": "d1", "variant": "HW-A"}]
    with pytest.raises(CampaignError, match=r"fleet\.vehicles\.0\.vin: .*not a VIN"):
        campaign_from_data(data, "c.yaml")
    data["fleet"]["vehicles"] = [{"vin": "WBA12345678901234", "depot": "d7", "variant": "HW-A"}]
    with pytest.raises(CampaignError, match=r"vehicles\.0\.depot: 'd7' is no depot of the fleet; accepted: d1, d2"):
        campaign_from_data(data, "c.yaml")


def test_a_missing_or_broken_file_is_named(tmp_path):
    with pytest.raises(CampaignError, match="campaign file not found"):
        load_campaign(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("campaign: [unclosed")
    with pytest.raises(CampaignError, match="not valid YAML"):
        load_campaign(bad)
    bad.write_text(yaml.safe_dump({**_data(), "stages": []}))
    with pytest.raises(CampaignError, match=r"bad.yaml: stages: got \[\] - .*at least 1"):
        load_campaign(bad)


# --------------------------------------------------------------------------- the plan
def test_generated_vins_are_valid_and_unique():
    c = campaign_from_data(_data(), "c")
    vins = [v.vin for v in fleet_vehicles(c)]
    assert len(vins) == len(set(vins)) == 16
    assert vins[0] == "VBMSF000000000001" and all(len(v) == 17 for v in vins)


def test_stages_take_every_target_once_and_a_canary_spreads_over_variants_and_depots():
    plan = make_plan(campaign_from_data(_data(), "c"))
    taken = [a.vehicle.vin for sp in plan.stages for a in sp.assignments]
    assert sorted(taken) == sorted(v.vin for v in plan.targets) and len(taken) == len(set(taken))
    canary = [a.vehicle for a in plan.stages[0].assignments]
    assert {v.variant for v in canary} == {"HW-A", "HW-B"} and {v.depot for v in canary} == {"d1", "d2"}
    assert all(a.vehicle.depot == "d1" for a in plan.stages[1].assignments)


def test_spread_sample_is_deterministic_and_balanced():
    c = campaign_from_data(_data(), "c")
    vs = fleet_vehicles(c)
    a, b = spread_sample(vs, 6, seed=3), spread_sample(vs, 6, seed=3)
    assert a == b
    assert sum(v.variant == "HW-B" for v in a) == 2 and sum(v.depot == "d2" for v in a) == 3


def test_targets_and_stage_leftovers():
    plan = make_plan(campaign_from_data(_data(targets={"depots": ["d2"]},
                                              stages=[{"name": "all", "rest": True, "success_threshold": 0,
                                                       "error_threshold": 100}]), "c"))
    assert len(plan.targets) == 8 and len(plan.not_targeted) == 8
    with pytest.raises(CampaignError, match=r"8 targeted vehicles are in no stage .* rest: true"):
        make_plan(campaign_from_data(_data(stages=[{"name": "d1", "depots": ["d1"], "success_threshold": 90,
                                                    "error_threshold": 10}]), "c"))
    with pytest.raises(CampaignError, match=r"stages\.1 \(again\): selects no vehicle"):
        make_plan(campaign_from_data(_data(stages=[
            {"name": "all", "rest": True, "success_threshold": 0, "error_threshold": 100},
            {"name": "again", "rest": True, "success_threshold": 0, "error_threshold": 100}]), "c"))


def test_conditions_are_seeded_exclusive_and_never_rounded_away():
    c = campaign_from_data(_data(conditions={
        "bad_build": {"variant": "HW-B", "image": "selftest_fail"},
        "corrupted_download": {"rate": 0.01, "seed": 7},  # 0.16 of a vehicle: still one
        "link_lost_mid_download": {"rate": 0.25, "seed": 8},
        "never_connects": {"rate": 0.1, "seed": 9}}), "c")
    vs = fleet_vehicles(c)
    met = assign_conditions(c, vs)
    assert met == assign_conditions(c, vs)
    names = [n for n, _ in met.values()]
    assert names.count("bad_build") == 2 and names.count("corrupted_download") == 1
    assert names.count("link_lost_mid_download") == 4 and names.count("never_connects") == 2
    assert all(next(v for v in vs if v.vin == vin).variant == "HW-B" for vin, (n, _) in met.items() if n == "bad_build")
    assert all(0.5 <= p["at"] <= 0.9 for n, p in met.values() if n == "link_lost_mid_download")
    too_many = campaign_from_data(_data(conditions={"never_connects": {"rate": 0.6, "seed": 1},
                                                    "corrupted_download": {"rate": 0.6, "seed": 2}}), "c")
    with pytest.raises(CampaignError, match=r"conditions\.never_connects: rate 0.6 needs 10 vehicles, only 6"):
        make_plan(too_many)


# --------------------------------------------------------------------------- stage decisions
def _tally(size: int, **counts: int) -> StageTally:
    t = StageTally(size)
    for name, n in counts.items():
        for _ in range(n):
            t.add(Outcome[name.upper()])
    return t


def test_error_threshold_is_passed_only_above_it():
    assert not error_threshold_passed(25, _tally(8, rolled_back=2))  # 25 % is not above 25 %
    assert error_threshold_passed(25, _tally(8, rolled_back=2, refused=1))
    assert error_threshold_passed(0, _tally(4, failed=1))
    assert not error_threshold_passed(0, _tally(4, pending=3, held=1)), "pending and held are no errors"


def test_stage_decisions_name_their_rates():
    go = decide("canary", 75, 25, _tally(8, updated=6, pending=1, refused=1))
    assert go.go_on and "75.0 % updated" in go.why and "12.5 % errors" in go.why
    stop = decide("canary", 75, 25, _tally(8, updated=4, rolled_back=4))
    assert not stop.go_on and stop.why.startswith("stop: error threshold passed") and "50.0 % errors" in stop.why
    short = decide("pilot", 90, 10, _tally(10, updated=8, pending=2))
    assert not short.go_on and "success threshold not reached" in short.why
    last = decide("rest", 90, 10, _tally(10, updated=8, pending=2), last=True)
    assert last.go_on and last.why.startswith("done") and "not reached (no stage follows)" in last.why
    assert not decide("rest", 90, 10, _tally(10, updated=8, refused=2), last=True).go_on


# --------------------------------------------------------------------------- reconciliation
def _entry(frm, to, result, reason, boot):
    return UpdateHistoryEntry(frm, to, result, reason, boot)


def test_new_history_entries_survive_the_boards_depth_limit():
    old = [_entry((1, 0, 0), (1, 1, 0), UpdateState.SUCCESS, Reason.NONE, b) for b in range(1, 9)]
    new = _entry((1, 0, 0), (1, 1, 0), UpdateState.ROLLED_BACK, Reason.SELFTEST_FAILED, 12)
    assert new_entries(old, old[1:] + [new]) == [new]
    assert new_entries(old, old) == []
    assert new_entries([], [new]) == [new]
    assert new_entries(old[:3], old[:3] + [new, new]) == [new, new]


def _result(outcome: Outcome, reason: str = "", after: str = "1.0.0", history=(), dtcs=None, **board) -> VehicleResult:
    r = VehicleResult("VBMSF000000000001", "d1", "north", "HW-A", "canary", None, outcome, reason=reason,
                      version_before="1.0.0", version_after=after, target_version="1.1.0")
    r.board = BoardRecord(vin=r.vin, group="north", hardware="HW-A", version=after, status="SUCCESS/NONE",
                          boot_mode="APPLICATION", confirmed=True, running=True,
                          history_new=[HistoryView(*h) for h in history], dtcs=dtcs or {})
    for k, v in board.items():
        setattr(r.board, k, v)
    return r


def test_an_entry_that_agrees_with_its_board_has_no_finding():
    assert reconcile(_result(Outcome.UPDATED, after="1.1.0",
                             history=[("1.0.0", "1.1.0", "SUCCESS", "NONE", 2)])) == []
    assert reconcile(_result(Outcome.ROLLED_BACK, "SELFTEST_FAILED",
                             history=[("1.0.0", "1.1.0", "ROLLED_BACK", "SELFTEST_FAILED", 3)],
                             dtcs={"UPDATE_ROLLED_BACK": 0x2B})) == []
    assert reconcile(_result(Outcome.REFUSED, "HASH_MISMATCH", history=[("1.0.0", "1.1.0", "REJECTED", "HASH_MISMATCH", 1)],
                             dtcs={"UPDATE_REJECTED": 0x2B})) == []
    assert reconcile(_result(Outcome.PENDING, "never connected")) == []
    assert reconcile(_result(Outcome.HELD, "held")) == []


@pytest.mark.parametrize("result, finding", [
    (_result(Outcome.ROLLED_BACK, "SELFTEST_FAILED", history=[("1.0.0", "1.1.0", "SUCCESS", "NONE", 3)],
             dtcs={"UPDATE_ROLLED_BACK": 0x2B}), "the board's history (FD09) says 1.0.0 -> 1.1.0: SUCCESS/NONE"),
    (_result(Outcome.ROLLED_BACK, "SELFTEST_FAILED", history=[("1.0.0", "1.1.0", "ROLLED_BACK", "SELFTEST_FAILED", 3)]),
     "DTCs expected ['UPDATE_ROLLED_BACK'], the board has none"),
    (_result(Outcome.UPDATED, after="1.1.0"), "should have one new entry"),
    (_result(Outcome.HELD, "held", history=[("1.0.0", "1.1.0", "SUCCESS", "NONE", 2)]), "nothing installed"),
    (_result(Outcome.UPDATED, after="1.1.0", history=[("1.0.0", "1.1.0", "SUCCESS", "NONE", 2)], vin="VBMSF000000000002"),
     "the board reads VIN 'VBMSF000000000002'"),
    (_result(Outcome.PENDING, "x", group="south"), "vehicle group 'south'"),
    (_result(Outcome.UPDATED, after="1.0.0", history=[("1.0.0", "1.1.0", "SUCCESS", "NONE", 2)]),
     "names 1.0.0 after (expected 1.1.0)"),
])
def test_a_disagreement_with_the_board_is_a_finding(result, finding):
    found = reconcile(result)
    assert any(finding in f for f in found), found


def test_a_board_without_a_working_image_is_a_finding():
    assert working_image_findings(_result(Outcome.HELD)) == []
    found = working_image_findings(_result(Outcome.FAILED, boot_mode="RECOVERY", confirmed=False, running=False))
    assert found and "boot mode RECOVERY" in found[0] and "SOC frames missing" in found[0]


# --------------------------------------------------------------------------- the CLI and the report, on a small virtual fleet
def _small(tmp_path: Path, **conditions) -> Path:
    data = {"campaign": "tiny", "release": {"name": "1.1.0", "image": "update"},
            "fleet": {"name": "tiny", "depots": [
                {"name": "d1", "group": "north", "window": {"start": "22:00", "end": "05:00"},
                 "vehicles": {"BMS-HW-A2": 2, "BMS-HW-B1": 1}}]},
            "stages": [{"name": "canary", "sample": 2, "success_threshold": 100, "error_threshold": 0},
                       {"name": "rest", "rest": True, "success_threshold": 50, "error_threshold": 50}],
            "conditions": conditions}
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_cli_check_shows_the_plan_and_refuses_a_bad_file(tmp_path):
    from click.testing import CliRunner

    from hil.cli.main import main

    out = CliRunner().invoke(main, ["campaign", "check", str(_small(tmp_path))])
    assert out.exit_code == 0, out.output
    assert "stage canary: 2 vehicles" in out.output, out.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("campaign: x\n")
    out = CliRunner().invoke(main, ["campaign", "check", str(bad)])
    assert out.exit_code == 1 and "release: required field is missing" in out.output, out.output
    out = CliRunner().invoke(main, ["campaign", "run", str(_small(tmp_path))])
    assert out.exit_code == 2 and "exactly one of --rack RACK" in out.output, out.output


@pytest.mark.integration
def test_virtual_fleet_run_stops_at_a_bad_canary_and_reports_it(tmp_path):
    """Three in-process virtual boards of two variants (private names, OS-chosen ports): the bad build for one
    variant stops the campaign at its canary; the report, JSON and Allure results say so."""
    import subprocess
    import sys

    campaign = _small(tmp_path, bad_build={"variant": "BMS-HW-B1", "image": "selftest_fail"})
    out_dir = tmp_path / "out"
    env = {**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")}
    done = subprocess.run([sys.executable, "-m", "hil", "campaign", "run", str(campaign), "--fleet", "2",
                           "--bench", str(private_bench_file("benches/sim.yaml", tmp_path, prefix="fleet")), "--out", str(out_dir), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 3, done.stdout + done.stderr
    report = json.loads((out_dir / "campaign-report.json").read_text())
    assert report["stopped_at"] == "canary" and report["passed"], report["reconciliation"]
    canary = {v["variant"]: v for v in report["vehicles"] if v["stage"] == "canary"}
    assert (canary["BMS-HW-B1"]["outcome"], canary["BMS-HW-B1"]["reason"]) == ("rolled back", "SELFTEST_FAILED")
    assert canary["BMS-HW-A2"]["outcome"] in ("updated", "held"), canary  # it may have started before the stop
    assert [v["outcome"] for v in report["vehicles"] if v["stage"] == "rest"] == ["held"]
    assert all(v["working_image"] for v in report["vehicles"])
    results = list((out_dir / "allure-results").glob("*-result.json"))
    assert len(results) == 4, results
    labels = [{lab["name"]: lab["value"] for lab in json.loads(f.read_text())["labels"]} for f in results]
    assert {lab["epic"] for lab in labels} == {"Fleet campaign tiny"}
    assert (out_dir / "campaign-stages.png").stat().st_size > 0
    assert "stopped at stage canary" in (out_dir / "campaign-report.md").read_text()


# --------------------------------------------------------------------------- the runner and the report, with fake benches
class _FakeSlot:
    """A slot whose 'board' ends each vehicle as its field condition says (a bad build rolls back)."""

    def __init__(self, name: str, variants: tuple[str, ...] = ("HW-A", "HW-B"), broken_after: int | None = None):
        self.name = name
        self.variants = variants
        self.broken: str | None = None
        self.played: list[tuple[str, str | None]] = []
        self.broken_after = broken_after
        self.finished = False

    def serves(self, variant: str) -> bool:
        return variant in self.variants

    def play(self, ctx, a, held_by):
        from hil.errors import BenchBroken

        if self.broken_after is not None and len(self.played) >= self.broken_after:
            raise BenchBroken("the supply went silent")
        self.played.append((a.vehicle.vin, held_by))
        outcome = (Outcome.HELD if held_by else Outcome.ROLLED_BACK if a.condition == "bad_build"
                   else Outcome.PENDING if a.condition == "never_connects" else Outcome.UPDATED)
        r = _result(outcome, "SELFTEST_FAILED" if outcome is Outcome.ROLLED_BACK else "",
                    after="1.1.0" if outcome is Outcome.UPDATED else "1.0.0")
        r.vin, r.depot, r.variant, r.stage, r.condition, r.bench = (a.vehicle.vin, a.vehicle.depot, a.vehicle.variant,
                                                                     a.stage, a.condition, self.name)
        r.started_s, r.ended_s = ctx.clock(), ctx.clock() + 1
        return r

    def finish(self, ctx):
        self.finished = True

    def close(self):
        pass


def _ctx(campaign):
    from hil.campaign.gateway import ReleaseArtifacts
    from hil.campaign.pool import Context

    ticks = iter(range(10_000))
    return Context(campaign, ReleaseArtifacts(campaign), lambda: float(next(ticks)))


def test_a_bad_build_in_the_canary_stops_the_campaign_and_holds_everything_after():
    from hil.campaign.runner import rehearse

    c = campaign_from_data(_data(conditions={"bad_build": {"variant": "HW-B", "image": "selftest_fail"}}), "c")
    plan = make_plan(c)
    slots = [_FakeSlot("b1"), _FakeSlot("b2")]
    run = rehearse(plan, slots, _ctx(c), where="fake")
    assert run.stopped_at == "canary"
    assert [s.decision.go_on for s in run.stages] == [False, False, False]
    assert run.stages[0].decision.why.startswith("stop: error threshold passed")
    assert all(r.outcome is Outcome.HELD for r in run.results if r.stage != "canary")
    assert len(run.results) == 16 and all(s.finished for s in slots)
    # Nothing after the stop was played as anything but held.
    assert all(hold == "canary" for s in slots for vin, hold in s.played
               if vin not in {a.vehicle.vin for a in plan.stages[0].assignments})


def test_every_stage_runs_when_the_release_is_good():
    from hil.campaign.runner import rehearse

    c = campaign_from_data(_data(conditions={"never_connects": {"rate": 0.05, "seed": 3}}), "c")
    run = rehearse(make_plan(c), [_FakeSlot("b1")], _ctx(c), where="fake")
    assert run.stopped_at is None and [s.decision.go_on for s in run.stages] == [True, True, True]
    assert run.counts()["updated"] == 15 and run.counts()["pending"] == 1


def test_vehicles_no_bench_can_play_are_refused_before_anything_runs_or_failed_when_benches_break():
    from hil.campaign.runner import rehearse

    c = campaign_from_data(_data(), "c")
    with pytest.raises(CampaignError, match="no bench plays hardware variant HW-B"):
        rehearse(make_plan(c), [_FakeSlot("a-only", ("HW-A",))], _ctx(c), where="fake")
    run = rehearse(make_plan(c), [_FakeSlot("b1", broken_after=2)], _ctx(c), where="fake")
    failed = [r for r in run.results if r.outcome is Outcome.FAILED]
    assert failed and not run.passed and len(run.results) == 16
    assert any("the supply went silent" in f for r in failed for f in r.findings)


def test_the_report_in_every_form(tmp_path):
    from hil.campaign import report
    from hil.campaign.runner import rehearse

    c = campaign_from_data(_data(conditions={"bad_build": {"variant": "HW-B", "image": "selftest_fail"}}), "c")
    run = rehearse(make_plan(c), [_FakeSlot("b1")], _ctx(c), where="fake")
    paths = report.write(run, tmp_path, allure_dir=tmp_path / "allure-results")
    text = paths["markdown"].read_text()
    assert "**The campaign stopped at stage canary**" in text and "12 vehicles were held" in text
    assert "## Rolled back (" in text and "SELFTEST_FAILED" in text and "## Fleet versions" in text
    data = json.loads(paths["json"].read_text())
    assert data["stopped_at"] == "canary" and data["versions"]["1.0.0"]["before"] == 16
    assert data["stages"][0]["error_rate"] == 50.0 and not data["stages"][0]["go_on"]
    assert paths["plot"].stat().st_size > 10_000
    results = [json.loads(f.read_text()) for f in (tmp_path / "allure-results").glob("*-result.json")]
    assert len(results) == 17
    stories = {lab["value"] for r in results for lab in r["labels"] if lab["name"] == "story"}
    assert {"rolled back", "held", "report"} <= stories


# --------------------------------------------------------------------------- rack leases (nothing is started)
def _private_rack(tmp_path: Path, lease: str = "") -> Path:
    from tests.test_cli_and_plugin import _sim_bench

    bench = _sim_bench(tmp_path)
    rack = tmp_path / "rack.yaml"
    rack.write_text(f"rack: r\n{lease}benches:\n  - file: {bench}\n")
    return rack


def test_rack_leases_refuse_a_variant_no_bench_has_and_name_the_holders(tmp_path, monkeypatch):
    from hil.campaign.pool import lease_rack
    from hil.rack.inventory import load_rack
    from hil.rack.lease import FileLeases

    monkeypatch.setenv("HIL_LOCK_DIR", str(tmp_path / "locks"))
    rack = load_rack(_private_rack(tmp_path))
    with pytest.raises(CampaignError, match=r"no bench of hardware variant HW-Z .*its variants: BMS-HW-A2"):
        lease_rack(rack, ["HW-Z"])
    held = FileLeases(directory=tmp_path / "locks", owner="the nightly suite").try_acquire(rack.benches[0].name)
    try:
        with pytest.raises(CampaignError, match=r"no free bench of variant BMS-HW-A2 .*\n.*leased by the nightly suite"):
            lease_rack(rack, ["BMS-HW-A2"])
    finally:
        held.release()


def test_rack_leases_go_through_the_labgrid_coordinator(tmp_path, coordinator):
    from hil.campaign.pool import lease_rack
    from hil.rack.inventory import load_rack
    rack = load_rack(_private_rack(tmp_path, f"lease: {{backend: labgrid, coordinator: '{coordinator}'}}\n"))
    place = rack.lease.place_prefix + rack.benches[0].name
    # Another host's suite holds the bench's place (its own labgrid client process).
    for step in ("create", "acquire"):
        done = _labgrid_client(coordinator, "suite-on-host-b", "-p", place, step)
        assert done.returncode == 0, done.stderr
    with pytest.raises(CampaignError, match=r"no free bench of variant BMS-HW-A2.*\n.*acquired by .*suite-on-host-b"):
        lease_rack(rack, ["BMS-HW-A2"])
    assert _labgrid_client(coordinator, "suite-on-host-b", "-p", place, "release").returncode == 0


from tests.test_rack import _labgrid_client, coordinator  # noqa: E402,F401  (the labgrid coordinator fixture)


@pytest.mark.integration
def test_virtual_fleet_rolls_out_configuration_packages_per_vehicle_group(tmp_path):
    """The white paper's seasonal profiles: a package per vehicle group on boards of two variants; a corrupted
    package is refused with the board's reason, a lost link sends it again, every entry agrees with FD0B."""
    import subprocess
    import sys

    out_dir = tmp_path / "out"
    env = {**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")}
    done = subprocess.run([sys.executable, "-m", "hil", "campaign", "run", str(ROOT / "campaigns/winter-profiles.yaml"),
                           "--fleet", "3", "--bench", str(private_bench_file("benches/sim.yaml", tmp_path, prefix="fleet")), "--out", str(out_dir),
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out_dir / "campaign-report.json").read_text())
    assert report["passed"] and report["stopped_at"] is None, report["reconciliation"]
    by = {v["condition"]: v for v in report["vehicles"] if v["condition"]}
    assert (by["corrupted_download"]["outcome"], by["corrupted_download"]["reason"]) == ("refused", "HASH_MISMATCH")
    assert by["link_lost_mid_download"]["outcome"] == "updated" and by["never_connects"]["outcome"] == "pending"
    after = {v["version_after"] for v in report["vehicles"] if v["outcome"] == "updated"}
    assert after == {"winter-north v2", "winter-south v2"}, after
    assert {v["variant"] for v in report["vehicles"] if v["outcome"] == "updated"} == {"BMS-HW-A2", "BMS-HW-B1"}
