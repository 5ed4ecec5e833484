"""What the board's firmware services (the UDS application, configuration packages) need of the board.

`hil.sim.board.Board` implements it; `DiagServer` and `config_packages` depend on this protocol, not on
the board module, so the board owns them without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from hil.bench import contract
from hil.bench.contract import Reason, ResetCause, UpdateState

if TYPE_CHECKING:  # type-only: these modules do not import this one back
    from hil.bench.config import FlashLayout, SimConfig
    from hil.bench.dut_profile import DutProfile
    from hil.images.container import BootImage
    from hil.images.mcuboot import TrustedKey
    from hil.images.payload import FirmwareDescriptor
    from hil.sim.bootloader import Bootloader
    from hil.sim.defects import Defects
    from hil.sim.soc import CpuStall


@dataclass
class PackSource:
    """Callables the board reads its analog front end through (the battery emulator's model)."""

    pack_current: Callable[[], float]
    temperatures: Callable[[], list[float]]
    cell_voltages: Callable[[], list[float]]


class EcuContext(Protocol):
    """The board as its firmware services see it: NV store, update record, security state, power."""

    sim: "SimConfig"
    layout: "FlashLayout"
    profile: "DutProfile"
    defects: "Defects"
    bootloader: "Bootloader"
    trusted: "list[TrustedKey]"
    battery: PackSource
    hardware_number: str
    serial_number: str
    reset_cause: ResetCause
    running_image: "BootImage | None"
    descriptor: "FirmwareDescriptor | None"
    sa_attempts: int
    sa_lockout_until: float
    charge_inhibit: bool
    cpu_stall: "CpuStall"

    @property
    def sa_delay_s(self) -> float: ...

    def log(self, line: str) -> None: ...
    def nv_get(self, key: str, default: Any = None) -> Any: ...
    def nv_update(self, **changes: Any) -> None: ...
    def update_state(self) -> UpdateState: ...
    def set_update(self, state: UpdateState, reason: Reason, target: tuple[int, int, int] | None = None) -> None: ...
    def begin_attempt(self) -> None: ...
    def update_record(self, progress: int, *, from_ram: bool = False) -> contract.UpdateStatusRecord: ...
    def history_record(self) -> bytes: ...
    def dtcs(self) -> dict[int, int]: ...
    def clear_dtcs(self) -> None: ...
    def supply_voltage(self) -> float: ...
    def security_level(self, level: int) -> tuple[str, bytes] | None: ...
    def request_reset_after_response(self) -> None: ...
    def erase_secondary(self) -> None: ...
    def flash_erase(self, erase: Callable[[], None]) -> None: ...
    def vehicle_group(self) -> str: ...
    def vin(self) -> str: ...
    def vehicle_window(self) -> tuple[bool, bool, str]: ...
    def known_config_keys(self) -> set[str]: ...
    def pause(self, seconds: float) -> None: ...
