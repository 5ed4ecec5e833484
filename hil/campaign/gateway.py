"""The bench plays one vehicle: the vehicle's gateway, its drive home, its depot's charging window.

For each vehicle the bench's board is put on the baseline release, given the vehicle's identity (VIN,
vehicle group; its hardware variant is the board's own), and then the gateway does what the white
paper describes: it downloads the release in the background while the vehicle drives (the SOC core's
frames must keep their budget meanwhile), and installs only in the depot's charging window, plugged in
and parked. The field condition the plan gave the vehicle is injected with the framework's own means:
image mutations (hil.images.mutate), the Flasher's progress hook (link lost), the supply (a proven power
cut, hil.faults.power) and the vehicle's state on CAN (hil.drivers.vehicle). Afterwards the board's own
record - F189, FD01, FD09, DTCs, boot info, SOC frames - is read and reconciled with the report's entry.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

from hil.bench.bench import Bench
from hil.bench.config import BenchConfig
from hil.bench.contract import Did, Dtc, Nrc, ProfileState, Reason, UpdateState
from hil.campaign.plan import Assignment
from hil.campaign.reconcile import new_entries, reconcile, view, working_image_findings
from hil.campaign.results import Outcome, VehicleResult
from hil.campaign.spec import Campaign
from hil.dut.dut import Dut, wait_dut_up
from hil.errors import BenchBroken, CampaignError, HilError, HilTimeout, UdsError
from hil.images.container import ImageContainer

#: VCU_VehicleState is sent every 100 ms and the board holds a state older than 0.5 s as none: a new state
#: has reached it after a few periods.
VCU_SETTLE_S = 0.3
#: Console pattern (DUT profile) that shows the bootloader swapping: a power cut "mid-install" waits for it.
SWAP_PATTERN = "swap_progress"
#: Without a console, the supply is cut this long after the activation's reset (the swap takes seconds).
CUT_DELAY_S = 0.3
#: A supply output that is off reads back below this.
MAX_OFF_V = 1.0


class LinkLost(Exception):
    """The gateway's link drops during the background download (raised from the Flasher's progress hook)."""


class ReleaseArtifacts:
    """What the gateway sends, per bench: images by name through the bench's catalogue, packages by recipe
    (each bench brings its own variant's builds; the virtual fleet gives each variant its own recipes)."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str, str], bytes] = {}

    def _key(self, cfg: BenchConfig, kind: str, name: str) -> tuple[str, str, str]:
        return (cfg.images.model_dump_json() + cfg.dut.hardware_number, kind, name)

    def image(self, cfg: BenchConfig, name: str) -> bytes:
        """An image by role, recipe name or path, through `cfg`'s catalogue (built once)."""
        from hil.images.catalogue import resolve_image

        key = self._key(cfg, "image", name)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = resolve_image(name, cfg)
            return self._cache[key]

    def baseline(self, cfg: BenchConfig) -> bytes:
        """The image a board plays a vehicle from: the catalogue's `baseline`, else the bench's dut.baseline_image."""
        from hil.images.catalogue import catalogue_of

        return self.image(cfg, "baseline" if "baseline" in catalogue_of(cfg) else cfg.dut.baseline_image)

    def package(self, cfg: BenchConfig, group: str) -> tuple[str, bytes]:
        """(recipe name, signed package) for a vehicle of `group` on the board of `cfg`."""
        from hil.config_packages.recipes import load_package

        name = self.campaign.release.package_for(group)
        if name is None:
            raise CampaignError(f"release.package has no package for vehicle group {group!r}")
        key = self._key(cfg, "package", name)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = load_package(name, cfg)
            return name, self._cache[key]


def _version_of(container: ImageContainer, image: bytes) -> str:
    try:
        return container.read(image).version_str
    except HilError:
        return "0.0.0"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class Gateway:
    """Plays vehicles on one open bench (one at a time). `clock()` is seconds since the rehearsal started."""

    def __init__(self, bench: Bench, campaign: Campaign, artifacts: ReleaseArtifacts, clock: Callable[[], float],
                 *, evidence_dir: Path | None = None, start_config: dict[str, Any] | None = None) -> None:
        self.bench = bench
        self.cfg = bench.cfg
        self.campaign = campaign
        self.kind = campaign.release.kind
        self.artifacts = artifacts
        self.clock = clock
        self.evidence_dir = evidence_dir
        #: The configuration the board had when the campaign took it (a package release starts every vehicle from it).
        self.start_config = start_config

    # ------------------------------------------------------------------ one vehicle
    def play(self, a: Assignment, *, held_by: str | None = None) -> VehicleResult:
        """One vehicle's turn; never raises for what the board does (that is the result), only BenchBroken
        when the bench itself is gone."""
        v = a.vehicle
        r = VehicleResult(v.vin, v.depot, v.group, v.variant, a.stage, None if held_by else a.condition,
                          Outcome.FAILED, bench=self.cfg.bench, started_s=self.clock())
        if a.condition and not held_by:
            r.details["condition"] = {"name": a.condition, **a.params}
        dut = self.bench.make_dut()
        console = self.bench.console
        mark = console.mark() if console is not None else 0
        history_before: list[Any] = []
        try:
            self._prepare(dut)
            self._identify(dut, r)
            dut.clear_dtcs()  # the DTCs at the end are this vehicle's
            history_before = dut.update_history()
            r.version_before = self._version(dut)
            status = dut.status()
            r.details["status_before"] = f"{status.state.name}/{status.reason.name}"
            if self.kind == "package":
                r.details["profile_before"] = dut.profile_status()
            if held_by:
                r.outcome, r.reason = Outcome.HELD, f"held: the campaign stopped at stage {held_by}"
                r.details["status_expected"] = r.details["status_before"]
            elif a.condition == "never_connects":
                r.outcome = Outcome.PENDING
                r.reason = f"never connected to a gateway in its window ({v.depot} {v.window})"
                r.details["status_expected"] = r.details["status_before"]
            elif self.kind == "firmware":
                self._firmware(dut, a, r)
            else:
                self._package(dut, a, r)
            if r.outcome in (Outcome.HELD, Outcome.PENDING) or not r.version_after:
                r.version_after = self._version(dut)
        except BenchBroken:
            raise
        except (HilError, OSError) as exc:
            r.outcome = Outcome.FAILED
            r.reason = _first_line(exc)
            r.findings.append(f"the rehearsal of this vehicle failed: {_first_line(exc)}")
        finally:
            if self.bench.vehicle is not None:
                try:
                    self.bench.vehicle.safe_state()  # back at the depot, plugged in, parked
                except Exception as exc:  # the vehicle frame is the bench's; note it, do not lose the result
                    r.findings.append(f"vehicle state could not be restored: {_first_line(exc)}")
        try:
            self._read_board(dut, history_before, r)
        except (HilError, OSError) as exc:
            r.findings.append(f"the board's own record could not be read: {_first_line(exc)}")
        if not r.version_after:
            r.version_after = r.board.version
        r.findings += reconcile(r, self.kind) + working_image_findings(r)
        if console is not None and self.evidence_dir is not None:
            self._keep_console(console.text[mark:], r.vin)
        r.ended_s = self.clock()
        return r

    def _keep_console(self, text: str, vin: str) -> None:
        assert self.evidence_dir is not None
        d = self.evidence_dir / vin
        d.mkdir(parents=True, exist_ok=True)
        (d / "console.log").write_text(text)

    # ------------------------------------------------------------------ before the vehicle
    def _version(self, dut: Dut) -> str:
        """The release a vehicle runs as the report names it: the firmware version, or the active profile."""
        if self.kind == "package":
            p = dut.profile_status()
            return f"{p.get('profile')} v{p.get('version')}"
        return dut.version()

    def _prepare(self, dut: Dut) -> None:
        """The board on the baseline release, nothing staged, the vehicle plugged in and parked, nominal power."""
        from hil.dut.restore import restore_strategy

        b = self.bench
        if b.load is not None:
            b.load.safe_state()
        if b.vehicle is not None:
            b.vehicle.safe_state()
        b.supply.power_on()
        try:
            wait_dut_up(dut, self.cfg.dut.boot_timeout_s * 2)
        except HilTimeout as exc:
            raise BenchBroken(f"bench {self.cfg.bench}: the board does not answer UDS: {exc}") from exc
        baseline = b.programmer.container.read(self.artifacts.baseline(self.cfg))
        info = dut.boot_info()
        status = dut.status()
        if (info.mode.name != "APPLICATION" or not info.confirmed or dut.version() != baseline.version_str
                or dut.security_counter() > baseline.security_counter
                or status.state not in (UpdateState.SUCCESS, UpdateState.IDLE, UpdateState.ROLLED_BACK,
                                        UpdateState.REJECTED, UpdateState.VERIFIED, UpdateState.DOWNLOADED)):
            restore_strategy(self.cfg.profile.restore).restore(b, self.artifacts.baseline(self.cfg),
                                                               f"baseline {baseline.version_str}")
        status = dut.status()
        if status.state not in (UpdateState.SUCCESS, UpdateState.IDLE) or status.reason is not Reason.NONE:
            b.programmer.discard()  # a staged, refused or reverted image of the previous vehicle goes
            after = dut.status()
            if after.state not in (UpdateState.SUCCESS, UpdateState.IDLE) or after.reason is not Reason.NONE:
                raise BenchBroken(f"bench {self.cfg.bench}: update status {after.state.name}/{after.reason.name} "
                                  "stays after the erase routine")
        if self.kind == "package" and self.start_config is not None:
            config = {**self.start_config, "profile": "default", "profile_version": 0}
            if dut.config() != config:
                dut.write_config(config)  # the development restore path: no active profile to be a downgrade of

    def _identify(self, dut: Dut, r: VehicleResult) -> None:
        """The board becomes the vehicle: its group and VIN provisioned (bench level), its variant checked."""
        hardware = dut.uds.read_str(Did.HARDWARE_NUMBER)
        if hardware != r.variant:
            raise CampaignError(f"bench {self.cfg.bench} has hardware {hardware}; vehicle {r.vin} is variant {r.variant}")
        if dut.vehicle_group() != r.group:
            dut.provision_vehicle_group(r.group)
        try:
            if dut.vin() != r.vin:
                dut.provision_vin(r.vin)
        except UdsError as exc:
            if exc.nrc != Nrc.REQUEST_OUT_OF_RANGE:
                raise
            r.board.vin_checked = False
            r.details["vin"] = "not checked: the board has no VIN DID (F190 answered 0x31, docs/bench-contract.md)"

    # ------------------------------------------------------------------ a firmware release
    def _firmware(self, dut: Dut, a: Assignment, r: VehicleResult) -> None:
        from hil.timing.soc_timing import record_timing

        b = self.bench
        release = self.campaign.release
        image = self.artifacts.image(self.cfg, a.params["image"] if a.condition == "bad_build" else str(release.image))
        flasher = b.programmer
        r.target_version = _version_of(flasher.container, image)
        sent = (flasher.container.flip_bit(image, "payload", a.params["bit"]) if a.condition == "corrupted_download"
                else image)
        vehicle = b.vehicle
        # ---- on the road: the gateway downloads in the background; the SOC core keeps its budget meanwhile
        if vehicle is not None:
            vehicle.drive(self.campaign.gateway.drive_speed_kmh)
        timing = self.cfg.timing
        with record_timing(b.channel, timing.soc_period_ms) as soc:
            staged = self._download(flasher, sent, a, r)
        summary = soc.finish()
        budget = timing.soc_period_ms + timing.period_tolerance_ms
        r.details["soc_during_download"] = {"frames": summary.frames, "missed_cycles": soc.missed,
                                            "period_max_ms": round(summary.period_max, 3), "budget_ms": budget}
        if summary.frames < 2 or soc.missed > timing.max_missed_cycles or summary.period_max > budget:
            r.findings.append(f"the SOC core missed its budget during the background download: {summary.frames} "
                              f"frames, {soc.missed} cycles missed (allowed {timing.max_missed_cycles}), longest "
                              f"period {summary.period_max:.1f} ms (budget {budget:g} ms)")
        r.details["download"] = {"bytes": staged.size, "seconds": round(staged.seconds, 2),
                                 "resumed_from": staged.resumed_from, "accepted": staged.accepted}
        if not staged.accepted:
            r.outcome, r.reason = Outcome.REFUSED, staged.reason.name
            r.version_after = dut.version()
            return
        # ---- at the depot: the charging window opens
        if vehicle is not None:
            vehicle.safe_state()
            if a.condition == "driving_at_window":
                vehicle.drive(self.campaign.gateway.drive_speed_kmh)
            elif a.condition == "charger_unplugged_in_window" and a.params.get("when") == "window_start":
                vehicle.unplug()
            time.sleep(VCU_SETTLE_S)  # the vehicle's new state reaches the board within a few frames
        console = b.console
        since = console.mark() if console is not None else 0
        boots = dut.boot_count()
        try:
            flasher.unlock()
            flasher.activate()
        except UdsError as exc:
            if exc.nrc not in (Nrc.CONDITIONS_NOT_CORRECT, Nrc.VOLTAGE_TOO_LOW):
                raise
            status = dut.status()  # the board says why it would not install
            r.outcome, r.reason = Outcome.PENDING, status.reason.name
            r.details["window"] = f"install refused in the window: NRC 0x{exc.nrc:02X}, update status " \
                                  f"{status.state.name}/{status.reason.name}; the release stays staged for the next window"
            r.details["status_expected"] = f"{UpdateState.VERIFIED.name}/{status.reason.name}"
            r.version_after = dut.version()
            return
        t_activated = time.monotonic()
        if vehicle is not None and a.condition == "charger_unplugged_in_window" and a.params.get("when") == "mid_install":
            vehicle.unplug()
        if a.condition == "power_cut_mid_install":
            self._cut_during_install(dut, a, r, since, boots)
        outcome = flasher.wait_outcome(self.campaign.gateway.outcome_timeout_s)
        install_s = time.monotonic() - t_activated
        r.details["install"] = {"seconds": round(install_s, 2), "states": outcome.states_seen}
        if install_s > a.vehicle.window.duration_s:
            r.findings.append(f"the install took {install_s:.0f} s, longer than the charging window {a.vehicle.window}")
        r.version_after = outcome.version
        if outcome.state is UpdateState.SUCCESS:
            r.outcome, r.reason = Outcome.UPDATED, ""
        elif outcome.state is UpdateState.ROLLED_BACK:
            r.outcome, r.reason = Outcome.ROLLED_BACK, outcome.reason.name
        elif outcome.state is UpdateState.REJECTED:
            r.outcome, r.reason = Outcome.REFUSED, outcome.reason.name
        else:
            r.outcome, r.reason = Outcome.FAILED, f"{outcome.state.name}/{outcome.reason.name}"
            r.findings.append(f"the install ended {outcome.state.name}/{outcome.reason.name}: no working image")

    def _download(self, flasher: Any, image: bytes, a: Assignment, r: VehicleResult) -> Any:
        """The background download; a link lost mid-way comes back and resumes where the board stopped storing."""
        if a.condition != "link_lost_mid_download":
            return flasher.stage(image)
        at = float(a.params["at"])
        lost: list[int] = []

        def drop(sent: int, total: int) -> None:
            if not lost and sent >= total * at:
                lost.append(sent)
                raise LinkLost(f"link lost after {sent} of {total} bytes")

        flasher.on_progress.append(drop)
        try:
            flasher.stage(image)
        except LinkLost:
            pass
        finally:
            flasher.on_progress.remove(drop)
        if not lost:
            r.findings.append(f"the link was to drop at {at:.0%} of the download, but the download ended first")
            return flasher.stage(image)
        # The link is back: a new session on the gateway's side; the board kept what it had stored.
        staged = flasher.stage(image, resume=True)
        r.details["link_lost"] = {"after_bytes": lost[0], "of_bytes": len(image), "resumed_from": staged.resumed_from}
        if staged.resumed_from == 0:
            r.findings.append(f"the link was lost after {lost[0]} of {len(image)} bytes and the download started over "
                              "from byte 0: the board offered nothing to resume (DID FD0A)")
        return staged

    def _cut_during_install(self, dut: Dut, a: Assignment, r: VehicleResult, since: int, boots: int) -> None:
        """A proven supply cut while the bootloader swaps (its console's swap lines; else a fixed delay)."""
        from hil.faults.power import CutEvidence, check_cut, proven_dropout

        b = self.bench
        off_s = float(a.params.get("off_s", 0.5))
        console = b.console
        pattern = console.patterns.get(SWAP_PATTERN) if console is not None else None
        if console is not None and pattern is not None:
            try:
                console.expect(pattern, timeout=30.0, since=since)
            except HilTimeout as exc:
                r.findings.append(f"power cut mid-install: no swap line on the console: {_first_line(exc)}")
                return
            ev = proven_dropout(b.supply, off_s, console, since)
        else:
            threading.Event().wait(CUT_DELAY_S)  # the planned cut point: a fixed offset into the swap
            ev = proven_dropout(b.supply, off_s, console, since, CutEvidence(offset_s=CUT_DELAY_S))
        try:
            wait_dut_up(dut, self.cfg.dut.boot_timeout_s * 2)
        except HilTimeout as exc:
            r.findings.append(f"the board did not answer after the power cut: {_first_line(exc)}")
            return
        proof = check_cut(ev, max_off_v=MAX_OFF_V, console=console, boot_count_before=boots, dut=dut)
        r.details["power_cut"] = {"landed": ev.landed if console is not None else "after a fixed delay",
                                  "off_s": off_s, "supply_read_back_v": ev.off_volts, "proven": not proof}
        if proof:
            r.findings.append("the power cut did not provably take effect: " + "; ".join(proof))

    # ------------------------------------------------------------------ a configuration package release
    def _package(self, dut: Dut, a: Assignment, r: VehicleResult) -> None:
        from hil.bench import contract
        from hil.config_packages.loader import download_and_apply
        from hil.config_packages.package import parse_package

        name, package = self.artifacts.package(self.cfg, a.vehicle.group)
        pkg = parse_package(package)
        r.target_version = f"{pkg.name} v{pkg.version}"
        r.details["package"] = {"recipe": name, "name": pkg.name, "version": pkg.version}
        sent = package
        if a.condition == "corrupted_download":
            body = int.from_bytes(package[8:12], "little")  # header: magic, u32 body length, u32 flags
            flipped = bytearray(package)
            flipped[16 + (a.params["bit"] // 8) % max(1, body)] ^= 1 << (a.params["bit"] % 8)
            sent = bytes(flipped)
        uds = self.bench.client
        security = self.cfg.dut.security
        if a.condition == "link_lost_mid_download":
            # Half the package reaches the board's RAM buffer, then the link drops; the gateway's next session
            # abandons it (a package is not resumable) and the package is sent again whole.
            uds.session(contract.SESSION_PROGRAMMING)
            uds.unlock(security)
            uds.request_download(contract.PROFILE_DOWNLOAD_ADDRESS, len(sent))
            uds.transfer_data(1, sent[:max(1, len(sent) // 2)])
            r.details["link_lost"] = {"after_bytes": max(1, len(sent) // 2), "of_bytes": len(sent), "resumed_from": 0,
                                      "note": "configuration packages go to RAM and are sent again whole"}
        result = download_and_apply(uds, security, sent)
        if result.state is ProfileState.APPLIED:
            r.outcome, r.reason = Outcome.UPDATED, ""
        elif result.state is ProfileState.REFUSED:
            r.outcome, r.reason = Outcome.REFUSED, result.reason.name
        else:
            r.outcome, r.reason = Outcome.ROLLED_BACK, result.reason.name
        r.version_after = self._version(dut)

    # ------------------------------------------------------------------ after the vehicle
    def _read_board(self, dut: Dut, history_before: list[Any], r: VehicleResult) -> None:
        """The board's own record of this vehicle's turn."""
        b = r.board
        wait_dut_up(dut, self.cfg.dut.boot_timeout_s * 2)
        b.hardware = dut.uds.read_str(Did.HARDWARE_NUMBER)
        b.group = dut.vehicle_group()
        if b.vin_checked:
            b.vin = dut.vin()
        info = dut.boot_info()
        b.boot_mode, b.confirmed = info.mode.name, info.confirmed
        status = dut.status()
        b.status = f"{status.state.name}/{status.reason.name}"
        b.version = self._version(dut)
        try:
            dut.wait_running(max(1.0, 3 * self.cfg.timing.soc_period_ms / 1000.0))
            b.running = True
        except HilTimeout:
            b.running = False
        b.history_new = [view(e) for e in new_entries(history_before, dut.update_history())]
        b.dtcs = {_name(Dtc, n, "0x{:06X}"): s for n, s in dut.dtcs().items()}
        if self.kind == "package":
            p = dut.profile_status()
            b.profile = {**p, "state": _name(ProfileState, p.get("state", 0)), "reason": _name(Reason, p.get("reason", 0))}


def _name(kind: Any, value: Any, unknown: str = "{}") -> str:
    """An enum member's name for a board value; the value itself when the framework has no name for it."""
    try:
        return str(kind(int(value)).name)
    except (ValueError, TypeError):
        return unknown.format(value)
