"""Rack mode for pytest: `pytest -n N --rack FILE` spreads a run over the benches of a rack.

- Each process that runs tests (an xdist worker, or pytest itself without `-n`) leases one bench of
  the rack for the session (`RackWorker`, backends in hil/rack/lease.py) and keeps the lease alive with
  a heartbeat. A lost lease stops the current test with `LeaseLost` and breaks that bench.
- A test selects benches with `@pytest.mark.bench(...)` (hil/rack/inventory.py). A process marks the tests
  its bench cannot serve as skipped, with the reason; it writes that list to a file the
  controller's scheduler reads.
- `RackScheduling` (an xdist scheduler) sends each test only to a worker whose bench serves it,
  the tests fewest benches can serve first, two at a time, so every bench stays busy. A worker whose
  bench broke gets no new tests except those no other bench can serve (they error with the cause).
- The controller collects every worker's records (xdist `workeroutput`) and writes one fault
  matrix, traceability matrix and run record listing every bench (hil/report/merge.py).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

from hil.errors import BenchBroken, BenchBusy, BenchConfigError
from hil.rack.lease import FileLeases, Lease, LeaseBackend, LeaseKeeper, LeaseLost, acquire_one
from hil.rack.inventory import BenchNeed, Rack, RackBench, load_rack, need_from_marks

#: user_properties key a worker puts on a report once its bench is broken (read by the controller).
BROKEN_PROPERTY = "hil_bench_broken"
#: workerinput key: directory where workers leave the list of tests their bench cannot serve.
SIDE_DIR_KEY = "hil_rack_dir"
#: workeroutput key: a worker's records and bench, for the controller's merged report.
OUTPUT_KEY = "hil_rack"
#: Every xdist worker needs two tests queued - the current one and the next.
MIN_PENDING = 2


def load_rack_option(config: pytest.Config) -> Rack:
    """The `--rack` file, validated; a bad one stops the run with the reason."""
    path = Path(config.getoption("--rack"))
    if not path.is_absolute():
        path = Path(config.rootpath) / path
    try:
        return load_rack(path)
    except BenchConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


def lease_backend(rack: Rack) -> LeaseBackend:
    """The lease backend the rack file names."""
    if rack.lease.backend == "labgrid":
        from hil.rack.lease_labgrid import LabgridLeases

        return LabgridLeases.from_config(rack.lease)
    return FileLeases(stale_after_s=rack.lease.stale_after_s)


def worker_slot() -> int:
    """gwN -> N (which bench this worker tries first); 0 without xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    try:
        return int(worker.removeprefix("gw"))
    except ValueError:
        return 0


@dataclass
class RackWorker:
    """The bench one pytest process leased from a rack, and the heartbeat keeping the lease."""

    rack: Rack
    bench: RackBench | None = None
    lease: Lease | None = None
    keeper: LeaseKeeper | None = None
    cause: str | None = None  # why this process has no usable bench (no lease, lease lost)
    on_lost: list[Callable[[str], None]] = field(default_factory=list)

    @classmethod
    def start(cls, rack: Rack, slot: int) -> "RackWorker":
        """Lease a bench: the slot's own first, then any other free one; no bench -> `cause` says why."""
        w = cls(rack)
        n = len(rack.benches)
        order = [rack.benches[(slot + i) % n] for i in range(n)]
        try:
            backend = lease_backend(rack)
            w.lease = acquire_one(backend, [(b.name, b.tags.labels()) for b in order], rack.lease.wait_s)
        except BenchBusy as exc:
            w.cause = f"rack {rack.name}: {exc}"
            return w
        except BenchBroken as exc:  # the lease backend itself is unusable (coordinator down)
            w.cause = f"rack {rack.name}: lease backend {rack.lease.backend}: {exc}"
            return w
        w.bench = rack.bench(w.lease.bench)
        w.keeper = LeaseKeeper(w.lease, rack.lease.heartbeat_s, w._lost).start()
        return w

    def _lost(self, cause: str) -> None:
        self.cause = cause
        for callback in list(self.on_lost):
            callback(cause)

    def stop(self) -> None:
        if self.keeper is not None:
            self.keeper.stop(release=True)
            self.keeper = None

    def describe(self) -> dict[str, Any]:
        return self.lease.describe() if self.lease is not None else {}


# ---------------------------------------------------------------------- what each test needs
_NEED = pytest.StashKey[BenchNeed]()


def item_need(item: pytest.Item) -> BenchNeed:
    """What `item` needs from its bench (marker + fixtures); a bad marker stops collection."""
    if _NEED not in item.stash:
        marks = [(m.args, m.kwargs) for m in item.iter_markers("bench")]
        try:
            item.stash[_NEED] = need_from_marks(marks, getattr(item, "fixturenames", ()), item.nodeid)
        except BenchConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
    return item.stash[_NEED]


def skip_reason(need: BenchNeed, rack: Rack | None, bench_name: str, tags: Any) -> str:
    """Why a test cannot run on this bench, naming what it needs and which benches of the rack have it."""
    lacking = need.missing(tags)
    if rack is None:
        return f"needs {need.describe()}: bench {bench_name} has {lacking}"
    serving = rack.serving(need)
    if not serving:
        offered = ", ".join(f"{b.name} ({b.tags.variant}, {b.tags.can}, {'/'.join(sorted(b.tags.capabilities))})"
                            for b in rack.benches)
        return f"needs {need.describe()}: no bench of rack {rack.name} has it ({offered})"
    return (f"needs {need.describe()}: bench {bench_name} has {lacking}; "
            f"{', '.join(b.name for b in serving)} of rack {rack.name} would, but no worker holds it in this run")


def write_side_file(side_dir: Path, worker: str, bench: str | None, cause: str | None, cannot: list[str],
                    first: list[str]) -> None:
    """What the controller's scheduler needs from this worker: its bench and the tests it cannot serve."""
    side_dir.mkdir(parents=True, exist_ok=True)
    tmp = side_dir / f".{worker}.tmp"
    tmp.write_text(json.dumps({"worker": worker, "bench": bench, "broken": cause, "cannot": cannot, "first": first}))
    os.replace(tmp, side_dir / f"{worker}.json")


def install_interrupt(get_cause: Callable[[], str | None], is_running: Callable[[], bool]) -> Callable[[], None]:
    """A way for the lease heartbeat thread to stop the test running in the main thread.

    The heartbeat runs in its own thread; the test in the main thread may be blocked in a wait.
    A signal to the main thread interrupts that wait and raises `LeaseLost` there, the same way
    pytest-timeout stops a test. Returns the function the heartbeat calls.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_kill"):
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        if is_running():  # only inside a test's setup or call: pytest turns the exception into that test's error
            raise LeaseLost(get_cause() or "lease lost")

    signal.signal(signal.SIGUSR1, handler)
    main = threading.main_thread().ident
    assert main is not None
    return lambda: signal.pthread_kill(main, signal.SIGUSR1)


# ---------------------------------------------------------------------- the controller's scheduler
class RackScheduling:
    """xdist scheduler: each test only to workers whose bench serves it; constrained tests first; two queued per worker.

    Implements xdist's `Scheduling` protocol (xdist/scheduler/protocol.py). Eligibility comes
    from the side file each worker writes at collection (the tests its bench cannot serve).
    """

    def __init__(self, config: Any, side_dir: Path, log: Any = None, numnodes: int | None = None,
                 durations: dict[str, float] | None = None) -> None:
        if numnodes is None:
            from xdist.workermanage import parse_tx_spec_config  # type: ignore[import-untyped]

            numnodes = len(parse_tx_spec_config(config))
        self.config = config
        self.side_dir = side_dir
        self.numnodes = numnodes
        self.node2collection: dict[Any, list[str]] = {}
        self.node2pending: dict[Any, list[int]] = {}
        self.node2cannot: dict[Any, set[int]] = {}
        self.node2bench: dict[Any, str | None] = {}
        self.broken: dict[Any, str] = {}
        self.first: set[int] = set()
        self.durations = durations or {}  # by node id, from the previous run: longest first shortens the run
        self.duration: dict[int, float] = {}
        self.collection: list[str] | None = None
        self.pending: list[int] = []

    # -- protocol properties
    @property
    def nodes(self) -> list[Any]:
        return list(self.node2pending)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.node2collection) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        if not self.collection_is_completed or self.pending:
            return False
        return all(len(p) < MIN_PENDING for p in self.node2pending.values())

    @property
    def has_pending(self) -> bool:
        return bool(self.pending) or any(self.node2pending.values())

    # -- nodes
    def add_node(self, node: Any) -> None:
        assert node not in self.node2pending
        self.node2pending[node] = []

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        assert node in self.node2pending
        if self.collection is not None and list(collection) != self.collection:
            self._collection_differs(node, collection)
            return
        self.node2collection[node] = list(collection)
        self._read_side_file(node, list(collection))

    def _read_side_file(self, node: Any, collection: list[str]) -> None:
        worker = node.gateway.id
        path = self.side_dir / f"{worker}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            data = {"bench": None, "broken": f"worker {worker} left no rack file {path}: {exc}", "cannot": [], "first": []}
        index = {nodeid: i for i, nodeid in enumerate(collection)}
        self.node2cannot[node] = {index[n] for n in data.get("cannot", []) if n in index}
        self.first |= {index[n] for n in data.get("first", []) if n in index}
        self.node2bench[node] = data.get("bench")
        if data.get("broken"):
            self.broken[node] = str(data["broken"])

    def _collection_differs(self, node: Any, collection: Sequence[str]) -> None:
        from xdist.report import report_collection_diff  # type: ignore[import-untyped]

        assert self.collection is not None
        first = next(iter(self.node2collection))
        msg = report_collection_diff(self.collection, collection, first.gateway.id, node.gateway.id)
        if msg:
            self.config.hook.pytest_collectreport(
                report=pytest.CollectReport(nodeid=node.gateway.id, outcome="failed", longrepr=msg, result=[]))

    def remove_node(self, node: Any) -> str | None:
        pending = self.node2pending.pop(node)
        crashitem = None
        if pending:
            assert self.collection is not None
            crashitem = self.collection[pending.pop(0)]
        self.pending[:0] = pending
        self.check_schedule()
        return crashitem

    def bench_broken(self, node: Any, cause: str) -> None:
        """A worker reported its bench broken: it gets no new tests except those nobody else can run."""
        if node in self.node2pending and node not in self.broken:
            self.broken[node] = cause
            self.check_schedule()

    # -- tests
    def mark_test_complete(self, node: Any, item_index: int, duration: float | None = None) -> None:
        self.node2pending[node].remove(item_index)
        self.check_schedule()

    def mark_test_pending(self, item: str) -> None:
        assert self.collection is not None
        self.pending.insert(0, self.collection.index(item))
        self.check_schedule()

    def remove_pending_tests_from_node(self, node: Any, indices: Sequence[int]) -> None:
        drop = set(indices)
        self.node2pending[node] = [i for i in self.node2pending[node] if i not in drop]
        self.pending[:0] = list(indices)
        self.check_schedule()

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is None:
            collections = list(self.node2collection.items())
            first_node, first = collections[0]
            if any(c != first for _, c in collections[1:]):
                self.collection = first
                for node, c in collections[1:]:
                    if c != first:
                        self._collection_differs(node, c)
                self.collection = None
                return
            self.collection = first
            self.pending = list(range(len(self.collection)))
            self.duration = {i: self.durations.get(n, 0.0) for i, n in enumerate(self.collection)}
        self.check_schedule()

    def targets(self, index: int) -> list[Any]:
        """The workers that should run test `index` now."""
        up = [n for n in self.node2pending if not n.shutting_down]
        able = [n for n in up if index not in self.node2cannot.get(n, set())]
        healthy = [n for n in able if n not in self.broken]
        if healthy:
            return healthy
        if able:
            return able  # only broken benches could run it: it errors there with the cause, never silently vanishes
        # no leased bench serves it: any worker skips it with the reason
        return [n for n in up if n not in self.broken] or up

    def check_schedule(self) -> None:
        if self.collection is None:
            return
        progress = True
        while progress and self.pending:
            progress = False
            ranked = sorted(self.pending, key=lambda i: (len(self.targets(i)), i not in self.first,
                                                         -self.duration.get(i, 0.0), i))
            for node in list(self.node2pending):
                if node.shutting_down or len(self.node2pending[node]) >= MIN_PENDING:
                    continue
                pick = next((i for i in ranked if node in self.targets(i)), None)
                if pick is None:
                    continue
                self.pending.remove(pick)
                ranked.remove(pick)
                self.node2pending[node].append(pick)
                node.send_runtest_some([pick])
                progress = True
        # A worker that will get nothing more runs its last queued test now (it waits for a next one otherwise).
        for node, queued in self.node2pending.items():
            if node.shutting_down or len(queued) >= MIN_PENDING:
                continue
            if not any(node in self.targets(i) for i in self.pending):
                node.shutdown()


# ---------------------------------------------------------------------- the controller
def previous_durations(config: pytest.Config) -> dict[str, float]:
    """Test durations of the last run in --reports-dir (results.json), if any: the scheduler starts the longest first."""
    out = Path(config.getoption("--reports-dir"))
    path = (out if out.is_absolute() else Path(config.rootpath) / out) / "results.json"
    try:
        records = json.loads(path.read_text()).get("records", [])
        return {r["nodeid"]: float(r["duration_s"]) for r in records if isinstance(r, dict) and "nodeid" in r}
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}


class RackController:
    """xdist controller side of rack mode: side directory, the scheduler, every worker's records."""

    def __init__(self, config: pytest.Config, rack: Rack) -> None:
        self.config = config
        self.rack = rack
        self.side_dir = Path(tempfile.mkdtemp(prefix="hil-rack-"))
        self.workers: dict[str, dict[str, Any]] = {}
        self.sched: RackScheduling | None = None

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[SIDE_DIR_KEY] = str(self.side_dir)

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> RackScheduling:
        self.sched = RackScheduling(config, self.side_dir, log, durations=previous_durations(config))
        return self.sched

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        node = getattr(report, "node", None)
        cause = next((v for k, v in report.user_properties if k == BROKEN_PROPERTY), None)
        if node is not None and cause and self.sched is not None:
            self.sched.bench_broken(node, str(cause))

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        worker = node.gateway.id
        out = getattr(node, "workeroutput", None) or {}
        data = dict(out.get(OUTPUT_KEY) or {})
        if error is not None:
            data.setdefault("broken", f"worker {worker} crashed: {error}")
        data.setdefault("records", [])
        self.workers[worker] = data

    def benches(self) -> list[dict[str, Any]]:
        """Every bench of the rack: which worker held it, identity, broken with cause, or not leased."""
        held: dict[str, dict[str, Any]] = {}
        out: list[dict[str, Any]] = []
        for worker, data in sorted(self.workers.items()):
            if data.get("bench"):
                held[data["bench"]] = {**data, "worker": worker}
            else:
                out.append({"bench": None, "worker": worker, "broken": data.get("broken") or "no bench leased"})
        for b in self.rack.benches:
            w = held.get(b.name)
            if w is None:
                out.append({"bench": b.name, "tags": b.tags.as_dict(), "leased": False})
                continue
            out.append({"bench": b.name, "tags": b.tags.as_dict(), "leased": True, "worker": w["worker"],
                        "lease": w.get("lease"), "identity": w.get("identity"), "broken": w.get("broken"),
                        "tests": len(w.get("records", []))})
        return out

    def records(self) -> list[dict[str, Any]]:
        return [r for _, data in sorted(self.workers.items()) for r in data.get("records", [])]

    def cleanup(self) -> None:
        for p in self.side_dir.glob("*"):
            p.unlink(missing_ok=True)
        try:
            self.side_dir.rmdir()
        except OSError:
            pass
