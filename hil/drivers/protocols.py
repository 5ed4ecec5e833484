"""The interfaces tests ask for. Drivers implement them; tests never name a concrete driver.

A real Keysight, a Rigol, an R&S HMP or the virtual bench's emulator all satisfy `PowerSupply`,
so swapping hardware changes a bench file, not a test (labgrid's resource/driver/protocol split).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ContextManager, Mapping, Protocol, runtime_checkable

from hil.bench import contract


@runtime_checkable
class PowerSupply(Protocol):
    """The DUT's programmable supply: setpoints, measurement and power faults.

    Every setting is checked against the bench's safety limits before it is sent and read
    back afterwards; violations raise `LimitViolation` / `ReadbackMismatch`.
    """

    def identity(self) -> str:
        """`*IDN?` of the instrument."""
        ...

    def set_voltage(self, volts: float) -> None:
        """Voltage setpoint of the DUT channel."""
        ...

    def set_current_limit(self, amps: float) -> None:
        """Current limit of the DUT channel."""
        ...

    def output(self, on: bool) -> None:
        """Output on or off."""
        ...

    def is_on(self) -> bool:
        """Output state as the instrument reports it."""
        ...

    def measure_voltage(self) -> float:
        """Measured output voltage, V."""
        ...

    def measure_current(self) -> float:
        """Measured output current, A."""
        ...

    def power_on(self) -> None:
        """Nominal voltage and current limit, output on."""
        ...

    def power_off(self) -> None:
        """Output off."""
        ...

    def power_cycle(self, off_s: float) -> None:
        """Off for `off_s`, then on again."""
        ...

    def dropout(self, duration_s: float) -> None:
        """Power cut: off for `duration_s`, then on again."""
        ...

    def dip(self, volts: float, duration_s: float) -> None:
        """Brown-out: lower the setpoint to `volts` for `duration_s`, then restore it."""
        ...

    def safe_state(self) -> None:
        """Output off, nominal settings restored."""
        ...

    def start_log(self, path: Path | None) -> None:
        """Log every command and answer to `path` from now on (None: stop logging to a file)."""
        ...

    def close(self) -> None:
        """Release the instrument."""
        ...


@runtime_checkable
class BatteryEmulator(Protocol):
    """The pack the BMS measures: pack current, temperatures, cell voltages."""

    def identity(self) -> str:
        """`*IDN?` of the instrument."""
        ...

    def set_pack_current(self, amps: float) -> None:
        """Pack current, A: positive charging, negative discharging."""
        ...

    def set_temperature(self, celsius: float, channel: int | None = None) -> None:
        """One sensor's temperature (1-based), or all of them when `channel` is None."""
        ...

    def set_cell_voltage(self, volts: float, cell: int | None = None) -> None:
        """One cell's voltage (1-based), or all of them when `cell` is None."""
        ...

    def safe_state(self) -> None:
        """Back to the reset state: no current, 25 degC, nominal cells."""
        ...

    def close(self) -> None:
        """Release the instrument."""
        ...


@runtime_checkable
class ConsoleProtocol(Protocol):
    """The DUT's debug console: a growing text buffer searched with a moving cursor."""

    #: The DUT profile's console patterns by name (regular expressions).
    patterns: Mapping[str, str]

    @property
    def text(self) -> str:
        """Everything received so far."""
        ...

    def expect(self, pattern: str | re.Pattern[str], timeout: float, since: int | None = None) -> re.Match[str]:
        """Wait for `pattern` after the cursor (or after `since`); the cursor moves past the match."""
        ...

    def mark(self) -> int:
        """Move the cursor to the end of what has arrived; return that offset into `text`."""
        ...

    def lines(self) -> list[str]:
        """The received text as lines."""
        ...

    def close(self) -> None:
        """Stop reading and release the port."""
        ...


@runtime_checkable
class UdsLink(Protocol):
    """What the Flasher and `Dut` need from a UDS client (`hil.drivers.uds.UdsClient`)."""

    def session(self, n: int) -> None:
        """DiagnosticSessionControl."""
        ...

    def unlock(self, security: Any) -> None:
        """SecurityAccess at `security.level` with `security.compute_key`."""
        ...

    def read_did(self, did: int) -> bytes:
        """ReadDataByIdentifier: the record bytes."""
        ...

    def read_str(self, did: int) -> str:
        """A text DID."""
        ...

    def write_did(self, did: int, data: bytes) -> None:
        """WriteDataByIdentifier."""
        ...

    def routine(self, rid: int, data: bytes = b"") -> bytes:
        """RoutineControl startRoutine: the status record."""
        ...

    def request_download(self, address: int, size: int) -> int:
        """RequestDownload: maxNumberOfBlockLength."""
        ...

    def transfer_data(self, counter: int, data: bytes) -> None:
        """TransferData of one block."""
        ...

    def request_transfer_exit(self) -> None:
        """RequestTransferExit."""
        ...

    def ecu_reset(self, hard: bool = True) -> None:
        """ECUReset."""
        ...

    def update_status(self) -> contract.UpdateStatusRecord:
        """The update status record."""
        ...

    def boot_info(self) -> contract.BootInfo:
        """Boot mode, slot, confirmation, reset cause."""
        ...

    def software_version(self) -> str:
        """The running software version."""
        ...

    def read_dtcs(self, status_mask: int = 0xFF) -> list[tuple[int, int]]:
        """ReadDTCInformation reportDTCByStatusMask: (DTC, status) pairs."""
        ...

    def clear_dtcs(self, group: int = 0xFFFFFF) -> None:
        """ClearDiagnosticInformation."""
        ...


@runtime_checkable
class CanLink(Protocol):
    """What the Flasher and `Dut` need from a CAN channel (`hil.drivers.can.CanChannel`)."""

    def wait_for(self, message: str, signals: dict[str, Any] | None = None, predicate: Any = None,
                 timeout: float = 2.0, since: float | None = None) -> Any:
        """The newest matching frame received at/after `since`; HilTimeout naming what was seen."""
        ...

    def recorder(self, message: str) -> ContextManager[list[Any]]:
        """Collect every frame of `message` until the block exits."""
        ...
