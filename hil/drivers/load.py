"""Battery emulator driver: pack current, cell temperatures and voltages over SCPI, one dialect per instrument family.

Same rules as the supply: limits checked before sending, every setting read back and followed
by the error queue, every command logged (see `hil.drivers.psu.ScpiSession`). A dialect lists
what its instrument can emulate; asking a dialect for what its instrument lacks fails before
anything is sent, naming the dialect and what it offers. Command sets: docs/instruments.md.
"""

from __future__ import annotations

import math
import types
from pathlib import Path
from typing import Mapping

from hil.bench import contract
from hil.bench.config import LoadConfig
from hil.drivers.psu import ScpiDriver, check_readback
from hil.errors import InstrumentError, LimitViolation

PACK_CURRENT = "pack current"
TEMPERATURE = "temperature"
CELL_VOLTAGE = "cell voltage"
#: A positive (charging) pack current: a source, which a sink-only electronic load is not.
CHARGING = "charging current"


class FunctionNotOffered(LimitViolation):
    """The instrument family cannot do this at all (no cell voltages, no charging): nothing was sent.
    The `load` fixture turns it into NOT COVERED for the case that asked."""


def _num(value: float) -> str:
    return f"{value:.6g}"


class LoadDialect:
    """The virtual bench's own battery emulator (`hil_sim`): every function on one instrument.

    `CURR <A>` (signed: + charging), `TEMP:ALL <degC>` / `TEMP <degC>,(@n)`, `CELL:VOLT:ALL <V>` /
    `CELL:VOLT <V>,(@n)`; queries `CURR?`, `TEMP? [(@n)]`, `CELL:VOLT? [(@n)]`; `*RST` = 0 A, 25 degC, 3.70 V.
    """

    name = "hil_sim"
    functions: frozenset[str] = frozenset({PACK_CURRENT, CHARGING, TEMPERATURE, CELL_VOLTAGE})
    error_query = "SYST:ERR?"

    def set_pack_current(self, amps: float) -> list[str]:
        return [f"CURR {_num(amps)}"]

    def query_pack_current(self) -> str:
        return "CURR?"

    def pack_current_from(self, value: float) -> float:
        """The signed pack current (A, + charging) the readback of `query_pack_current` means."""
        return value

    def set_temperature(self, celsius: float, channel: int | None) -> list[str]:
        return [f"TEMP:ALL {_num(celsius)}" if channel is None else f"TEMP {_num(celsius)},(@{channel})"]

    def query_temperature(self, channel: int | None) -> str:
        return "TEMP?" if channel is None else f"TEMP? (@{channel})"

    def set_cell_voltage(self, volts: float, cell: int | None) -> list[str]:
        return [f"CELL:VOLT:ALL {_num(volts)}" if cell is None else f"CELL:VOLT {_num(volts)},(@{cell})"]

    def query_cell_voltage(self, cell: int | None) -> str:
        return "CELL:VOLT?" if cell is None else f"CELL:VOLT? (@{cell})"

    def reset(self) -> list[str]:
        """Commands to the reset state (no current); confirmed with `*OPC?` and a pack-current readback of 0."""
        return ["*RST"]

    def check_pack_current(self, amps: float) -> None:
        """LimitViolation for a current the instrument family cannot produce (before anything is sent)."""


class KeysightEL30000Dialect(LoadDialect):
    """Keysight EL30000 DC electronic load (EL34143A ...), constant-current mode: it **sinks** only.

    Emulates a discharging pack: pack current -I is `FUNC CURR`, `CURR I`, `INP ON` (0 A: `INP OFF`).
    A charging (positive) current needs a bidirectional source and is refused before anything is sent.
    Cells and temperatures are not this instrument's.
    """

    name = "keysight_el30000"
    functions = frozenset({PACK_CURRENT})

    def check_pack_current(self, amps: float) -> None:
        if amps > 0:
            raise FunctionNotOffered(f"dialect {self.name}: an electronic load only sinks current; a charging pack "
                                     f"current of {amps:g} A needs a bidirectional source; nothing was sent")

    def set_pack_current(self, amps: float) -> list[str]:
        sink = abs(amps)
        return ["FUNC CURR", f"CURR {_num(sink)}", "INP ON" if sink > 0 else "INP OFF"]

    def query_pack_current(self) -> str:
        return "CURR?"

    def pack_current_from(self, value: float) -> float:
        return -value

    def reset(self) -> list[str]:
        return ["INP OFF", "FUNC CURR", "CURR 0"]


#: Dialect per `load.dialect` of a bench file.
DIALECTS: Mapping[str, LoadDialect] = types.MappingProxyType({
    d.name: d for d in (LoadDialect(), KeysightEL30000Dialect())
})


class ScpiBatteryEmulator(ScpiDriver):
    """The pack the BMS measures (`BatteryEmulator` protocol)."""

    CURRENT_TOLERANCE_A = 0.01
    TEMPERATURE_TOLERANCE_C = 0.05
    CELL_TOLERANCE_V = 0.001

    def __init__(self, cfg: LoadConfig, log_path: Path | None = None, *, n_cells: int = contract.N_CELLS,
                 n_temps: int = contract.N_TEMPS, visa_library: str = "@py") -> None:
        self.cfg = cfg
        self.dialect = DIALECTS[cfg.dialect]
        self.n_cells = n_cells
        self.n_temps = n_temps
        self._open_session(cfg.resource, cfg.timeout_ms, "battery emulator", log_path, visa_library)

    def _where(self) -> str:
        return f"battery emulator {self.cfg.resource}"

    def _offers(self, function: str) -> None:
        missing = self.missing(function)
        if missing:
            raise FunctionNotOffered(f"{missing}; nothing was sent")

    def missing(self, *functions: str) -> str:
        """Why this instrument cannot do all of `functions` (PACK_CURRENT, CHARGING, TEMPERATURE, CELL_VOLTAGE);
        empty when it can."""
        lacking = [f for f in functions if f not in self.dialect.functions]
        if not lacking:
            return ""
        return (f"{self._where()}: dialect {self.dialect.name} has no {', '.join(lacking)} "
                f"(it offers: {', '.join(sorted(self.dialect.functions))})")

    def _set(self, commands: list[str], readback_query: str, expected: float, what: str, tolerance: float,
             convert: bool = False) -> None:
        """Send, check the error queue, read back every value the query returns."""
        with self._session.lock:
            for command in commands:
                self._session.write(command)
                self._session.check_errors(command, self.dialect.error_query)
            values = self._session.query_floats(readback_query)
        for value in values:
            shown = self.dialect.pack_current_from(value) if convert else value
            check_readback(f"{self._where()} {what}", expected, shown, abs_tol=tolerance)

    @staticmethod
    def _finite(what: str, value: float) -> None:
        if not math.isfinite(value):
            raise LimitViolation(f"requested {what} {value} is not a finite number; nothing was sent")

    def _index(self, what: str, n: int, count: int) -> None:
        if not 1 <= n <= count:
            raise LimitViolation(f"{self._where()}: {what} {n} is outside 1..{count}; nothing was sent")

    # ------------------------------------------------------------------ settings
    def set_pack_current(self, amps: float) -> None:
        """Pack current, A (positive charging, negative discharging); |amps| <= load.max_current."""
        self._offers(PACK_CURRENT)
        self._finite("pack current (A)", amps)
        if abs(amps) > self.cfg.max_current:
            raise LimitViolation(f"{self._where()}: requested pack current {amps:g} A exceeds the bench limit "
                                 f"load.max_current = {self.cfg.max_current:g} A (magnitude); nothing was sent")
        self.dialect.check_pack_current(amps)
        self._set(self.dialect.set_pack_current(amps), self.dialect.query_pack_current(), amps, "pack current (A)",
                  self.CURRENT_TOLERANCE_A, convert=True)
        self._session.record("set", "pack_current", amps, "A")

    def set_temperature(self, celsius: float, channel: int | None = None) -> None:
        """One sensor's temperature (1-based), or every sensor when `channel` is None."""
        self._offers(TEMPERATURE)
        self._finite("temperature (degC)", celsius)
        if channel is not None:
            self._index("temperature channel", channel, self.n_temps)
        what = "temperatures (degC)" if channel is None else f"temperature {channel} (degC)"
        self._set(self.dialect.set_temperature(celsius, channel), self.dialect.query_temperature(channel), celsius,
                  what, self.TEMPERATURE_TOLERANCE_C)
        self._session.record("set", f"temperature[{channel or 'all'}]", celsius, "degC")

    def set_cell_voltage(self, volts: float, cell: int | None = None) -> None:
        """One cell's voltage (1-based), or every cell when `cell` is None."""
        self._offers(CELL_VOLTAGE)
        self._finite("cell voltage (V)", volts)
        if cell is not None:
            self._index("cell", cell, self.n_cells)
        what = "cell voltages (V)" if cell is None else f"cell {cell} voltage (V)"
        self._set(self.dialect.set_cell_voltage(volts, cell), self.dialect.query_cell_voltage(cell), volts, what,
                  self.CELL_TOLERANCE_V)
        self._session.record("set", f"cell_voltage[{cell or 'all'}]", volts, "V")

    def safe_state(self) -> None:
        """The dialect's reset state, confirmed with `*OPC?`, the error queue and a readback of 0 A."""
        with self._session.lock:
            commands = self.dialect.reset()
            for command in commands:
                self._session.write(command)
                self._session.check_errors(command, self.dialect.error_query)
            if self._session.query("*OPC?") != "1":
                raise InstrumentError(f"{self._where()}: *OPC? after {'; '.join(commands)} did not answer 1")
            current = self.dialect.pack_current_from(self._session.query_float(self.dialect.query_pack_current()))
        check_readback(f"{self._where()} pack current after reset (A)", 0.0, current,
                       abs_tol=self.CURRENT_TOLERANCE_A)
        self._session.record("action", "reset", "; ".join(commands))

    # ------------------------------------------------------------------ readings
    def pack_current(self) -> float:
        """Programmed pack current, A."""
        return self.dialect.pack_current_from(self._session.query_float(self.dialect.query_pack_current()))

    def temperatures(self) -> list[float]:
        """Programmed sensor temperatures, degC, sensor 1 first."""
        self._offers(TEMPERATURE)
        return self._session.query_floats(self.dialect.query_temperature(None))

    def cell_voltages(self) -> list[float]:
        """Programmed cell voltages, V, cell 1 first."""
        self._offers(CELL_VOLTAGE)
        return self._session.query_floats(self.dialect.query_cell_voltage(None))
