"""The SOC core of the simulated firmware: a periodic task on absolute deadlines.

Coulomb counting with OCV correction on a simple 12-cell pack. The pack's inputs (current, cell
voltages, temperatures) come from the battery emulator; the outputs are the DBC frames of the
bench contract. Execution time is modelled (nominal, jitter, periodic overruns from the build's
descriptor) so timing tests have something real to measure.
"""

from __future__ import annotations

import collections
import contextlib
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple, Protocol

import can
import cantools

from hil.bench import contract
from hil.bench.dut_profile import CanProfile
from hil.bench.frames import CounterSignal, PackLayout
from hil.sim.mcu_time import ModelClock, charge, charged

from hil.bench.contract import soc_from_ocv  # noqa: F401  (the pack's OCV curve is part of the bench contract)


class PackInputs(Protocol):
    """What the battery emulator provides to the board's analog front end."""

    def pack_current(self) -> float: ...
    def temperatures(self) -> list[float]: ...
    def cell_voltages(self) -> list[float]: ...


@dataclass
class SocEstimator:
    """Coulomb counter with OCV correction while the pack rests; v2 also compensates temperature."""

    capacity_ah: float
    soc: float
    algorithm: str = "coulomb_ocv_v1"
    rest_s: float = 0.0

    def step(self, current_a: float, cells: list[float], temps: list[float], dt_s: float) -> float:
        """Advance by one cycle; positive current charges."""
        self.soc += current_a * dt_s / (self.capacity_ah * 3600.0) * 100.0
        self.rest_s = self.rest_s + dt_s if abs(current_a) < 0.5 else 0.0
        rest_needed = 2.0
        if self.algorithm == "coulomb_ocv_v2" and temps:
            # Cold cells take far longer to relax to their OCV: v2 waits for it (v1 trusts a sagging voltage).
            rest_needed += 3.0 * max(0.0, 10.0 - sum(temps) / len(temps))
        if self.rest_s > rest_needed and cells:
            ocv_soc = soc_from_ocv(sum(cells) / len(cells))
            gain = 0.02
            if self.algorithm == "coulomb_ocv_v2" and temps:
                # Cold cells relax slower: trust the OCV less below 10 degC.
                gain *= max(0.25, min(1.0, (sum(temps) / len(temps) + 10.0) / 20.0))
            self.soc += (ocv_soc - self.soc) * gain
        self.soc = min(100.0, max(0.0, self.soc))
        return self.soc


@dataclass(frozen=True)
class TimingProfile:
    """Modelled execution time of one SOC cycle (from the build descriptor)."""

    exec_ms: float = 2.0
    jitter_ms: float = 0.3
    overrun_every: int = 0
    overrun_ms: float = 0.0


@dataclass
class CycleStats:
    """What the SOC task knows about its own timing (also sent in BMS_CycleDiag)."""

    cycles: int = 0
    missed: int = 0
    last_exec_us: int = 0
    last_latency_us: int = 0


class CpuSleep(Protocol):
    def __call__(self, seconds: float) -> None: ...


class CpuStall:
    """Stretches of time in which the SOC task cannot run: on a single-bank part, code fetch stalls
    while the flash bank the code runs from is being erased (the build's `stall_on_erase`)."""

    def __init__(self) -> None:
        self._clear = threading.Event()
        self._clear.set()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The task cannot run inside this block."""
        self._clear.clear()
        try:
            yield
        finally:
            self._clear.set()

    def is_clear(self) -> bool:
        """No stall is held right now."""
        return self._clear.is_set()

    def wait_clear(self, sleep: CpuSleep, poll_s: float = 0.005) -> None:
        """Return once no stall is held; `sleep(0)` between polls ends the wait on power loss or reset."""
        while not self._clear.wait(poll_s):
            sleep(0.0)


class Release(NamedTuple):
    """sim_only truth about one SOC cycle, wall clock (time.time(), the clock of CAN receive timestamps)."""

    cycle: int
    release: float  # the cycle's absolute deadline
    start: float  # when the task started running it
    queued: float  # when it handed its BMS_SocCore frame to the CAN controller


#: Cycles of truth kept (one hour at 10 Hz); a sim_only backdoor, never read by a black-box verdict.
RELEASE_TRACE_LEN = 36000


def new_release_trace() -> "collections.deque[Release]":
    """An empty, bounded trace of true SOC releases."""
    return collections.deque(maxlen=RELEASE_TRACE_LEN)


@dataclass
class SocCore:
    """The periodic SOC task. `run()` loops until `sleep` raises (power loss or reset)."""

    transmit: Callable[[can.Message], None]  # the CAN controller's TX mailbox: queues, never blocks the task
    db: cantools.database.Database
    pack: PackInputs
    estimator: SocEstimator
    sleep: CpuSleep
    period_s: float = 0.1
    timing: TimingProfile = TimingProfile()
    extra_messages: tuple[str, ...] = ()
    charge_limits: Callable[[], dict[str, float]] = lambda: {}
    update_status: Callable[[], dict[str, int]] = lambda: {}
    names: CanProfile = field(default_factory=CanProfile)  # framework names -> the board's DBC (DUT profile)
    #: The profile's frame facts (hil/bench/frames.py): cycle counter (None: the board sends none), where
    #: cells and temperature sensors sit, how often the slow frames go.
    counter: CounterSignal | None = CounterSignal(contract.SIG_SOC_COUNTER, 16)
    cells: PackLayout | None = None
    temperatures: PackLayout | None = None
    slow_every: int = contract.SLOW_FRAME_EVERY_CYCLES
    #: Defective boards only (hil/sim/defects.py): frames are dropped while `mute()`.
    mute: Callable[[], bool] = lambda: False
    #: Defective 2.0.0 only: BMS_SocCore's PackCurrent sent in A/10 instead of the DBC's scaling.
    layout_changed: bool = False
    stats: CycleStats = field(default_factory=CycleStats)
    flash_stall: CpuStall | None = None  # single-bank stall on flash erase (None: the task never stalls)
    #: sim_only: true release/start/queue instants of every cycle (Release), for the measurement's fidelity test.
    trace: "collections.deque[Release] | None" = None
    seed: int = 0
    _last_status: tuple[int, ...] = ()
    _release: tuple[float, float] = (0.0, 0.0)
    _last_limits: tuple[tuple[str, float], ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        """Run cycles on absolute deadlines: a late cycle does not shift the ones after it.

        Timing is kept on the MCU's own timeline (hil/sim/mcu_time.py): the modelled execution,
        flash waits and waits for the board's locks count; the host's scheduling of this thread does
        not, as an MCU's RTOS starts its highest-priority task on time. StartLatency, ExecTime and the
        frames' timestamps all come from that timeline.
        """
        rng = random.Random(self.seed)
        clock = ModelClock()
        deadline = time.monotonic()
        free = deadline  # when the core is free again: the end of the previous cycle
        while True:
            now = time.monotonic()
            if now < deadline:
                self.sleep(deadline - now)
            # The task starts at its deadline, or when the previous cycle ends if that overran it.
            start = max(deadline, free)
            if self.flash_stall is not None and not self.flash_stall.is_clear():
                # Single-bank part: no code fetch while the bank is erased; the task starts after it.
                self.flash_stall.wait_clear(self.sleep)
                start = max(start, time.monotonic())
            if start - deadline >= self.period_s:
                # Overran one or more whole periods: those cycles are lost, as on an RTOS.
                skipped = int((start - deadline) // self.period_s)
                self.stats.missed += skipped
                deadline += skipped * self.period_s
            self._release = (deadline, start)
            clock.start_at(start)
            self._cycle(rng, start - deadline, clock)
            free = clock.now()
            self.stats.last_exec_us = round((free - start) * 1e6)
            deadline += self.period_s

    def _model_sleep(self, seconds: float) -> None:
        """Spend `seconds` of modelled time (preemptible by power loss); charged whether or not `sleep` charges."""
        before = charged()
        self.sleep(seconds)
        if charged() == before:
            charge(seconds)

    def _exec_time_s(self, rng: random.Random) -> float:
        t = self.timing.exec_ms + rng.uniform(-self.timing.jitter_ms, self.timing.jitter_ms)
        if self.timing.overrun_every and (self.stats.cycles + 1) % self.timing.overrun_every == 0:
            t += self.timing.overrun_ms
        return max(0.0, t) / 1000.0

    def _cycle(self, rng: random.Random, latency_s: float, clock: "ModelClock") -> None:
        current = self.pack.pack_current()
        cells = self.pack.cell_voltages()
        temps = self.pack.temperatures()
        soc = self.estimator.step(current, cells, temps, self.period_s)
        # The computation itself is modelled as time spent, preemptible by power loss.
        self._model_sleep(self._exec_time_s(rng))
        n = self.stats.cycles
        self.stats.cycles += 1
        self.stats.last_latency_us = int(max(0.0, latency_s) * 1e6)
        pack_v = sum(cells) + current * 0.01
        sent_current = current / 10.0 if self.layout_changed else current
        core: dict[str, Any] = {contract.SIG_SOC: round(soc, 2), contract.SIG_PACK_VOLTAGE: round(max(0.0, pack_v), 2),
                                contract.SIG_PACK_CURRENT: round(sent_current, 1),
                                contract.SIG_CYCLE_EXEC_TIME: min(40950, self.stats.last_exec_us // 10 * 10)}
        if self.counter is not None:
            core[self.counter.signal] = n % self.counter.modulo
        frames: list[tuple[str, dict[str, Any]]] = [
            (contract.MSG_SOC_CORE, core),
            (contract.MSG_CYCLE_DIAG, {contract.SIG_DIAG_CYCLE_COUNTER: n % 2**32,
                                       contract.SIG_DIAG_START_LATENCY: min(65535, self.stats.last_latency_us),
                                       contract.SIG_DIAG_EXEC_TIME: min(65535, self.stats.last_exec_us)}),
        ]
        for layout, values, default in ((self.cells, cells, 0.0), (self.temperatures, temps, 25.0)):
            if layout is None:
                continue
            groups = layout.groups()
            mux, members = groups[n % len(groups)]
            sig: dict[str, float] = {} if layout.multiplexer is None or mux is None else {layout.multiplexer: mux}
            for index, name in members:
                sig[name] = values[index] if index < len(values) and index < layout.count else default
            frames.append((layout.message, sig))
        status = self.update_status()
        key = tuple(status.get(k, 0) for k in (contract.SIG_UPDATE_STATE, contract.SIG_UPDATE_REASON))
        slow = n % self.slow_every == 0
        if slow or key != self._last_status:
            frames.append((contract.MSG_UPDATE_STATUS, status))
            self._last_status = key
        limits = self.charge_limits()
        limits_key = tuple(sorted(limits.items()))
        if slow or limits_key != self._last_limits:
            # Also at once when a limit changes: a charger must learn of "stop charging" within a cycle.
            frames.append((contract.MSG_CHARGE_LIMITS, limits))
            self._last_limits = limits_key
        if slow:
            if contract.MSG_BALANCING in self.extra_messages:
                delta = max(cells) - min(cells) if cells else 0.0
                mask = sum(1 << i for i, v in enumerate(cells) if v - min(cells) > 0.01) if cells else 0
                frames.append((contract.MSG_BALANCING, {contract.SIG_BALANCING_MASK: mask,
                                                        contract.SIG_BALANCING_MODE: 1 if mask else 0,
                                                        contract.SIG_MAX_CELL_DELTA: round(delta, 3)}))
        if self.mute():
            return
        encoded: list[tuple[int, bool, bytes]] = []
        for name, signals in frames:
            msg = self.db.get_message_by_name(self.names.dbc_message(name))
            encoded.append((msg.frame_id, msg.is_extended_frame, encode_frame(msg, self.names.to_dbc_signals(name, signals))))
        # Handed to the CAN controller at the end of the cycle, stamped with that time (wall clock, as
        # python-can timestamps); the controller adds the bus time (hil/sim/board.py `_can_tx`).
        posted = clock.wall(clock.now())
        if self.trace is not None:
            deadline, start = self._release
            self.trace.append(Release(n, clock.wall(deadline), clock.wall(start), posted))
        for frame_id, extended, data in encoded:
            self.transmit(can.Message(timestamp=posted, arbitration_id=frame_id, data=data, is_extended_id=extended,
                                      is_fd=len(data) > 8))


def encode_frame(spec: Any, signals: dict[str, Any]) -> bytes:
    """A DBC message with these (DBC-named) signal values; signals the board does not compute are sent at their
    raw zero (clamped into the DBC range), values outside a signal's range are clamped into it, as firmware
    saturates before it packs a frame."""
    values: dict[str, Any] = {}
    for sig in spec.signals:
        value = signals.get(sig.name, sig.offset)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high = sig.minimum, sig.maximum
            if low is not None and value < low:
                value = low
            if high is not None and value > high:
                value = high
        values[sig.name] = value
    return bytes(spec.encode(values, strict=False))
