"""Rack mode: rack files, bench selection, leases (lock file + heartbeat, labgrid), scheduling, merged reports."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from filelock import FileLock

from hil.errors import BenchBusy, BenchConfigError
from hil.rack.lease import FileLeases, LeaseKeeper, LeaseLost, acquire_one
from hil.rack.inventory import BenchNeed, BenchTags, load_rack, need_from_marks
from hil.rack.scheduling import RackScheduling

from bench_ports import private_bench_data, write_bench

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- rack files
def test_every_rack_file_in_the_repository_loads():
    racks = sorted((ROOT / "benches/racks").glob("*.yaml"))
    assert racks, "benches/racks/*.yaml is empty"
    for path in racks:
        rack = load_rack(path)
        assert rack.benches


def test_sim_rack_has_independent_benches_and_one_on_can_fd():
    rack = load_rack(ROOT / "benches/racks/sim-rack.yaml")
    assert len(rack.benches) >= 2
    assert {b.tags.can for b in rack.benches} == {"classic", "fd"}
    groups = {(b.cfg.can.channel, b.cfg.can.args["port"]) for b in rack.benches}
    flashes = {b.cfg.sim.flash_file for b in rack.benches if b.cfg.sim}
    assert len(groups) == len(flashes) == len(rack.benches)
    # the rack's own numbers, apart from benches/sim*.yaml that other runs use
    shared = {ROOT / "benches/sim.yaml", ROOT / "benches/sim-fd.yaml"}
    for f in shared:
        data = yaml.safe_load(f.read_text())
        assert (data["can"]["channel"], data["can"]["args"]["port"]) not in groups


def _rack(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rack.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(("body", "expected"), [
    ("rack: r\nbenches:\n  - file: {b}\n    colour: red\n", ["benches.0.colour", "unknown key", "accepted here: file, variant, can, capabilities"]),
    ("rack: r\nbenches:\n  - file: {b}\n    can: fast\n", ["benches.0.can", "'classic' or 'fd'"]),
    ("rack: r\nbenches:\n  - file: {b}\n    can: fd\n", ["benches.0.can: got 'fd'", "can.fd False", "accepted here: 'classic'"]),
    ("rack: r\nbenches:\n  - file: {b}\n    capabilities: [console, scope]\n", ["benches.0.capabilities.1", "power_control"]),
    ("rack: r\nlease: {{backend: carrier-pigeon}}\nbenches:\n  - file: {b}\n", ["lease.backend", "'file' or 'labgrid'"]),
    ("rack: r\nbenches:\n  - file: {b}\n  - file: {b}\n", ["benches.1.file", "also benches.0"]),
    ("rack: r\nbenches:\n  - file: missing.yaml\n", ["benches.0.file", "bench file not found"]),
    ("rack: r\nbenches: []\n", ["benches", "at least 1"]),
])
def test_bad_rack_file_names_the_field_and_what_is_accepted(tmp_path, body, expected):
    path = _rack(tmp_path, body.format(b=ROOT / "benches/sim.yaml"))
    with pytest.raises(BenchConfigError) as err:
        load_rack(path)
    text = str(err.value)
    assert str(path) in text
    for part in expected:
        assert part in text, text


def test_capability_the_bench_file_lacks_is_refused(tmp_path):
    data = private_bench_data("benches/sim.yaml", tmp_path)
    del data["console"]
    write_bench(data, tmp_path / "b.yaml")
    path = _rack(tmp_path, "rack: r\nbenches:\n  - file: b.yaml\n    capabilities: [power_control, console]\n")
    with pytest.raises(BenchConfigError, match=r"benches.0.capabilities: console declared but .* has no console section"):
        load_rack(path)


# ---------------------------------------------------------------------- what a test needs
def test_bench_marker_and_fixtures_make_the_need():
    need = need_from_marks([((), {"can": "fd", "capabilities": "debug_probe"})], ["load", "dut"], "t")
    assert need == BenchNeed(frozenset(), "fd", frozenset({"debug_probe", "battery_emulator"}))
    fd = BenchTags("BMS-HW-A2", "fd", frozenset({"power_control", "battery_emulator", "debug_probe"}))
    classic = BenchTags("BMS-HW-A2", "classic", fd.capabilities)
    assert need.served_by(fd) and not need.served_by(classic)
    assert "CAN classic (needs fd)" in need.missing(classic)


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"colour": "red"}, "bench(colour=...) is not a bench tag; accepted: variant, can, capabilities"),
    ({"can": "FD"}, "can='FD'); accepted: classic, fd"),
    ({"capabilities": ["scope"]}, "has scope; accepted: power_control"),
])
def test_bad_bench_marker_is_refused(kwargs, expected):
    with pytest.raises(BenchConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        need_from_marks([((), kwargs)], [], "test_x")


# ---------------------------------------------------------------------- file leases
def test_a_leased_bench_is_busy_for_everyone_else_until_released(tmp_path):
    alice = FileLeases(directory=tmp_path, owner="alice")
    bob = FileLeases(directory=tmp_path, owner="bob")
    lease = alice.try_acquire("b1")
    with pytest.raises(BenchBusy, match="bench b1 is leased by alice"):
        bob.try_acquire("b1")
    lease.renew()
    lease.release()
    bob.try_acquire("b1").release()


def _race(directory: str, owner: str, ready: Any, start: Any, done: Any, results: Any) -> None:
    leases = FileLeases(directory=Path(directory), owner=owner)
    ready.release()
    start.wait(60)
    try:
        lease = leases.try_acquire("contested")
    except BenchBusy:
        results.put((owner, False))
        return
    results.put((owner, True))
    done.wait(60)  # hold it until every other process has tried
    lease.release()


def test_two_holders_never_hold_the_same_bench(tmp_path):
    """Four processes race for one bench at the same instant: exactly one gets it."""
    ctx = multiprocessing.get_context("spawn")
    ready, start, done, results = ctx.Semaphore(0), ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), f"p{i}", ready, start, done, results)) for i in range(4)]
    for p in procs:
        p.start()
    for _ in procs:
        assert ready.acquire(timeout=120), "a racer did not start"
    start.set()
    outcome = [results.get(timeout=60) for _ in procs]
    done.set()
    for p in procs:
        p.join(30)
    assert sum(1 for _, won in outcome if won) == 1, outcome


def test_each_worker_gets_its_own_bench_of_the_rack(tmp_path):
    benches = [("b1", {}), ("b2", {}), ("b3", {})]
    leases = [acquire_one(FileLeases(directory=tmp_path, owner=f"w{i}"), benches[i:] + benches[:i], 0) for i in range(3)]
    assert sorted(lease.bench for lease in leases) == ["b1", "b2", "b3"]
    with pytest.raises(BenchBusy, match=r"no free bench among b1, b2, b3"):
        acquire_one(FileLeases(directory=tmp_path, owner="w4"), benches, 0)


def test_stale_lease_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    path = tmp_path / "b1.lease"
    path.write_text(json.dumps({"token": "x", "owner": "crashed run", "host": socket.gethostname(), "pid": pid,
                                "acquired": time.time(), "heartbeat": time.time()}))
    lease = FileLeases(directory=tmp_path, owner="me").try_acquire("b1")
    assert lease.took_over and "is gone" in lease.took_over["why"]
    lease.release()
    # a live holder on another host that stopped renewing
    path.write_text(json.dumps({"token": "y", "owner": "hung run", "host": "elsewhere", "pid": 1,
                                "acquired": time.time() - 100, "heartbeat": time.time() - 60}))
    lease = FileLeases(directory=tmp_path, owner="me", stale_after_s=15).try_acquire("b1")
    assert "heartbeat is 60 s old" in lease.took_over["why"]
    # a fresh one is not stale
    path.write_text(json.dumps({"token": "z", "owner": "live run", "host": "elsewhere", "pid": 1,
                                "acquired": time.time(), "heartbeat": time.time()}))
    with pytest.raises(BenchBusy, match="live run"):
        FileLeases(directory=tmp_path, owner="me").try_acquire("b1")


def test_heartbeat_notices_a_lease_taken_over(tmp_path):
    lease = FileLeases(directory=tmp_path, owner="me").try_acquire("b1")
    lost: list[str] = []
    got = threading.Event()
    keeper = LeaseKeeper(lease, 0.05, lambda cause: (lost.append(cause), got.set())).start()
    time.sleep(0.2)
    assert not lost  # renewing keeps it
    heartbeat = json.loads((tmp_path / "b1.lease").read_text())["heartbeat"]
    assert time.time() - heartbeat < 1
    # Taken over under the lease's guard, as FileLeases.try_acquire does (else a renewal in flight undoes it).
    with FileLock(str(tmp_path / "b1.lease") + ".guard").acquire(timeout=5):
        (tmp_path / "b1.lease").write_text(json.dumps({"token": "other", "owner": "someone else", "heartbeat": time.time()}))
    assert got.wait(5), "the heartbeat did not notice"
    keeper.stop()
    assert "now held by someone else" in lost[0]
    assert (tmp_path / "b1.lease").is_file()  # a lost lease is not released: it is someone else's now
    with pytest.raises(LeaseLost):
        lease.renew()


# ---------------------------------------------------------------------- labgrid coordinator
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def coordinator(tmp_path):
    exe = Path(sys.executable).with_name("labgrid-coordinator")
    if not exe.exists():
        pytest.skip("labgrid is not installed (pip install -e '.[dev]' installs it)")
    port = _free_port()
    proc = subprocess.Popen([str(exe), "-l", f"127.0.0.1:{port}"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"labgrid-coordinator exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            time.sleep(0.2)  # the coordinator prints nothing when it listens: poll its port
    else:
        proc.kill()
        pytest.fail("labgrid-coordinator did not listen within 30 s")
    yield f"127.0.0.1:{port}"
    # SIGKILL, not SIGTERM: the coordinator's graceful stop waits 5 s for clients, and its state lives in
    # this test's tmp_path only.
    proc.kill()
    proc.wait(10)


def _labgrid_client(address: str, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("labgrid-client")
    return subprocess.run([str(exe), "-x", address, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LG_USERNAME": user})


def test_labgrid_coordinator_leases_tags_and_releases(coordinator):
    from hil.rack.lease_labgrid import LabgridLeases

    leases = LabgridLeases(coordinator, user="worker-a")
    lease = leases.try_acquire("bench-1", {"variant": "BMS-HW-A2", "can": "fd", "console": "yes"})
    shown = _labgrid_client(coordinator, "anyone", "-p", "hil-bench-1", "show")
    assert "acquired: " in shown.stdout and "worker-a" in shown.stdout, shown.stdout + shown.stderr
    assert "can=fd" in shown.stdout and "variant=bms_hw_a2" in shown.stdout, shown.stdout
    # another holder (another host, another worker) cannot take it
    other = _labgrid_client(coordinator, "worker-b", "-p", "hil-bench-1", "acquire")
    assert other.returncode != 0 and "already acquired" in other.stderr, other.stderr
    lease.renew()
    lease.release()
    shown = _labgrid_client(coordinator, "anyone", "-p", "hil-bench-1", "show")
    assert "acquired: None" in shown.stdout, shown.stdout
    taken = _labgrid_client(coordinator, "worker-b", "-p", "hil-bench-1", "acquire")
    assert taken.returncode == 0, taken.stderr
    with pytest.raises(BenchBusy, match="acquired by .*worker-b"):
        LabgridLeases(coordinator, user="worker-a").try_acquire("bench-1", {})


def test_labgrid_lease_kicked_by_an_operator_is_lost(coordinator):
    from hil.rack.lease_labgrid import LabgridLeases

    lease = LabgridLeases(coordinator, user="worker-a").try_acquire("bench-2", {"can": "classic"})
    kicked = _labgrid_client(coordinator, "operator", "-p", "hil-bench-2", "release", "--kick")
    assert kicked.returncode == 0, kicked.stderr
    with pytest.raises(LeaseLost, match="hil-bench-2 is now acquired by nobody"):
        lease.renew()
    lease.release()


# ---------------------------------------------------------------------- scheduling
class FakeNode:
    def __init__(self, gid: str) -> None:
        self.gateway = SimpleNamespace(id=gid)
        self.shutting_down = False
        self.sent: list[int] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent += indices

    def shutdown(self) -> None:
        self.shutting_down = True


def _scheduler(tmp_path: Path, side: dict[str, dict[str, Any]], collection: list[str]) -> tuple[RackScheduling, dict[str, FakeNode]]:
    sched = RackScheduling(SimpleNamespace(hook=None), tmp_path, numnodes=len(side))
    nodes = {}
    for gid, data in side.items():
        (tmp_path / f"{gid}.json").write_text(json.dumps({"worker": gid, "broken": None, "first": [], **data}))
        node = nodes[gid] = FakeNode(gid)
        sched.add_node(node)
        sched.add_node_collection(node, collection)
    sched.schedule()
    return sched, nodes


def _run_all(sched: RackScheduling, nodes: dict[str, FakeNode], broken_after: dict[str, int] | None = None) -> dict[str, list[int]]:
    """Complete queued tests round-robin, like workers would, until the scheduler is done."""
    ran: dict[str, list[int]] = {g: [] for g in nodes}
    for _ in range(1000):
        progressed = False
        for gid, node in nodes.items():
            queue = sched.node2pending.get(node, [])
            if queue and (len(queue) >= 2 or node.shutting_down):
                index = queue[0]
                ran[gid].append(index)
                sched.mark_test_complete(node, index)
                if broken_after and len(ran[gid]) == broken_after.get(gid):
                    sched.bench_broken(node, "LeaseLost: taken over")
                progressed = True
        if not progressed:
            break
    assert sched.tests_finished and not sched.pending
    return ran


def test_tests_go_to_the_worker_whose_bench_serves_them(tmp_path):
    collection = [f"t{i}" for i in range(12)]
    fd_only = ["t3", "t7"]
    nobody = ["t5"]
    side = {"gw0": {"bench": "classic", "cannot": fd_only + nobody}, "gw1": {"bench": "fd", "cannot": nobody}}
    sched, nodes = _scheduler(tmp_path, side, collection)
    ran = _run_all(sched, nodes)
    assert sorted(ran["gw0"] + ran["gw1"]) == list(range(12))  # every test once
    assert {3, 7} <= set(ran["gw1"]) and not {3, 7} & set(ran["gw0"])
    assert abs(len(ran["gw0"]) - len(ran["gw1"])) <= 2  # both benches busy
    assert ran["gw1"][:2] == [3, 7]  # the constrained tests first


def test_broken_bench_gets_only_what_nobody_else_can_run(tmp_path):
    collection = [f"t{i}" for i in range(10)]
    side = {"gw0": {"bench": "a", "cannot": ["t9"]}, "gw1": {"bench": "b", "cannot": []}}
    sched, nodes = _scheduler(tmp_path, side, collection)
    ran = _run_all(sched, nodes, broken_after={"gw1": 1})
    assert sorted(ran["gw0"] + ran["gw1"]) == list(range(10))
    # after breaking, gw1 finishes what was queued (the next test) and t9 that only its bench serves
    assert len(ran["gw1"]) <= 3 and 9 in ran["gw1"], ran


# ---------------------------------------------------------------------- a rack run end to end
def _sim_bench(tmp_path: Path, name: str, fd: bool) -> Path:
    from tests.test_cli_and_plugin import _sim_bench as one_bench

    d = tmp_path / name
    d.mkdir()
    path = one_bench(d)
    data = yaml.safe_load(path.read_text())
    data["bench"] = f"{name}-{data['bench']}"
    if fd:
        data["can"].update({"fd": True, "data_bitrate": 2000000})
    path.write_text(yaml.safe_dump(data))
    return path


RACK_TESTS = '''
import threading
import json, os
from pathlib import Path
import pytest

@pytest.mark.parametrize("n", range(4))
def test_any_bench(n, dut):
    assert dut.version()

@pytest.mark.bench(can="fd")
def test_fd_only(bench_config, dut):
    assert bench_config.can.fd and dut.version()

@pytest.mark.bench(variant="BMS-HW-Z9")
def test_unservable(dut):
    raise AssertionError("must not run")

@pytest.mark.bench(can="classic")
def test_lease_taken_over_mid_test(bench_config, dut):
    """Someone takes the lease over while this test runs: the heartbeat stops it."""
    from filelock import FileLock

    lease = Path(os.environ["HIL_LOCK_DIR"]) / (bench_config.bench + ".lease")
    # Under the lease's guard, as another host's takeover: else a renewal in flight writes the old token back.
    with FileLock(str(lease) + ".guard").acquire(timeout=10):
        data = json.loads(lease.read_text())
        lease.write_text(json.dumps({**data, "token": "thief", "owner": "another host"}))
    threading.Event().wait(60)  # interrupted by LeaseLost long before
    raise AssertionError("the lost lease did not stop this test")
'''


@pytest.mark.integration
def test_rack_run_spreads_over_benches_and_survives_a_lost_lease(tmp_path):
    classic, fd = _sim_bench(tmp_path, "c", False), _sim_bench(tmp_path, "f", True)
    rack = tmp_path / "rack.yaml"
    rack.write_text(yaml.safe_dump({"rack": "test-rack", "lease": {"heartbeat_s": 0.2},
                                    "benches": [{"file": str(classic)}, {"file": str(fd)}]}))
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_rack_suite.py").write_text(RACK_TESTS)
    reports = tmp_path / "reports"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "hil.plugin", "-p", "no:cacheprovider", "-n", "2", "--rack", str(rack),
         str(suite), "-rA", "--rootdir", str(suite), "--evidence-dir", str(reports / "evidence"),
         "--reports-dir", str(reports), "--alluredir", str(reports / "allure-results")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks"), "PYTHONPATH": str(ROOT)})
    out = result.stdout + result.stderr
    assert result.returncode == 1, out[-4000:]
    # the unservable test is skipped with the reason
    assert "SKIPPED" in out and "needs variant=BMS-HW-Z9: no bench of rack test-rack has it" in out, out[-4000:]
    # the lost lease stopped its test with a clear error ...
    assert "FAILED" in out and "LeaseLost" in out and "now held by another host" in out, out[-4000:]
    records = json.loads((reports / "results.json").read_text())
    by_test = {r["nodeid"].split("::")[-1]: r for r in records["records"]}
    assert by_test["test_lease_taken_over_mid_test"]["outcome"] == "failed"
    assert by_test["test_lease_taken_over_mid_test"]["bench"] == classic_name(classic)
    # ... and the rest of the run finished on the other bench: at most the one test already queued behind
    # it on the broken bench errors with the same cause
    assert by_test["test_fd_only"]["outcome"] == "passed" and by_test["test_fd_only"]["bench"] == classic_name(fd)
    others = [r for n, r in by_test.items() if n.startswith("test_any_bench")]
    assert len(others) == 4
    errored = [r for r in others if r["outcome"] != "passed"]
    assert len(errored) <= 1 and all(r["outcome"] == "error" for r in errored), others
    # one report from both workers: every bench listed, the broken one with its cause
    benches = records["benches"]["benches"]
    assert set(benches) == {classic_name(classic), classic_name(fd)}
    assert "LeaseLost" in (benches[classic_name(classic)]["broken"] or "")
    # the lost lease did not spread: the other bench is not broken by it (a loaded machine may still break it otherwise)
    assert "LeaseLost" not in (benches[classic_name(fd)]["broken"] or "")
    assert benches[classic_name(classic)]["worker"] != benches[classic_name(fd)]["worker"]
    run_record = (reports / "run-record.md").read_text()
    assert "bench.benches." + classic_name(classic) + ".broken | LeaseLost" in run_record
    # Allure: each test carries the bench it ran on
    labels = []
    for f in (reports / "allure-results").glob("*-result.json"):
        res = json.loads(f.read_text())
        labels += [lab["value"] for lab in res.get("labels", []) if lab["name"] == "bench"]
    assert set(labels) == {classic_name(classic), classic_name(fd)}, labels


def classic_name(bench_file: Path) -> str:
    return yaml.safe_load(bench_file.read_text())["bench"]


@pytest.mark.integration
def test_rack_without_workers_skips_what_its_one_bench_cannot_serve(tmp_path):
    classic, fd = _sim_bench(tmp_path, "c", False), _sim_bench(tmp_path, "f", True)
    rack = tmp_path / "rack.yaml"
    rack.write_text(yaml.safe_dump({"rack": "test-rack", "benches": [{"file": str(classic)}, {"file": str(fd)}]}))
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_rack_suite.py").write_text(RACK_TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "hil.plugin", "-p", "no:cacheprovider", "--rack", str(rack),
         str(suite), "-rs", "--rootdir", str(suite), "-k", "fd_only or unservable",
         "--reports-dir", str(tmp_path / "reports")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")})
    out = result.stdout
    assert result.returncode == 0 and "2 skipped" in out, out[-3000:]
    assert f"needs can=fd: bench {classic_name(classic)} has CAN classic (needs fd); {classic_name(fd)} of rack " \
           "test-rack would, but no worker holds it in this run" in out, out[-3000:]


# ---------------------------------------------------------------------- hil report merge
def _host_results(base: Path, host: str, bench: str, outcome: str) -> Path:
    from hil.report.merge import write_all

    d = base / host
    ev = d / "evidence" / "test_update"
    ev.mkdir(parents=True)
    (ev / "can.asc").write_text(f"trace of {host}\n")
    (d / "allure-results").mkdir()
    (d / "allure-results" / f"{host}-result.json").write_text("{}")
    records = [{"nodeid": "testcases/test_update.py::test_update", "name": "test_update", "outcome": outcome,
                "duration_s": 1.0, "fault_rows": [9], "expect": "rolls back", "requirements": ["R156-recovery"],
                "evidence_dir": str(ev), "measurements": [], "bench": bench}]
    write_all(d, records, {"rack": f"rack-{host}", "benches": {bench: {"bench": bench}}}, started="2026-01-01T00:00:00",
              finished="2026-01-01T01:00:00", command=["pytest"])
    return d


def test_hil_report_merge_makes_one_report_of_several_hosts(tmp_path):
    a = _host_results(tmp_path, "host-a", "rack-a-1", "passed")
    b = _host_results(tmp_path, "host-b", "rack-b-1", "failed")
    out = tmp_path / "merged"
    result = subprocess.run([sys.executable, "-m", "hil", "report", "merge", str(a), str(b), "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "merged 2 test results from host-a, host-b (2 Allure files)" in result.stdout
    matrix = json.loads((out / "fault-matrix.json").read_text())
    row9 = next(r for r in matrix["rows"] if r["row"] == 9)
    assert row9["verdict"] == "FAIL" and {t["bench"] for t in row9["tests"]} == {"rack-a-1", "rack-b-1"}
    trace = (out / "traceability.md").read_text()
    assert "on bench rack-a-1" in trace and "on bench rack-b-1" in trace
    assert "evidence/host-a/test_update/can.asc" in trace and "evidence/host-b/test_update/can.asc" in trace
    assert (out / "evidence/host-b/test_update/can.asc").read_text() == "trace of host-b\n"
    assert sorted(p.name for p in (out / "allure-results").iterdir()) == ["host-a-result.json", "host-b-result.json"]
    record = json.loads((out / "run-record.json").read_text())
    assert set(record["bench"]["merged_from"]) == {"host-a", "host-b"}
    assert record["started"] == "2026-01-01T00:00:00"


def test_hil_report_merge_says_what_a_directory_lacks(tmp_path):
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "hil", "report", "merge", str(tmp_path / "empty"), "--out",
                             str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "no results.json here" in result.stderr


# ---------------------------------------------------------------------- pipelines for several hosts
def test_ci_examples_run_one_job_per_rack_host_then_merge():
    gh = yaml.safe_load((ROOT / "ci-examples/github-actions.yml").read_text())
    rack_job, report_job = gh["jobs"]["rack"], gh["jobs"]["report"]
    hosts = [m["host"] for m in rack_job["strategy"]["matrix"]["include"]]
    assert len(hosts) >= 2 and "self-hosted" in rack_job["runs-on"]
    run = " ".join(step.get("run", "") for step in rack_job["steps"])
    assert "--rack ${{ matrix.rack }}" in run and "-n ${{ matrix.workers }}" in run
    assert report_job["needs"] == "rack" and "hil report merge results/results-*" in report_job["steps"][3]["run"]
    gl = yaml.safe_load((ROOT / "ci-examples/gitlab-ci.yml").read_text())
    rack_jobs = [name for name, job in gl.items() if isinstance(job, dict) and job.get("extends") == ".rack"]
    assert len(rack_jobs) >= 2 and all(gl[j]["tags"] for j in rack_jobs)
    assert "--rack" in " ".join(gl[".rack"]["script"])
    merge = " ".join(gl["report"]["script"])
    assert "hil report merge " + " ".join(f"results/{j}" for j in rack_jobs) in merge
    assert {n["job"] for n in gl["report"]["needs"]} == set(rack_jobs)


def test_longest_tests_of_the_last_run_start_first(tmp_path):
    collection = [f"t{i}" for i in range(6)]
    side = {"gw0": {"bench": "a", "cannot": []}, "gw1": {"bench": "b", "cannot": []}}
    for gid, data in side.items():
        (tmp_path / f"{gid}.json").write_text(json.dumps({"worker": gid, "broken": None, "first": [], **data}))
    sched = RackScheduling(SimpleNamespace(hook=None), tmp_path, numnodes=2, durations={"t4": 30.0, "t2": 9.0})
    nodes = [FakeNode("gw0"), FakeNode("gw1")]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, collection)
    sched.schedule()
    assert {nodes[0].sent[0], nodes[1].sent[0]} == {4, 2}


@pytest.mark.integration
def test_rack_run_leases_through_the_labgrid_coordinator(tmp_path, coordinator):
    classic, fd = _sim_bench(tmp_path, "c", False), _sim_bench(tmp_path, "f", True)
    rack = tmp_path / "rack.yaml"
    rack.write_text(yaml.safe_dump({"rack": "lab-rack", "lease": {"backend": "labgrid", "coordinator": coordinator,
                                                                  "place_prefix": "lab-"},
                                    "benches": [{"file": str(classic)}, {"file": str(fd)}]}))
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_rack_suite.py").write_text(RACK_TESTS)
    reports = tmp_path / "reports"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "hil.plugin", "-p", "no:cacheprovider", "-n", "2", "--rack", str(rack),
         str(suite), "-rA", "--rootdir", str(suite), "-k", "any_bench or fd_only", "--reports-dir", str(reports),
         "--evidence-dir", str(reports / "evidence")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")})
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    benches = json.loads((reports / "results.json").read_text())["benches"]["benches"]
    for name in (classic_name(classic), classic_name(fd)):
        lease = benches[name]["lease"]
        assert lease["backend"] == "labgrid" and lease["place"] == f"lab-{name}", benches[name]
        shown = _labgrid_client(coordinator, "anyone", "-p", f"lab-{name}", "show")
        assert "acquired: None" in shown.stdout, shown.stdout  # released at the end of the run
        assert "can=" in shown.stdout  # tagged from the rack
    assert benches[classic_name(classic)]["worker"] != benches[classic_name(fd)]["worker"]


def test_hil_rack_show_lists_benches_tags_and_holders(tmp_path):
    FileLeases(directory=tmp_path, owner="nightly on host-a").try_acquire("sim-rack-2")
    result = subprocess.run([sys.executable, "-m", "hil", "rack", "show", "benches/racks/sim-rack.yaml"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HIL_LOCK_DIR": str(tmp_path), "COLUMNS": "250"})
    assert result.returncode == 0, result.stderr
    assert "sim-rack-1" in result.stdout and "classic" in result.stdout and "fd" in result.stdout
    assert "nightly on host-a" in result.stdout
    bad = _rack(tmp_path, "rack: r\nbenches:\n  - file: missing.yaml\n")
    result = subprocess.run([sys.executable, "-m", "hil", "rack", "show", str(bad)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and "benches.0.file" in result.stderr
