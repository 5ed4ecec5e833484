"""Fuzzing with hypothesis: the virtual board's UDS server, the image verifier, the SCPI emulators, the bench YAML loader.

Properties (issue 9, item 4):
- nothing crashes: every input ends in an answer or in the module's own typed error;
- a rejected request never changes the running image or the configuration;
- every malformed request gets the NRC the contract names (docs/bench-contract.md sections 2-7).
  `ContractModel` below is an independent reading of those tables: it tracks session, security and
  download state from the responses and names the exact NRC where the tables fix one.

Example counts come from the hypothesis profile (tests/conftest.py): a few hundred per target in
`make test`, >= 10,000 with `HIL_NIGHTLY=1`. Regression examples found by the fuzzer stay as
`@example`s.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import can
import isotp
import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from hil.bench import contract
from hil.bench.config import BenchConfig, compute_key, load_bench
from hil.bench.contract import Did, Nrc, Routine, UpdateState
from hil.bench.dut_profile import DutProfile
from hil.errors import BenchConfigError, ImageError
from hil.images.build import load_image
from hil.images.keys import ensure_dev_keys
from hil.images.mcuboot import image_extent, load_trusted_keys, parse_image, verify_image
from hil.sim.bench import VirtualBench
from hil.sim.board import Board
from hil.sim.diag import DiagServer
from hil.sim.instruments import BatteryEmulatorModel, SupplyModel
from hil.sim.scpi import ScpiServer

from bench_ports import private_config

ROOT = Path(__file__).resolve().parents[1]


#: pytest-timeout per test: the nightly profile's 10,000 examples per target take minutes on a busy host.
pytestmark = pytest.mark.timeout(max(300, int(settings.default.max_examples * 0.25)))


def scaled(fraction: float, *, floor: int = 10) -> settings:
    """This target's share of the active profile's examples (nightly keeps >= 10,000 for full targets)."""
    return settings(max_examples=max(floor, int(settings.default.max_examples * fraction)))


# =========================================================================== UDS server
SA_LOCKOUT_S = 0.2  # the fuzz board's SecurityAccess delay: short, so that one run sees it start and end


@dataclass
class FuzzBoard:
    bench: VirtualBench
    board: Board
    cfg: BenchConfig
    image: bytes  # a valid signed image (1.1.0) for well-formed downloads
    resets: list[float] = field(default_factory=list)


@pytest.fixture(scope="module")
def fuzz_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzBoard]:
    """One powered virtual board (fast flash, unpaced in-process CAN) that every UDS example talks to.

    ECUReset is recorded instead of executed: the fuzz is about the request handler, and a reboot
    per example would cost a boot each (resets are covered by tests/test_virtual_bench.py).
    """
    tmp = tmp_path_factory.mktemp("fuzz-board")
    cfg = load_bench(ROOT / "benches/sim-inproc.yaml")
    assert cfg.sim is not None
    # No watchdog resets: a host too busy to run the main loop for a second would reboot the board
    # mid-example (and install an image a TEST activation requested). Resets have their own tests.
    cfg = private_config(cfg, tmp, prefix="fuzz", flash_timing="fast", sa_lockout_s=SA_LOCKOUT_S, watchdog_ms=3_600_000.0)
    cfg = cfg.model_copy(update={"can": cfg.can.model_copy(update={"pacing": False})})
    bench = VirtualBench(cfg)
    effective = bench.start()
    try:
        assert bench.board is not None
        board = bench.board
        fb = FuzzBoard(bench, board, effective, load_image("1.1.0", effective))
        board.request_reset_after_response = lambda: fb.resets.append(time.monotonic())  # type: ignore[method-assign]
        bench.supply.power_on(cfg.psu.channel, cfg.psu.nominal_voltage, cfg.psu.current_limit)
        deadline = time.monotonic() + 10
        while board.diag is None or board.soc is None:
            assert time.monotonic() < deadline, "fuzz board did not boot"
            time.sleep(0.01)
        # The vehicle side: plugged in and parked (the charging window), so activation's preconditions hold.
        from hil.drivers.canbus import open_bus
        vehicle_bus = open_bus(effective.can)
        spec = board.db.get_message_by_name(effective.profile.can.dbc_message(contract.MSG_VEHICLE_STATE))
        vehicle = vehicle_bus.send_periodic(can.Message(arbitration_id=spec.frame_id, is_extended_id=False, data=spec.encode(
            {"ChargerConnected": 1, "IgnitionOn": 0, "DriveReady": 0, "VehicleSpeed": 0})), 0.1)
        try:
            yield fb
        finally:
            vehicle.stop()
            vehicle_bus.shutdown()
    finally:
        bench.stop()


@dataclass
class Snapshot:
    """What a rejected request must leave alone."""

    primary: bytes  # SHA-256 of the primary slot's image area
    running: str | None
    config: Any
    config_schema: Any
    security_counter: Any

    @classmethod
    def take(cls, board: Board) -> "Snapshot":
        lay = board.layout
        digest = hashlib.sha256(board.flash.read(lay.primary_offset, lay.slot_size)).digest()
        image = board.running_image
        return cls(digest, image.version_str if image is not None else None, board.nv_get("config"),
                   board.nv_get("config_schema"), board.nv_get("security_counter"))


#: Any answer other than these NRCs is a contract violation (0x10, 0x7E, 0x92 are not used by the contract).
CONTRACT_NRCS = {int(n) for n in Nrc} - {Nrc.GENERAL_REJECT, Nrc.SUBFUNCTION_NOT_SUPPORTED_IN_SESSION,
                                          Nrc.VOLTAGE_TOO_HIGH, Nrc.RESPONSE_PENDING}
ANY = "any"  # the model does not fix the answer (state it cannot see), only its form
POSITIVE = "positive"
NONE = "none"


@dataclass
class ContractModel:
    """The contract's NRC tables as a state machine fed by the requests and the board's answers."""

    recovery: bool
    sa_attempts: int
    sa_lockout_until: float
    levels: dict[int, tuple[str, bytes]]
    secondary_offset: int
    slot_size: int
    session: int = contract.SESSION_DEFAULT
    unlocked: int = 0
    seed_level: int | None = None
    erased: bool = False
    download: list[int] | None = None  # [size, received, next counter, last counter or -1]
    download_is_profile: bool = False  # the open download is a configuration package (PROFILE_DOWNLOAD_ADDRESS)
    #: A configuration package waits for routine APPLY_PROFILE: True, False, or None when the model cannot know
    #: (after an ECUReset).
    profile_staged: bool | None = False

    # ------------------------------------------------------------------ expectations
    def expect(self, req: bytes, update_state: UpdateState) -> set[Any]:
        """The answers the contract allows for `req` now: NRC ints, POSITIVE, NONE or ANY."""
        if not req:
            return {NONE}
        sid, n = req[0], len(req)
        sub = req[1] & 0x7F if n >= 2 else None
        suppress = n >= 2 and bool(req[1] & 0x80)
        ok = {NONE} if suppress else {POSITIVE}
        prog = self.session == contract.SESSION_PROGRAMMING
        default = self.session == contract.SESSION_DEFAULT
        if sid == 0x10:
            if n != 2:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            if sub not in (1, 2, 3):
                return {Nrc.SUBFUNCTION_NOT_SUPPORTED}
            return {POSITIVE}  # 0x10 ignores the suppress bit on the virtual board: either is accepted below
        if sid == 0x11:
            if n != 2:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            return {Nrc.SUBFUNCTION_NOT_SUPPORTED} if sub not in (1, 2, 3) else ok
        if sid == 0x3E:
            if n != 2:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            return {Nrc.SUBFUNCTION_NOT_SUPPORTED} if sub != 0 else ok
        if sid == 0x28:
            if n != 3:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            if default:
                return {Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION}
            return {Nrc.SUBFUNCTION_NOT_SUPPORTED} if sub not in (0, 1, 2, 3) else ok
        if sid == 0x85:
            if n < 2:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            if default:
                return {Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION}
            return {Nrc.SUBFUNCTION_NOT_SUPPORTED} if sub not in (1, 2) else ok
        if sid == 0x27:
            return self._expect_security(req)
        if sid == 0x19:  # ReadDTCInformation 01 / 02 (with a status mask) and 0A; every session, no suppress bit
            if n < 2:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            if sub in (0x01, 0x02):
                return {POSITIVE} if n == 3 else {Nrc.INCORRECT_MESSAGE_LENGTH}
            if sub == 0x0A:
                return {POSITIVE} if n == 2 else {Nrc.INCORRECT_MESSAGE_LENGTH}
            return {Nrc.SUBFUNCTION_NOT_SUPPORTED}
        if sid == 0x14:  # ClearDiagnosticInformation: all (FFFFFF) or one DTC of the contract; every session
            if n != 4:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            group = int.from_bytes(req[1:4], "big")
            return {POSITIVE} if group == 0xFFFFFF or group in {int(d) for d in contract.Dtc} else {Nrc.REQUEST_OUT_OF_RANGE}
        if sid == 0x22:
            if n < 3 or n % 2 == 0:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            dids = [int.from_bytes(req[i:i + 2], "big") for i in range(1, n, 2)]
            known = {int(d) for d in Did}
            return {POSITIVE} if all(d in known for d in dids) else {Nrc.REQUEST_OUT_OF_RANGE}
        if sid == 0x2E:
            if n < 4:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            did = int.from_bytes(req[1:3], "big")
            if did not in (Did.CONFIGURATION, Did.VEHICLE_GROUP, Did.VIN):
                return {Nrc.REQUEST_OUT_OF_RANGE}
            if self.recovery:
                return {Nrc.CONDITIONS_NOT_CORRECT}
            if default:
                return {Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION}
            # Unsigned configuration writes are the development restore path only (bench level).
            if self.unlocked != contract.SA_LEVEL_BENCH:
                return {Nrc.SECURITY_ACCESS_DENIED}
            if did == Did.VEHICLE_GROUP:
                group = req[3:]
                ok_group = 1 <= len(group) <= 16 and all(0x21 <= b <= 0x7E for b in group)
                return {POSITIVE} if ok_group else {Nrc.REQUEST_OUT_OF_RANGE}
            if did == Did.VIN:
                ok_vin = contract.is_vin(req[3:].decode("ascii", errors="replace"))
                return {POSITIVE} if ok_vin else {Nrc.REQUEST_OUT_OF_RANGE}
            return {POSITIVE} if _json_object(req[3:]) is not None else {Nrc.REQUEST_OUT_OF_RANGE}
        if sid == 0x31:
            return self._expect_routine(req, update_state)
        if sid == 0x34:
            return self._expect_request_download(req)
        if sid == 0x36:
            if n < 2:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            dl = self.download
            if dl is None:
                return {Nrc.REQUEST_SEQUENCE_ERROR}
            if n > contract.MAX_BLOCK_LENGTH:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            size, received, next_counter, last = dl
            if req[1] == last:
                return {POSITIVE}
            if req[1] != next_counter:
                return {Nrc.WRONG_BLOCK_SEQUENCE_COUNTER}
            if n == 2:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            if received + n - 2 > size:
                return {Nrc.TRANSFER_DATA_SUSPENDED}
            return {POSITIVE, Nrc.GENERAL_PROGRAMMING_FAILURE}  # a flash write may fail (unaligned write)
        if sid == 0x37:
            dl = self.download
            if dl is None or dl[1] != dl[0]:
                return {Nrc.REQUEST_SEQUENCE_ERROR}
            return {POSITIVE, Nrc.GENERAL_PROGRAMMING_FAILURE}
        return {Nrc.SERVICE_NOT_SUPPORTED}

    def _expect_security(self, req: bytes) -> set[Any]:
        n = len(req)
        if n < 2:
            return {Nrc.INCORRECT_MESSAGE_LENGTH}
        if self.session == contract.SESSION_DEFAULT:
            return {Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION}
        sub = req[1]
        level = sub if sub % 2 else sub - 1
        if level not in self.levels:
            return {Nrc.SUBFUNCTION_NOT_SUPPORTED}
        if sub % 2:
            if n != 2:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            now = time.monotonic()
            if now < self.sa_lockout_until - 0.02:
                return {Nrc.REQUIRED_TIME_DELAY_NOT_EXPIRED}
            if now > self.sa_lockout_until + 0.02:
                return {POSITIVE}
            return {POSITIVE, Nrc.REQUIRED_TIME_DELAY_NOT_EXPIRED}
        if n != 2 + contract.SA_KEY_LENGTH:
            return {Nrc.INCORRECT_MESSAGE_LENGTH}
        if self.seed_level != level:
            return {Nrc.REQUEST_SEQUENCE_ERROR}
        return {POSITIVE, Nrc.INVALID_KEY, Nrc.EXCEEDED_NUMBER_OF_ATTEMPTS}  # decided in observe() from the key

    def _expect_routine(self, req: bytes, update_state: UpdateState) -> set[Any]:
        n = len(req)
        if n < 4:
            return {Nrc.INCORRECT_MESSAGE_LENGTH}
        if req[1] & 0x7F != 0x01:
            return {Nrc.SUBFUNCTION_NOT_SUPPORTED}
        rid = int.from_bytes(req[2:4], "big")
        if rid not in {int(r) for r in Routine}:
            return {Nrc.REQUEST_OUT_OF_RANGE}
        if self.session != contract.SESSION_PROGRAMMING:
            return {Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION}
        if not self.unlocked:
            return {Nrc.SECURITY_ACCESS_DENIED}
        if rid == Routine.ERASE_MEMORY:
            if n != 4:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            return {Nrc.CONDITIONS_NOT_CORRECT} if self.download is not None else {POSITIVE}
        if rid == Routine.APPLY_PROFILE:
            if n != 4:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            if self.recovery:
                return {Nrc.CONDITIONS_NOT_CORRECT}
            if self.profile_staged is None:
                return {POSITIVE, Nrc.REQUEST_SEQUENCE_ERROR}
            # A staged package is verified by the board: a fuzzed one is refused, and that is a positive answer.
            return {POSITIVE} if self.profile_staged else {Nrc.REQUEST_SEQUENCE_ERROR}
        if rid == Routine.CHECK_PROGRAMMING_DEPENDENCIES:
            if n != 4:
                return {Nrc.INCORRECT_MESSAGE_LENGTH}
            if update_state not in (UpdateState.DOWNLOADED, UpdateState.VERIFIED, UpdateState.REJECTED):
                return {Nrc.REQUEST_SEQUENCE_ERROR}
            return {POSITIVE}
        if n != 5:
            return {Nrc.INCORRECT_MESSAGE_LENGTH}
        if req[4] not in {int(m) for m in contract.ActivationMode}:
            return {Nrc.REQUEST_OUT_OF_RANGE}
        if req[4] == contract.ActivationMode.RESTORE and self.unlocked != contract.SA_LEVEL_BENCH:
            return {Nrc.SECURITY_ACCESS_DENIED}
        if self.recovery and req[4] == contract.ActivationMode.TEST:
            return {Nrc.REQUEST_OUT_OF_RANGE}
        if update_state is not UpdateState.VERIFIED:
            return {Nrc.REQUEST_SEQUENCE_ERROR}
        return {POSITIVE}  # the fuzz board's pack is idle and its supply nominal: preconditions hold

    def _expect_request_download(self, req: bytes) -> set[Any]:
        n = len(req)
        if n < 3:
            return {Nrc.INCORRECT_MESSAGE_LENGTH}
        if self.session != contract.SESSION_PROGRAMMING:
            return {Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION}
        if not self.unlocked:
            return {Nrc.SECURITY_ACCESS_DENIED}
        if req[1] != 0:
            return {Nrc.REQUEST_OUT_OF_RANGE}
        n_size, n_addr = req[2] >> 4, req[2] & 0x0F
        if not (1 <= n_addr <= 4 and 1 <= n_size <= 4):
            return {Nrc.REQUEST_OUT_OF_RANGE}
        if n != 3 + n_addr + n_size:
            return {Nrc.INCORRECT_MESSAGE_LENGTH}
        if self.download is not None:
            return {Nrc.CONDITIONS_NOT_CORRECT}
        address = int.from_bytes(req[3:3 + n_addr], "big")
        size = int.from_bytes(req[3 + n_addr:], "big")
        if address == contract.PROFILE_DOWNLOAD_ADDRESS:
            if self.recovery:
                return {Nrc.CONDITIONS_NOT_CORRECT}
            return {POSITIVE} if 0 < size <= contract.PROFILE_MAX_SIZE else {Nrc.REQUEST_OUT_OF_RANGE}
        if address != self.secondary_offset or size == 0 or size > self.slot_size:
            return {Nrc.REQUEST_OUT_OF_RANGE}
        return {POSITIVE} if self.erased else {Nrc.UPLOAD_DOWNLOAD_NOT_ACCEPTED}

    # ------------------------------------------------------------------ state from answers
    def observe(self, req: bytes, resp: bytes | None) -> None:
        if not req:
            return
        sid = req[0]
        positive = resp is not None and len(resp) > 0 and resp[0] == sid + 0x40
        nrc = resp[2] if resp is not None and len(resp) == 3 and resp[0] == 0x7F else None
        if sid == 0x10 and positive:
            self._relock()
            self.download = None
            self.session = req[1] & 0x7F
        elif sid == 0x11 and len(req) == 2 and req[1] & 0x7F in (1, 2, 3):
            self.download = None  # answered or suppressed: a reset abandons the download
            self.profile_staged = None
        elif sid == 0x27 and len(req) >= 2:
            sub = req[1]
            level = sub if sub % 2 else sub - 1
            if positive and sub % 2:
                self.seed_level = None if resp[2:] == bytes(contract.SA_SEED_LENGTH) else level
            elif positive:
                self.unlocked, self.seed_level = level, None
                self.sa_attempts = 0
            elif nrc in (Nrc.INVALID_KEY, Nrc.EXCEEDED_NUMBER_OF_ATTEMPTS):
                self.seed_level = None
                self.sa_attempts += 1
                if self.sa_attempts >= contract.SA_MAX_ATTEMPTS:
                    self.sa_attempts = 0
                    self.sa_lockout_until = time.monotonic() + SA_LOCKOUT_S
        elif sid == 0x31 and positive and req[2:4] == struct.pack(">H", Routine.ERASE_MEMORY):
            self.erased = True
        elif sid == 0x31 and positive and req[2:4] == struct.pack(">H", Routine.APPLY_PROFILE):
            self.profile_staged = False  # one package, one attempt
        elif sid == 0x34 and positive:
            size = int.from_bytes(req[3 + (req[2] & 0x0F):], "big")
            address = int.from_bytes(req[3:3 + (req[2] & 0x0F)], "big")
            self.download, self.download_is_profile = [size, 0, 1, -1], address == contract.PROFILE_DOWNLOAD_ADDRESS
            if self.download_is_profile:
                self.profile_staged = False
            else:
                self.erased = False
        elif sid == 0x36 and positive and self.download is not None and req[1] != self.download[3]:
            self.download[1] += len(req) - 2
            self.download[2] = (req[1] + 1) & 0xFF
            self.download[3] = req[1]
        elif sid == 0x37 and resp is not None and (positive or nrc == Nrc.GENERAL_PROGRAMMING_FAILURE):
            if positive and self.download_is_profile:
                self.profile_staged = True
            self.download = None

    def key_verdict(self, req: bytes, resp: bytes | None, seed: bytes | None) -> set[Any]:
        """Exact answer to a sendKey whose seed the model saw (wrong key: 0x35, 0x35, then 0x36)."""
        level = req[1] - 1
        algorithm, secret = self.levels[level]
        if seed is not None and req[2:] == compute_key(algorithm, secret, seed, level):
            return {POSITIVE}
        return {Nrc.EXCEEDED_NUMBER_OF_ATTEMPTS if self.sa_attempts + 1 >= contract.SA_MAX_ATTEMPTS else Nrc.INVALID_KEY}

    def _relock(self) -> None:
        self.unlocked, self.seed_level = 0, None


def _note(text: str) -> None:
    """hypothesis' note() where a test runs under @given; plain fixtures keep the log only."""
    try:
        note(text)
    except InvalidArgument:
        pass


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class UdsSession:
    """One tester talking to a fresh DiagServer of the fuzz board; checks every answer against the model."""

    def __init__(self, fb: FuzzBoard, recovery: bool) -> None:
        board = fb.board
        self.fb = fb
        self.diag = DiagServer(board, recovery=recovery)
        dut = fb.cfg.dut
        levels = {s.level: (s.algorithm, s.resolve_secret()) for s in (dut.security, dut.bench_security) if s is not None}
        self.model = ContractModel(recovery, board.sa_attempts, board.sa_lockout_until, levels,
                                   board.layout.secondary_offset, board.layout.slot_size)
        self.seed: bytes | None = None
        self.log: list[str] = []

    def send(self, req: bytes) -> bytes | None:
        board = self.fb.board
        before = Snapshot.take(board)
        allowed = self.model.expect(req, board.update_state())
        if req[:1] == b"\x27" and len(req) == 2 + contract.SA_KEY_LENGTH and allowed == {
                POSITIVE, Nrc.INVALID_KEY, Nrc.EXCEEDED_NUMBER_OF_ATTEMPTS}:
            allowed = self.model.key_verdict(req, None, self.seed)
        resp = self.diag.handle(req)  # must not raise: a crash here fails the example
        self.log.append(f"{req[:24].hex()}{'..' if len(req) > 24 else ''} -> {resp.hex() if resp is not None else None}")
        _note(self.log[-1])
        self._check_form(req, resp, allowed)
        after = Snapshot.take(board)
        assert after.primary == before.primary and after.running == before.running, \
            f"request {req[:16].hex()} changed the running image"
        assert after.security_counter == before.security_counter, f"request {req[:16].hex()} moved the security counter"
        written = req[:1] == b"\x2E" and resp is not None and resp[:1] == b"\x6E"
        if not written:
            assert (after.config, after.config_schema) == (before.config, before.config_schema), \
                f"request {req[:16].hex()} (answer {resp.hex() if resp else None}) changed the configuration"
        else:
            assert after.config == _json_object(req[3:]), "configuration write not persisted as sent"
        if req[:1] == b"\x27" and resp is not None and resp[:1] == b"\x67" and req[1] % 2:
            self.seed = resp[2:]
        elif req[:1] == b"\x27" and len(req) >= 2 and not req[1] % 2 and resp is not None and resp[:1] != b"\x7F" or \
                req[:1] == b"\x27" and resp is not None and len(resp) == 3 and resp[2] in (Nrc.INVALID_KEY, Nrc.EXCEEDED_NUMBER_OF_ATTEMPTS):
            self.seed = None
        self.model.observe(req, resp)
        return resp

    def _check_form(self, req: bytes, resp: bytes | None, allowed: set[Any]) -> None:
        where = f"request {req[:16].hex()}{'..' if len(req) > 16 else ''} in session {self.model.session:#04x}, " \
                f"unlocked {self.model.unlocked:#04x}, download {self.model.download}: answer " \
                f"{resp.hex() if resp is not None else None}, contract allows {sorted(map(str, allowed))}"
        if resp is None:
            assert NONE in allowed or ANY in allowed, where
            return
        sid = req[0]
        if resp[0] == 0x7F:
            assert len(resp) == 3 and resp[1] == sid, where
            assert resp[2] in CONTRACT_NRCS, where
            assert resp[2] in allowed or ANY in allowed, where
            return
        assert resp[0] == sid + 0x40, where
        assert POSITIVE in allowed or ANY in allowed, where
        if sid == 0x22:
            assert resp[1:3] == req[1:3], where


# ---------------------------------------------------------------- strategies
def _u(n: int, value: int) -> bytes:
    return value.to_bytes(n, "big")


SIDS = st.sampled_from([0x10, 0x11, 0x14, 0x19, 0x22, 0x27, 0x28, 0x2E, 0x31, 0x34, 0x36, 0x37, 0x3E, 0x85])
random_request = st.one_of(
    st.binary(min_size=0, max_size=12),
    st.tuples(SIDS, st.binary(max_size=10)).map(lambda t: bytes([t[0]]) + t[1]),
    st.tuples(st.sampled_from([0x22, 0x2E]), st.sampled_from([int(d) for d in Did] + [0x0000, 0xFFFF, 0xF1A1]),
              st.binary(max_size=6)).map(lambda t: bytes([t[0]]) + _u(2, t[1]) + t[2]),
    st.tuples(st.integers(0, 0xFF), st.sampled_from([int(r) for r in Routine] + [0x0000, 0xFF02, 0x0302]),
              st.binary(max_size=3)).map(lambda t: bytes([0x31, t[0]]) + _u(2, t[1]) + t[2]),
    st.tuples(st.integers(0, 0xFF), st.sampled_from([1, 2, 3, 0x61, 0x62, 0x05, 0x63])).map(
        lambda t: bytes([0x27, t[1]]) + bytes(t[0] % 6)),
    st.builds(lambda obj: b"\x2E\xFD\x20" + json.dumps(obj).encode(),
              st.one_of(st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=6), max_size=4),
                        st.lists(st.integers(), max_size=3), st.integers(), st.none())),
    st.tuples(st.integers(0, 2), st.integers(0, 0xFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0x40000)).map(
        lambda t: bytes([0x34, t[0] and t[1], 0x44]) + _u(4, t[2] if t[0] != 1 else 0x23000) + _u(4, t[3])),
)


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """A tester session: well-formed steps (so deep states are reached) mixed with random requests."""
    # Most sessions start from a prepared state, so that the random steps after it hit the deep checks
    # (a download in progress, a staged image) instead of the session and security gates again and again.
    ops: list[tuple[str, Any]] = [draw(st.sampled_from([("raw", b""), ("prepare", "unlocked"), ("prepare", "erased"),
                                                         ("prepare", "downloading"), ("stage_valid", None)]))]
    if ops[0] == ("prepare", "downloading"):
        ops[0] = ("prepare", draw(st.integers(1, 9000)))
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["raw", "raw", "raw", "session", "unlock", "erase", "download", "block",
                                     "exit", "check", "activate", "stage_valid", "profile_download", "apply_profile"]))
        if kind == "raw":
            ops.append((kind, draw(random_request)))
        elif kind == "session":
            ops.append((kind, draw(st.sampled_from([1, 2, 3]))))
        elif kind == "unlock":
            ops.append((kind, draw(st.sampled_from([1, 1, 0x61]))))
        elif kind == "download":
            ops.append((kind, draw(st.integers(1, 9000))))
        elif kind == "profile_download":
            ops.append((kind, draw(st.integers(0, contract.PROFILE_MAX_SIZE + 1))))
        elif kind == "block":
            ops.append((kind, (draw(st.integers(-2, 2)), draw(st.integers(0, 4096)))))
        elif kind == "activate":
            ops.append((kind, draw(st.integers(0, 3))))
        else:
            ops.append((kind, None))
    return ops


def run_ops(session: UdsSession, ops: list[tuple[str, Any]]) -> None:
    fb = session.fb
    lay = fb.board.layout
    for kind, arg in ops:
        if kind == "raw":
            session.send(arg)
        elif kind == "session":
            session.send(bytes([0x10, arg]))
        elif kind == "unlock":
            resp = session.send(bytes([0x27, arg]))
            if resp is not None and resp[:1] == b"\x67" and any(resp[2:]):
                algorithm, secret = session.model.levels[arg]
                session.send(bytes([0x27, arg + 1]) + compute_key(algorithm, secret, resp[2:], arg))
        elif kind == "erase":
            session.send(b"\x31\x01" + _u(2, Routine.ERASE_MEMORY))
        elif kind == "download":
            session.send(b"\x34\x00\x44" + _u(4, lay.secondary_offset) + _u(4, arg))
        elif kind == "block":
            dl = session.model.download
            counter = ((dl[2] if dl else 1) + arg[0]) & 0xFF
            session.send(bytes([0x36, counter]) + bytes((i * 7) & 0xFF for i in range(arg[1])))
        elif kind == "exit":
            session.send(b"\x37")
        elif kind == "check":
            session.send(b"\x31\x01" + _u(2, Routine.CHECK_PROGRAMMING_DEPENDENCIES))
        elif kind == "activate":
            session.send(b"\x31\x01" + _u(2, Routine.ACTIVATE_UPDATE) + bytes([arg]))
        elif kind == "profile_download":
            session.send(b"\x34\x00\x44" + _u(4, contract.PROFILE_DOWNLOAD_ADDRESS) + _u(4, arg))
        elif kind == "apply_profile":
            session.send(b"\x31\x01" + _u(2, Routine.APPLY_PROFILE))
        elif kind == "prepare":
            run_ops(session, [("session", 2), ("unlock", 1)])
            if arg != "unlocked":
                run_ops(session, [("erase", None)] + ([("download", arg)] if isinstance(arg, int) else []))
        elif kind == "stage_valid":
            image = fb.image
            session.send(b"\x10\x02")
            run_ops(session, [("unlock", 1), ("erase", None)])
            session.send(b"\x34\x00\x44" + _u(4, lay.secondary_offset) + _u(4, len(image)))
            for i, off in enumerate(range(0, len(image), contract.TRANSFER_DATA_PER_BLOCK)):
                session.send(bytes([0x36, (i + 1) & 0xFF]) + image[off:off + contract.TRANSFER_DATA_PER_BLOCK])
            session.send(b"\x37")
            session.send(b"\x31\x01" + _u(2, Routine.CHECK_PROGRAMMING_DEPENDENCIES))


@pytest.fixture
def uds_session(fuzz_board: FuzzBoard) -> Iterator[Any]:
    sessions: list[UdsSession] = []

    def make(recovery: bool = False) -> UdsSession:
        s = UdsSession(fuzz_board, recovery)
        sessions.append(s)
        return s
    try:
        yield make
    finally:
        for s in sessions:
            s.diag.close()


@pytest.mark.integration
@scaled(1.0)
@given(req=random_request, recovery=st.booleans(), session=st.sampled_from([1, 2, 3]), unlock=st.booleans())
@example(req=b"\x36\x01", recovery=False, session=2, unlock=True)
@example(req=b"\x2E\xFD\x20[]", recovery=False, session=3, unlock=True)
@example(req=b"\x2E\xFD\x20{\"a\":1}", recovery=True, session=3, unlock=True)
def test_uds_single_request_gets_the_contract_answer(uds_session, req, recovery, session, unlock) -> None:
    s = uds_session(recovery)
    try:
        run_ops(s, [("session", session)] + ([("unlock", 1)] if unlock else []))
        s.send(req)
    finally:
        s.diag.close()


@pytest.mark.integration
@scaled(1.0)
@given(ops=operations(), recovery=st.booleans())
def test_uds_request_sequences_keep_the_contract(uds_session, ops, recovery) -> None:
    s = uds_session(recovery)
    try:
        run_ops(s, ops)
    finally:
        s.diag.close()


@pytest.mark.integration
def test_uds_fuzz_reaches_the_deep_states(uds_session) -> None:
    """The sequence strategy is only worth its examples if it gets past security into download and activation."""
    s = uds_session(False)
    run_ops(s, [("stage_valid", None), ("activate", 0)])
    assert s.log[-1].endswith("7101030100"), s.log[-3:]
    s.diag.close()


# ---------------------------------------------------------------- over ISO-TP (the real transport)
@pytest.fixture(scope="module")
def isotp_tester(fuzz_board: FuzzBoard) -> Iterator[isotp.NotifierBasedCanStack]:
    bench = fuzz_board.bench
    assert bench.bus is not None and bench.notifier is not None
    from hil.drivers.canbus import open_bus
    import can
    bus = open_bus(fuzz_board.cfg.can)
    notifier = can.Notifier(bus, [], timeout=0.05)
    stack = isotp.NotifierBasedCanStack(bus, notifier, address=isotp.Address(
        isotp.AddressingMode.Normal_11bits, txid=contract.UDS_PHYS_REQUEST_ID, rxid=contract.UDS_PHYS_RESPONSE_ID),
        params=DutProfile().isotp_params(False, False, blocking_send=True))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        notifier.stop()
        bus.shutdown()


def _exchange(stack: isotp.NotifierBasedCanStack, req: bytes, timeout: float = 2.0) -> bytes | None:
    """One request, the final answer (0x78 skipped), or None when nothing came within `timeout`."""
    while stack.available():
        stack.recv()
    stack.send(req)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        resp = stack.recv(block=True, timeout=max(0.0, left)) if left > 0 else None
        if resp is None:
            return None
        resp = bytes(resp)
        if not (len(resp) == 3 and resp[0] == 0x7F and resp[2] == Nrc.RESPONSE_PENDING):
            return resp


@pytest.mark.integration
@scaled(0.1)
@given(req=random_request.filter(lambda r: len(r) > 0))
@example(req=b"\x22" + b"\xF1\x89" * 40)  # multi-frame request
def test_uds_over_isotp_answers_every_request(fuzz_board, isotp_tester, req) -> None:
    """The same contract through the board's own transport: a random request never kills the server."""
    board = fuzz_board.board
    before = Snapshot.take(board)
    assert _exchange(isotp_tester, b"\x10\x01") is not None, "no answer to 10 01 before the request"
    diag = board.diag
    assert diag is not None
    dut = fuzz_board.cfg.dut
    levels = {s.level: (s.algorithm, s.resolve_secret()) for s in (dut.security, dut.bench_security) if s is not None}
    model = ContractModel(False, board.sa_attempts, board.sa_lockout_until, levels, board.layout.secondary_offset,
                          board.layout.slot_size)
    allowed = model.expect(req, board.update_state())
    resp = _exchange(isotp_tester, req, timeout=1.0 if NONE in allowed else 2.0)
    note(f"{req.hex()} -> {resp.hex() if resp is not None else None}")
    if resp is None:
        assert NONE in allowed, f"no answer to {req.hex()}; the contract allows {allowed}"
    elif resp[0] == 0x7F:
        assert resp[2] in allowed or (POSITIVE in allowed and resp[2] == Nrc.REQUIRED_TIME_DELAY_NOT_EXPIRED), \
            f"{req.hex()} -> {resp.hex()}, contract allows {allowed}"
    else:
        assert resp[0] == req[0] + 0x40 and (POSITIVE in allowed or NONE in allowed)
    after = Snapshot.take(board)
    assert (after.primary, after.running, after.config) == (before.primary, before.running, before.config)
    assert _exchange(isotp_tester, b"\x3E\x00") == b"\x7E\x00", "server stopped answering after " + req.hex()


# =========================================================================== image verifier
@pytest.fixture(scope="module")
def images() -> dict[str, Any]:
    cfg = load_bench(ROOT / "benches/sim.yaml")
    assert cfg.sim is not None
    ensure_dev_keys(cfg.images.keys_dir)
    good = load_image("1.1.0", cfg)
    ed = load_image("2.0.0", cfg)
    return {"trusted": load_trusted_keys(cfg.sim.trusted_keys), "good": good, "ed25519": ed,
            "slot": cfg.flash_layout.slot_size, "hw": cfg.dut.hardware_number}


def _hashed_region(data: bytes) -> bytes:
    img = parse_image(data)
    return data[:img.hashed_size]


@st.composite
def mutated_image(draw: st.DrawFn, base: bytes) -> bytes:
    """Byte-level mutations biased to the header and the TLV areas, where the parser's edge cases are."""
    data = bytearray(base)
    tlv_start = len(base) - 400  # roughly where the protected TLVs begin in these small images
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "extend", "splice", "u32"]))
        if not data:
            break
        if op in ("flip", "set", "u32"):
            zone = draw(st.sampled_from(["header", "tlv", "anywhere"]))
            lo, hi = {"header": (0, 32), "tlv": (max(0, tlv_start), len(data)), "anywhere": (0, len(data))}[zone]
            pos = draw(st.integers(lo, max(lo, hi - 1)))
            pos = min(pos, len(data) - 1)
            if op == "flip":
                data[pos] ^= 1 << draw(st.integers(0, 7))
            elif op == "set":
                data[pos] = draw(st.integers(0, 255))
            else:
                value = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, len(base), len(base) + 1, 0x200, 0xFFFF]))
                data[pos:pos + 4] = struct.pack("<I", value)[:len(data) - pos]
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif op == "extend":
            data += draw(st.binary(max_size=64))
        else:
            pos = draw(st.integers(0, len(data)))
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def _check_verifier(images: dict[str, Any], data: bytes, base: bytes | None) -> None:
    for fn in (lambda: image_extent(data), lambda: parse_image(data)):
        try:
            fn()
        except ImageError as exc:
            assert isinstance(exc.reason, int) and contract.Reason(exc.reason), exc
    try:
        img = verify_image(data, images["trusted"], hardware_id=images["hw"], slot_size=images["slot"],
                           config_schema=1)
    except ImageError as exc:
        contract.Reason(exc.reason)  # a reason the contract names
        assert str(exc), "an ImageError must say what is wrong"
        return
    # Accepted: only bytes nobody signed may differ from a signed original (trailing data, unprotected padding).
    assert base is not None, "random bytes verified as a signed image"
    assert _hashed_region(data) == _hashed_region(base), "an image with changed signed content verified"
    assert img.sha256 == parse_image(base).sha256


@scaled(1.0)
@given(data=st.data(), which=st.sampled_from(["good", "ed25519"]))
@example(data=None, which="good")  # the unmodified image verifies
def test_verifier_accepts_no_mutated_image(images, data, which) -> None:
    base = images[which]
    mutated = data.draw(mutated_image(base)) if data is not None else base
    _check_verifier(images, mutated, base)


@scaled(0.5)
@given(data=st.one_of(st.binary(max_size=2048),
                      st.binary(max_size=1024).map(lambda b: struct.pack("<I", 0x96F3B83D) + b)))
def test_verifier_survives_random_bytes(images, data) -> None:
    _check_verifier(images, data, None)


# =========================================================================== SCPI emulators
SCPI_WORDS = ["VOLT", "VOLTage", "CURR", "CURRent", "OUTP", "OUTPut", "MEAS", "MEASure", "SOUR", "SOURce", "STAT",
              "INST", "NSEL", "SEL", "APPL", "APPLy", "SYST", "ERR", "*IDN", "*RST", "*CLS", "*OPC", "TEMP", "CELL",
              "ALL", "LEV", "DC", "SCAL", "XYZ", "VOLTX", ""]
SCPI_PARAMS = ["1", "0", "ON", "OFF", "12.5", "-1", "1e9", "nan", "inf", "MAX", "MIN", "DEF", "(@1)", "(@2)",
               "(@1,3)", "(@1:3)", "(@0)", "(@9)", "(@1:99999999999)", "(@", "\"x", "'y'", "CH1", "CH4", "", "1,2",
               "(@2:1)", "1,(@2)", "99999999999999999999999", "0x10", "#H10"]


@st.composite
def scpi_line(draw: st.DrawFn) -> str:
    commands = []
    for _ in range(draw(st.integers(1, 3))):
        header = ":".join(draw(st.lists(st.sampled_from(SCPI_WORDS), min_size=1, max_size=4)))
        if draw(st.booleans()):
            header = ":" + header
        if draw(st.booleans()):
            header += "?"
        params = draw(st.lists(st.sampled_from(SCPI_PARAMS), max_size=3))
        commands.append(header + (" " + ",".join(params) if params else ""))
    line = ";".join(commands)
    if draw(st.integers(0, 4)) == 0:
        line = draw(st.text(max_size=40))
    return line


def _check_scpi(instrument: SupplyModel | BatteryEmulatorModel, line: str) -> None:
    instrument.clear_errors()
    answer = instrument.execute(line)  # must not raise
    assert answer is None or isinstance(answer, str)
    assert instrument.execute("*IDN?") == instrument.idn, "instrument stopped answering"
    if isinstance(instrument, SupplyModel):
        for ch, rng in instrument.ranges.items():  # nothing outside the output's range was ever accepted
            assert 0 <= instrument.voltage_setpoint(ch) <= rng.max_voltage
            assert 0 <= instrument.current_limit(ch) <= rng.max_current


def _unknown_header(line: str) -> bool:
    """The line has a header no instrument knows, and nothing after it empties the error queue (*CLS, SYST:ERR?)."""
    up = line.upper()
    return ("XYZ" in up or "VOLTX" in up) and "*CLS" not in up and not ("SYST" in up and "ERR" in up)


@scaled(1.0)
@given(line=scpi_line())
@example(line="VOLT 1,(@1:99999999999)")  # a channel range that once allocated billions of entries
@example(line="MEAS:VOLT? (@1:99999999999)")
def test_scpi_supply_never_crashes_and_queues_an_error(line) -> None:
    supply = SupplyModel()
    _check_scpi(supply, line)
    supply.clear_errors()
    supply.execute(line)
    if _unknown_header(line):
        assert supply.next_error() != '+0,"No error"', f"{line!r} left no error in the queue"


@scaled(0.5)
@given(line=scpi_line())
@example(line="CELL:VOLT 1,(@1:99999999999)")
@example(line="VOLT;XYZ;*CLS")  # the fuzzer's own bug: *CLS empties the queue after the unknown header
def test_scpi_battery_emulator_never_crashes_and_queues_an_error(line) -> None:
    emu = BatteryEmulatorModel()
    _check_scpi(emu, line)
    emu.clear_errors()
    emu.execute(line)
    if _unknown_header(line):
        assert emu.next_error() != '+0,"No error"', f"{line!r} left no error in the queue"


@scaled(1.0)
@given(header=st.from_regex(r"\A[A-Za-z][A-Za-z0-9]{0,8}(:[A-Za-z][A-Za-z0-9]{0,8}){0,2}\??\Z"),
       params=st.lists(st.sampled_from(SCPI_PARAMS), max_size=2))
def test_scpi_every_refused_command_leaves_an_error(header, params) -> None:
    """A command that answers nothing and changes nothing must have said why in the error queue."""
    supply = SupplyModel()
    line = header + (" " + ",".join(params) if params else "")
    def state() -> list[tuple[float, float, bool]]:
        return [(supply.voltage_setpoint(ch), supply.current_limit(ch), supply.is_on(ch)) for ch in supply.ranges]
    before = state()
    answer = supply.execute(line)
    after = state()
    error = supply.next_error()
    if answer is None and before == after and not header.upper().startswith(("*", "INST", "OUTP", "VOLT", "CURR",
                                                                            "SOUR", "APPL", "SYST")):
        assert error != '+0,"No error"', f"{line!r}: no answer, no change, no error"


@pytest.fixture(scope="module")
def scpi_server() -> Iterator[tuple[SupplyModel, int]]:
    supply = SupplyModel()
    server = ScpiServer(supply)
    port = server.start()
    try:
        yield supply, port
    finally:
        server.stop()


@scaled(0.1)
@given(raw=st.one_of(st.binary(max_size=200), scpi_line().map(lambda s: s.encode("utf-8", "replace"))))
@example(raw=b"\xff\xfe\x00VOLT 5\r")
def test_scpi_server_over_tcp_survives_any_line(scpi_server, raw) -> None:
    supply, port = scpi_server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw.replace(b"\n", b" ") + b"\n*IDN?\n")
        buf = b""
        while supply.idn.encode() not in buf:
            chunk = sock.recv(4096)
            assert chunk, f"server closed the connection after {raw!r}"
            buf += chunk


# =========================================================================== bench YAML loader
BASE_BENCH = yaml.safe_load((ROOT / "benches/sim.yaml").read_text())


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


BENCH_PATHS = _paths(BASE_BENCH)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for every example's file (rewritten each time): thousands of directories would cost more than the load."""
    return tmp_path_factory.mktemp("bench-fuzz")
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) |
    st.text(max_size=12) | st.sampled_from(["", "0x10", "1e3", "TCPIP0::h::1::SOCKET", "socket://h:1", "\x00", "~"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6)


@st.composite
def mutated_bench(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    data = json.loads(json.dumps(BASE_BENCH))
    touched = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(BENCH_PATHS))
        node: Any = data
        for key in path[:-1]:
            if isinstance(node, dict) and key in node or isinstance(node, list) and isinstance(key, int) and key < len(node):
                node = node[key]
            else:
                node = None
                break
        leaf = path[-1]
        if not (isinstance(node, dict) and leaf in node
                or isinstance(node, list) and isinstance(leaf, int) and leaf < len(node)):
            continue
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if op == "replace":
            node[path[-1]] = draw(yaml_values)
        elif op == "delete":
            del node[path[-1]]
        elif isinstance(node, dict):
            path = path[:-1] + (draw(st.text(min_size=1, max_size=8)),)
            node[path[-1]] = draw(yaml_values)
        touched.append(path)
    return data, touched


def _names_a_field(msg: str, touched: list[tuple[Any, ...]]) -> bool:
    low = msg.lower()
    return any(str(part).lower() in low for path in touched for part in path if str(part)) or "top level" in low


@scaled(1.0)
@given(case=mutated_bench())
@example(case=({**BASE_BENCH, "sim": {**BASE_BENCH["sim"], "flash_file": "a\x00b"}}, [("sim", "flash_file")]))
@example(case=({**BASE_BENCH, "images": ["x"]}, [("images",)]))
@example(case=({**BASE_BENCH, "can": {**BASE_BENCH["can"], "args": {"port": "x"}}}, [("can", "args", "port")]))
def test_bench_loader_names_the_field_or_loads(bench_dir, case) -> None:
    data, touched = case
    path = bench_dir / "bench.yaml"
    # The file sits next to benches/ layout-wise: relative paths resolve against its own directory.
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    try:
        load_bench(path)
    except BenchConfigError as exc:
        msg = str(exc)
        assert str(path) in msg, f"error does not name the file: {msg}"
        assert _names_a_field(msg, touched), f"error names none of {touched}: {msg}"


@scaled(0.5)
@given(text=st.one_of(
    st.text(max_size=200),
    st.tuples(st.integers(0, 2000), st.integers(0, 40), st.text(max_size=20)).map(
        lambda t: (lambda s: s[:t[0]] + t[2] + s[t[0] + t[1]:])((ROOT / "benches/sim.yaml").read_text()))))
@example(text="bench: x\n" * 3)
@example(text="!!python/object/apply:os.system ['true']")
@example(text="a: &a [*a]")
def test_bench_loader_raw_text_gives_bench_config_error(bench_dir, text) -> None:
    path = bench_dir / "raw.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_bench(path)
    except BenchConfigError as exc:
        assert str(path) in str(exc), str(exc)
