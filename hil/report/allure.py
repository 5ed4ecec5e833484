"""What the Allure report carries for an auditor, beyond pass/fail.

The pytest plugin calls the small hooks here (hil/plugin/ keeps only the calls):

- `check_requirement_ids` at collection: an unknown id in `@pytest.mark.requirement(...)` stops the
  run with the id, the test and the accepted ids; `check_requirements_named` (called by
  testcases/conftest.py) stops it when a case names no requirement at all.
- `label_item`: epic = regulation, feature = requirement, story = case (hil.requirements is the
  catalogue), severity, tags. The report's tree groups by feature then story (see
  reports/allurerc.mjs for why not by epic too).
- `TestAudit` (start at the bench fixture, `finish` before the evidence is attached): a step per
  flashing phase and per fault injection with wall-clock timestamps, the supply sampled
  (measured voltage and current in supply.log), the images the test used with SHA-256 and
  `imgtool dumpinfo`, and the update status read from the board at the end.
- Session end: `write_environment` (bench, DUT serial and versions, instruments, framework
  commit; Allure's environment.properties and executor.json) and `write_categories` (DUT failure /
  bench error / timeout, from the exception types in hil.errors).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import inspect
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pytest

from hil import errors
from hil.report.can_excerpt import Mark
from hil.report.requirements import CATALOGUE, ISO21434, ISO24089, PROJECT, R155, R156, Requirement

try:  # allure-pytest is a dependency; without it the hooks only skip the report parts
    import allure
    from allure_commons import plugin_manager as _allure_plugins
    from allure_commons.model2 import Parameter, Status, TestStepResult
except ImportError:  # pragma: no cover
    allure = None  # type: ignore[assignment]

#: Allure severity per regulation: paragraphs of the UN regulations an approval depends on are
#: critical; ISO topics and project requirements normal. `@pytest.mark.severity("blocker")` overrides.
SEVERITY_BY_REGULATION: Mapping[str, str] = {R156: "critical", R155: "critical", ISO24089: "normal",
                                             ISO21434: "normal", PROJECT: "normal"}
SEVERITIES = ("blocker", "critical", "normal", "minor", "trivial")

#: How often the supply's output is measured during a test (measured V and I in supply.log; a power-fault case
#: samples it at 50 Hz into supply-samples.csv besides).
SUPPLY_SAMPLE_S = 1.0


# ---------------------------------------------------------------------- collection
def check_requirement_ids(items: Iterable[pytest.Item]) -> None:
    """Refuse the run when a test names a requirement id the catalogue does not know."""
    bad: dict[str, list[str]] = {}
    for item in items:
        for marker in item.iter_markers("requirement"):
            for rid in marker.args:
                if not isinstance(rid, str) or rid not in CATALOGUE:
                    bad.setdefault(str(rid), []).append(item.nodeid)
    if bad:
        lines = [f"  {rid!r} in {', '.join(sorted(set(nodes))[:3])}{' ...' if len(set(nodes)) > 3 else ''}"
                 for rid, nodes in sorted(bad.items())]
        raise pytest.UsageError("unknown requirement id in @pytest.mark.requirement:\n" + "\n".join(lines)
                                + f"\naccepted ids (hil/report/requirements.py): {', '.join(sorted(CATALOGUE))}")


def check_requirements_named(items: Iterable[pytest.Item]) -> None:
    """Refuse the run when a case names no requirement: every case is evidence for a requirement, and one
    without would sit at the root of the report's requirement tree."""
    missing = [item.nodeid for item in items if not requirement_ids(item)]
    if missing:
        raise pytest.UsageError(
            f"{len(missing)} case(s) name no requirement - add @pytest.mark.requirement(<id>, ...) to:\n"
            + "\n".join(f"  {nodeid}" for nodeid in missing)
            + f"\naccepted ids (hil/report/requirements.py): {', '.join(sorted(CATALOGUE))}")


def feature_title(req: Requirement) -> str:
    """The Allure feature of a requirement: its reference, id and topic, so it reads alone in a tree."""
    return f"{req.reference} - {req.id}: {req.topic}"


def story_title(item: pytest.Item) -> str:
    """The Allure story (the case): the test function's docstring first line, else its name in words."""
    func = getattr(item, "function", None)
    doc = inspect.getdoc(func) if func is not None else None
    if doc:
        return doc.splitlines()[0].rstrip(".")
    name = getattr(item, "originalname", item.name)
    return name.removeprefix("test_").replace("_", " ")


def requirement_ids(item: pytest.Item) -> list[str]:
    """Requirement ids of a test, in marker order, without duplicates."""
    return list(dict.fromkeys(rid for m in item.iter_markers("requirement") for rid in m.args))


def severity_of(item: pytest.Item) -> str:
    """`@pytest.mark.severity(...)` if given, else the highest severity of the test's requirements (normal)."""
    marker = item.get_closest_marker("severity")
    if marker is not None and marker.args:
        level = str(marker.args[0])
        if level not in SEVERITIES:
            raise pytest.UsageError(f"{item.nodeid}: severity {level!r} is not one of {', '.join(SEVERITIES)}")
        return level
    levels = [SEVERITY_BY_REGULATION.get(CATALOGUE[r].regulation, "normal") for r in requirement_ids(item)
              if r in CATALOGUE]
    return min(levels, key=SEVERITIES.index) if levels else "normal"


def label_item(item: pytest.Item) -> None:
    """Epic/feature/story, severity and tags for one collected test (requirement ids were checked before)."""
    if allure is None:
        return
    reqs = [CATALOGUE[r] for r in requirement_ids(item) if r in CATALOGUE]
    for regulation in dict.fromkeys(r.regulation for r in reqs):
        item.add_marker(allure.epic(regulation))
    for req in reqs:
        item.add_marker(allure.feature(feature_title(req)))
        item.add_marker(allure.tag(req.id))
    if reqs:
        item.add_marker(allure.story(story_title(item)))
    item.add_marker(allure.severity(severity_of(item)))


# ---------------------------------------------------------------------- per test
def _wall(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class AuditEvent:
    """One timed thing that happened during a test: a flashing phase or an injected fault."""

    kind: str  # "phase" | "fault"
    title: str
    start: float  # wall clock, s
    stop: float
    detail: dict[str, str] = field(default_factory=dict)


def _is_fault(event: Any, nominal_v: float | None) -> str | None:
    """A title if this instrument event injects a fault (power cut, brown-out, dip, load condition), else None."""
    name, value, kind = event.name, event.value, event.kind
    if kind == "action" and name in ("dropout", "power_cycle", "dip"):
        unit = f" {event.unit}" if event.unit else ""
        return f"supply {name.replace('_', ' ')} ({value}{unit})"
    if kind == "set" and name == "output" and value is False:
        return "supply output off (power cut)"
    if kind == "set" and name == "voltage" and nominal_v is not None and isinstance(value, (int, float)) \
            and abs(float(value) - nominal_v) > 1e-6:
        return f"supply voltage set to {value:g} V (nominal {nominal_v:g} V)"
    return None


class TestAudit:
    """Collects a test's phases, faults, supply samples and images between `start` and `finish`."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, bench: Any, item: pytest.Item) -> None:
        self.bench = bench
        self.item = item
        self.started = time.time()
        self._mono_offset = time.time() - time.monotonic()
        flasher = getattr(bench, "flasher", None)
        self._phase_start = len(flasher.phases) if flasher is not None else 0
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        #: The injected faults, for the CAN excerpt's windows (set by `finish`).
        self.fault_marks: list[Mark] = []

    # ------------------------------------------------------------------ supply sampling
    def start(self) -> "TestAudit":
        """Start measuring the supply's output in the background (each sample lands in supply.log)."""
        psu = getattr(self.bench, "psu", None)
        if psu is not None and hasattr(psu, "measure_voltage"):
            self._sampler = threading.Thread(target=self._sample, args=(psu,), name="supply-sampler", daemon=True)
            self._sampler.start()
        return self

    def _sample(self, psu: Any) -> None:
        while not self._stop.wait(SUPPLY_SAMPLE_S):
            try:
                psu.measure_voltage()
                psu.measure_current()
            except (errors.HilError, OSError):
                return  # the instrument is gone or busy failing: the test itself reports it

    def _stop_sampler(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)

    # ------------------------------------------------------------------ events
    def events(self) -> list[AuditEvent]:
        """Flashing phases (each until the next) and faults injected, in time order."""
        out: list[AuditEvent] = []
        now = time.time()
        flasher = getattr(self.bench, "flasher", None)
        phases = list(getattr(flasher, "phases", []))[self._phase_start:]
        for i, (phase, mono) in enumerate(phases):
            start = mono + self._mono_offset
            stop = phases[i + 1][1] + self._mono_offset if i + 1 < len(phases) else start
            name = getattr(phase, "value", str(phase))
            out.append(AuditEvent("phase", f"flashing phase: {name}", start, max(start, stop),
                                  {"at": _wall(start), "seconds": f"{max(0.0, stop - start):.3f}"}))
        nominal = getattr(getattr(getattr(self.bench, "cfg", None), "psu", None), "nominal_voltage", None)
        for source, instrument in (("supply", getattr(self.bench, "psu", None)), ("load", getattr(self.bench, "load", None))):
            last_action = float("-inf")
            for ev in (getattr(instrument, "events", None) or []):
                if ev.time < self.started:
                    continue
                if ev.kind == "action":
                    last_action = ev.time
                elif ev.time - last_action < 0.1:  # the settings a dip/dropout makes are part of that one step
                    continue
                title = _is_fault(ev, nominal) if source == "supply" else (
                    f"battery emulator: {ev.name.replace('_', ' ')} = {ev.value}{' ' + ev.unit if ev.unit else ''}"
                    if ev.kind == "set" else None)
                if title:
                    duration = float(ev.value) if ev.kind == "action" and isinstance(ev.value, (int, float)) else 0.0
                    out.append(AuditEvent("fault", f"fault injected: {title}", ev.time, ev.time + duration,
                                          {"at": _wall(ev.time), "instrument": source}))
        for t, what in list(getattr(flasher, "transport_faults", [])):
            if t >= self.started:
                out.append(AuditEvent("fault", f"fault injected: {what}", t, t, {"at": _wall(t), "instrument": "tester"}))
        return sorted(out, key=lambda e: e.start)

    # ------------------------------------------------------------------ images and status
    def images_used(self) -> list[dict[str, Any]]:
        """Every image the test took from the `images` fixture or staged: name, SHA-256, size, build's dumpinfo."""
        store = self.item.funcargs.get("images")  # type: ignore[attr-defined]
        used = getattr(store, "used", []) if store is not None else []
        names = list(dict.fromkeys(name for t, name in used if t >= self.started))
        flasher = getattr(self.bench, "flasher", None)
        container = getattr(flasher, "container", None)  # the board's image format (its update family)
        seen: dict[str, dict[str, Any]] = {}
        for name in names:
            data = store[name]  # cached: no rebuild
            digest = hashlib.sha256(data).hexdigest()
            entry = {"name": name, "sha256": digest, "bytes": len(data), "source": "images fixture (recipe)",
                     "dumpinfo": _dumpinfo_of(store, name, data, container)}
            seen[digest] = entry
        staged = [data for t, data in list(getattr(flasher, "staged", [])) if t >= self.started]
        for i, data in enumerate(staged):
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:
                seen[digest]["staged"] = True
                continue
            seen[digest] = {"name": f"derived image #{i + 1} (mutated by the test)", "sha256": digest,
                            "bytes": len(data), "source": "staged through the flasher", "staged": True,
                            "dumpinfo": _dumpinfo_bytes(data, container)}
        return list(seen.values())

    def board_status(self) -> dict[str, Any]:
        """Update status, versions and boot info read from the board now (errors recorded, never raised)."""
        from hil.dut.dut import Dut

        out: dict[str, Any] = {"read_at": _wall(time.time())}
        try:
            dut = Dut(self.bench.uds, self.bench.can, self.bench.cfg.dut)
            powered = self.bench.psu.is_on()
        except AttributeError as exc:
            return {**out, "error": f"no DUT on this bench: {exc}"}
        except (errors.HilError, OSError) as exc:
            return {**out, "error": f"supply state unreadable: {exc}"}
        if not powered:  # the test left the board unpowered: nothing to read (the known state powers it again)
            return {**out, "error": "supply output is off at the end of the test: the board was not read"}
        reads = {"update_status": lambda: _record(dut.status()), "software_version": dut.version,
                 "backup_version": dut.backup_version, "boot_info": lambda: _record(dut.boot_info()),
                 "security_counter": dut.security_counter, "rxswin": dut.rxswin}
        history = getattr(dut, "update_history", None)  # issue 10 adds the board's update history
        if callable(history):
            reads["update_history"] = lambda: _record(history())
        for key, read in reads.items():
            try:
                out[key] = read()
            except (errors.HilError, OSError, ValueError, TimeoutError) as exc:
                out[key] = f"unreadable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return out

    # ------------------------------------------------------------------ finish
    def finish(self, evidence: Path) -> None:
        """Stop sampling, write images.json / dumpinfo / update-status.json into `evidence`, add the timed steps."""
        self._stop_sampler()
        evidence.mkdir(parents=True, exist_ok=True)
        images = self.images_used()
        if images:
            (evidence / "images.json").write_text(json.dumps(
                [{k: v for k, v in i.items() if k != "dumpinfo"} for i in images], indent=2) + "\n")
            (evidence / "imgtool-dumpinfo.txt").write_text("\n\n".join(
                f"# {i['name']}  sha256 {i['sha256']}\n{i['dumpinfo']}" for i in images) + "\n")
        if getattr(self.bench, "uds", None) is not None:
            (evidence / "update-status.json").write_text(json.dumps(self.board_status(), indent=2, default=str) + "\n")
        events = self.events()
        self.fault_marks = [Mark(e.start, e.title) for e in events if e.kind == "fault"]
        add_steps(events, images)


def _record(value: Any) -> Any:
    """A contract record (dataclass with enums) or a list of them as JSON-ready data."""
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return [_record(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _record(getattr(value, k)) for k in value.__dataclass_fields__}
    if hasattr(value, "name") and hasattr(value, "value"):  # enum member
        return value.name
    return value


def _dumpinfo_of(store: Any, name: str, data: bytes, container: Any = None) -> str:
    """The build's saved description (<build_dir>/<name>.dumpinfo.txt: `imgtool dumpinfo` or the container's
    own), else the image described by the board's container."""
    build_dir = getattr(getattr(getattr(store, "cfg", None), "images", None), "build_dir", None)
    if build_dir is not None:
        saved = Path(build_dir) / f"{name}.dumpinfo.txt"
        if saved.is_file():
            return saved.read_text(errors="replace")
    return _dumpinfo_bytes(data, container)


def _dumpinfo_bytes(data: bytes, container: Any = None) -> str:
    """The image described by the board's container (`imgtool dumpinfo` for MCUboot images); a broken image's
    refusal is kept as its output."""
    import tempfile

    from hil.images.build import dumpinfo

    if container is not None:
        try:
            return str(container.describe(data))
        except (errors.HilError, OSError, ValueError) as exc:
            return f"the {container.family} container could not describe this image: {exc}"
    with tempfile.TemporaryDirectory(prefix="hil-dumpinfo-") as tmp:
        path = Path(tmp) / "image.bin"
        path.write_bytes(data)
        try:
            return dumpinfo(path)
        except (errors.HilError, OSError) as exc:
            return f"imgtool dumpinfo refused this image: {exc}"


def _listener() -> Any:
    """allure-pytest's listener (holds the test result being written), or None."""
    if allure is None:
        return None
    for plugin in _allure_plugins.get_plugins():
        if hasattr(plugin, "allure_logger") and hasattr(plugin.allure_logger, "get_test"):
            return plugin
    return None


#: Evidence file suffixes shown as text in the report.
_TEXT_SUFFIXES = (".log", ".json", ".txt", ".csv")
#: The CAN trace the report carries (binary; any CAN tool reads it) beside its decoded excerpt (can-excerpt.txt).
CAN_TRACE_ATTACHMENT = "can.blf"
#: Evidence that stays in the evidence folder only: the .asc is the .blf again as text, four times its size.
_NOT_ATTACHED = (".asc",)


def attach_evidence(evidence: Path) -> None:
    """Attach a test's evidence files to the test itself (not to the bench fixture's teardown).

    The CAN trace goes in once, as `can.blf`, with its decoded excerpt around each failure and
    injected fault (`can-excerpt.txt`); the `.asc` stays in the evidence folder (hashed in
    traceability.* like every evidence file).
    """
    if allure is None:
        return
    files = [f for f in sorted(evidence.iterdir())
             if f.is_file() and f.stat().st_size and f.suffix not in _NOT_ATTACHED]
    listener = _listener()
    test = listener.allure_logger.get_test(None) if listener is not None else None
    for f in files:
        kind = {".png": allure.attachment_type.PNG, ".csv": allure.attachment_type.CSV,
                ".blf": "application/octet-stream"}.get(
            f.suffix, allure.attachment_type.TEXT if f.suffix in _TEXT_SUFFIXES else None)
        if test is not None:
            listener.allure_logger.attach_file(new_uuid(), str(f), name=f.name, attachment_type=kind,
                                               extension=f.suffix.lstrip("."), parent_uuid=test.uuid)
        else:
            allure.attach.file(str(f), name=f.name, attachment_type=kind, extension=f.suffix.lstrip("."))


def add_steps(events: Sequence[AuditEvent], images: Sequence[Mapping[str, Any]] = ()) -> None:
    """Add the events as steps of the current test result, with their real start/stop times.

    Added at the end (not while they happen) so a step never interleaves with the test's own steps;
    the timestamps are the real ones, so the report's timeline shows them where they happened.
    """
    listener = _listener()
    if listener is None:
        return
    test = listener.allure_logger.get_test(None)
    if test is None:
        return

    def step(name: str, start: float, stop: float, params: Mapping[str, str]) -> Any:
        return TestStepResult(name=name, status=Status.PASSED, start=int(start * 1000), stop=int(stop * 1000),
                              parameters=[Parameter(name=k, value=v) for k, v in params.items()])

    phases = [e for e in events if e.kind == "phase"]
    if phases:
        group = step("flashing phases", phases[0].start, max(e.stop for e in phases), {"count": str(len(phases))})
        group.steps = [step(e.title, e.start, e.stop, e.detail) for e in phases]
        test.steps.append(group)
    for e in (e for e in events if e.kind == "fault"):
        test.steps.append(step(e.title, e.start, e.stop, e.detail))
    for img in images:
        test.steps.append(step(f"image used: {img['name']}", time.time(), time.time(),
                               {"sha256": str(img["sha256"]), "bytes": str(img["bytes"])}))


# ---------------------------------------------------------------------- session
#: Which exception types (hil.errors) mean what, for the report's categories. A type not named here
#: falls under its nearest listed base class (checked by tests/test_allure_audit.py).
TIMEOUT_TYPES = ("HilTimeout",)
BENCH_TYPES = ("BenchBroken", "BenchBusy", "BenchConfigError", "InstrumentError", "LimitViolation",
               "ReadbackMismatch", "ImageBuildError", "CampaignError", "PowerLoss")  # PowerLoss: only inside the virtual board
DUT_TYPES = ("VerdictError", "UpdateFailed", "UdsError", "ImageError", "FlashError")


def error_types() -> dict[str, list[str]]:
    """Category -> exception class names (hil.errors and hil.checks), every HilError subclass placed once."""
    from hil.dut import checks

    classes = {name: obj for mod in (errors, checks) for name, obj in vars(mod).items()
               if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__}
    groups: dict[str, list[str]] = {"timeout": [], "bench error": [], "DUT failure": []}
    for name, cls in sorted(classes.items()):
        for group, roots in (("timeout", TIMEOUT_TYPES), ("bench error", BENCH_TYPES), ("DUT failure", DUT_TYPES)):
            if any(issubclass(cls, classes[r]) for r in roots if r in classes):
                groups[group].append(f"{cls.__module__}.{name}")
                break
    return groups


def categories() -> list[dict[str, Any]]:
    """Allure categories (categories.json, Allure 2 format; Allure 3 reads the same rules from its config).

    Matched on the failure message, which allure-pytest starts with the exception's qualified name.
    The patterns are written for both engines: Java's full match (Allure 2) and JavaScript's search
    (Allure 3) - hence `[\\s\\S]*` instead of an inline DOTALL flag, which JavaScript refuses.
    Order matters (first match wins): timeouts, then bench errors, then DUT failures (including
    plain assertion failures: a verdict the DUT did not meet).
    """
    groups = error_types()

    def names(group: str) -> str:
        return "|".join(re.escape(n) for n in groups[group])

    return [
        {"name": "Timeout", "matchedStatuses": ["broken", "failed"],
         "messageRegex": rf"^(?:{names('timeout')}|TimeoutError|Failed: Timeout)\b[\s\S]*"},
        {"name": "Bench error", "matchedStatuses": ["broken", "failed"],
         "messageRegex": rf"^(?:{names('bench error')}|ConnectionError|OSError|pyvisa\.\S+)\b[\s\S]*"},
        {"name": "DUT failure", "matchedStatuses": ["failed", "broken"],
         "messageRegex": rf"^(?:{names('DUT failure')}|AssertionError)\b[\s\S]*"},
    ]


def write_categories(*dirs: Path) -> None:
    """categories.json into each directory (the allure results, and reports/ for the Allure 3 config)."""
    text = json.dumps(categories(), indent=2) + "\n"
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        (d / "categories.json").write_text(text)


def environment(identity: Mapping[str, Any], framework: Mapping[str, Any], tools: Mapping[str, Any]) -> dict[str, str]:
    """Flat key -> value pairs for Allure's environment: bench, DUT identity, instruments, framework commit, tools."""
    env: dict[str, str] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                put(f"{prefix}.{k}" if prefix else str(k), v)
        elif value is not None:
            env[prefix] = str(value)

    from hil import __version__

    put("", {k: v for k, v in identity.items()})
    put("framework", {"name": "bms-ota-hil", "version": __version__, **framework})
    put("tool", {k.replace(" (npm)", "-npm"): v for k, v in tools.items()
                 if k in ("python", "allure-pytest", "imgtool", "python-can", "udsoncan", "pytest", "allure (npm)")})
    return env


def write_environment(results: Path, env: Mapping[str, str], executor: Mapping[str, Any] | None = None) -> None:
    """environment.properties (and executor.json) in the allure results directory."""
    results.mkdir(parents=True, exist_ok=True)

    def esc(text: str) -> str:  # java.util.Properties escaping, as Allure parses the file
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace("=", "\\=").replace(":", "\\:")

    lines = [f"{esc(k).replace(' ', '_')}={esc(v)}" for k, v in env.items()]
    (results / "environment.properties").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if executor:
        (results / "executor.json").write_text(json.dumps(executor, indent=2) + "\n")


def write_session(config: pytest.Config, reports_dir: Path, identity: Mapping[str, Any], tools: Mapping[str, Any],
                  started: str) -> None:
    """Session end: categories.json (results and reports dir), environment.properties and executor.json (results)."""
    import platform

    from hil.report.records import git_info

    alluredir = config.getoption("allure_report_dir", None)
    if not alluredir:
        return
    results = Path(alluredir) if Path(alluredir).is_absolute() else Path(config.invocation_params.dir) / alluredir
    write_categories(results, reports_dir)
    write_environment(results, environment(identity, git_info(Path(config.rootpath)), tools),
                      executor={"name": f"bms-ota-hil on {platform.node()}", "type": "pytest",
                                "buildName": f"bench {identity.get('bench')}, started {started}"})


def new_uuid() -> str:
    return str(uuid.uuid4())
