"""Battery emulator driver: pack current, cell temperatures and voltages over SCPI.

Same rules as the supply: limits checked before sending, every setting read back and followed
by `SYST:ERR?`, every command logged (see `hil.drivers.psu.ScpiSession`).
Command set: docs/instruments.md.
"""

from __future__ import annotations

import math
from pathlib import Path

from hil import contract
from hil.config import LoadConfig
from hil.drivers.psu import ScpiDriver, check_readback
from hil.errors import InstrumentError, LimitViolation


class ScpiBatteryEmulator(ScpiDriver):
    """The pack the BMS measures (`BatteryEmulator` protocol)."""

    CURRENT_TOLERANCE_A = 0.01
    TEMPERATURE_TOLERANCE_C = 0.05
    CELL_TOLERANCE_V = 0.001

    def __init__(self, cfg: LoadConfig, log_path: Path | None = None, *, n_cells: int = contract.N_CELLS,
                 n_temps: int = contract.N_TEMPS, visa_library: str = "@py") -> None:
        self.cfg = cfg
        self.n_cells = n_cells
        self.n_temps = n_temps
        self._open_session(cfg.resource, cfg.timeout_ms, "battery emulator", log_path, visa_library)

    def _where(self) -> str:
        return f"battery emulator {self.cfg.resource}"

    def _set(self, command: str, readback_query: str, expected: float, what: str, tolerance: float) -> None:
        """Send, check the error queue, read back every value the query returns."""
        with self._session.lock:
            self._session.write(command)
            self._session.check_errors(command)
            values = self._session.query_floats(readback_query)
        for value in values:
            check_readback(f"{self._where()} {what}", expected, value, abs_tol=tolerance)

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
        self._finite("pack current (A)", amps)
        if abs(amps) > self.cfg.max_current:
            raise LimitViolation(f"{self._where()}: requested pack current {amps:g} A exceeds the bench limit "
                                 f"load.max_current = {self.cfg.max_current:g} A (magnitude); nothing was sent")
        self._set(f"CURR {amps:.6g}", "CURR?", amps, "pack current (A)", self.CURRENT_TOLERANCE_A)
        self._session.record("set", "pack_current", amps, "A")

    def set_temperature(self, celsius: float, channel: int | None = None) -> None:
        """One sensor's temperature (1-based), or every sensor when `channel` is None."""
        self._finite("temperature (degC)", celsius)
        if channel is None:
            self._set(f"TEMP:ALL {celsius:.6g}", "TEMP?", celsius, "temperatures (degC)", self.TEMPERATURE_TOLERANCE_C)
        else:
            self._index("temperature channel", channel, self.n_temps)
            self._set(f"TEMP {celsius:.6g},(@{channel})", f"TEMP? (@{channel})", celsius,
                      f"temperature {channel} (degC)", self.TEMPERATURE_TOLERANCE_C)
        self._session.record("set", f"temperature[{channel or 'all'}]", celsius, "degC")

    def set_cell_voltage(self, volts: float, cell: int | None = None) -> None:
        """One cell's voltage (1-based), or every cell when `cell` is None."""
        self._finite("cell voltage (V)", volts)
        if cell is None:
            self._set(f"CELL:VOLT:ALL {volts:.6g}", "CELL:VOLT?", volts, "cell voltages (V)", self.CELL_TOLERANCE_V)
        else:
            self._index("cell", cell, self.n_cells)
            self._set(f"CELL:VOLT {volts:.6g},(@{cell})", f"CELL:VOLT? (@{cell})", volts, f"cell {cell} voltage (V)",
                      self.CELL_TOLERANCE_V)
        self._session.record("set", f"cell_voltage[{cell or 'all'}]", volts, "V")

    def safe_state(self) -> None:
        """`*RST` (0 A, 25 degC, 3.70 V cells), confirmed with `*OPC?`, the error queue and a readback of 0 A."""
        with self._session.lock:
            self._session.write("*RST")
            if self._session.query("*OPC?") != "1":
                raise InstrumentError(f"{self._where()}: *OPC? after *RST did not answer 1")
            self._session.check_errors("*RST")
            current = self._session.query_float("CURR?")
        check_readback(f"{self._where()} pack current after *RST (A)", 0.0, current, abs_tol=self.CURRENT_TOLERANCE_A)
        self._session.record("action", "reset", "*RST")

    # ------------------------------------------------------------------ readings
    def pack_current(self) -> float:
        """Programmed pack current, A."""
        return self._session.query_float("CURR?")

    def temperatures(self) -> list[float]:
        """Programmed sensor temperatures, degC, sensor 1 first."""
        return self._session.query_floats("TEMP?")

    def cell_voltages(self) -> list[float]:
        """Programmed cell voltages, V, cell 1 first."""
        return self._session.query_floats("CELL:VOLT?")
