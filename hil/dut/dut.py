"""The device under test as tests see it: one API whatever is behind it (real board or virtual bench)."""

from __future__ import annotations

import json
import struct
import time
from typing import Any

from hil.bench import contract
from hil.bench.config import DutConfig
from hil.bench.contract import Did
from hil.drivers.protocols import CanLink, UdsLink
from hil.errors import HilError, HilTimeout


class Dut:
    """Identity, update status and configuration of the DUT, read through UDS; liveness through CAN."""

    def __init__(self, uds: UdsLink, can: CanLink, cfg: DutConfig) -> None:
        self.uds = uds
        self.can = can
        self.cfg = cfg

    def version(self) -> str:
        """F189: the running software version ("RECOVERY" in recovery mode)."""
        return self.uds.software_version()

    def supplier_version(self) -> str:
        """F195: version + build of the running software."""
        return self.uds.read_str(Did.SUPPLIER_SW_VERSION)

    def rxswin(self) -> str:
        return self.uds.read_str(Did.RXSWIN)

    def status(self) -> contract.UpdateStatusRecord:
        """DID FD01: update state, reason code, progress, target version."""
        return self.uds.update_status()

    def boot_info(self) -> contract.BootInfo:
        return self.uds.boot_info()

    def backup_version(self) -> str:
        """FD05: the image kept in the secondary slot as the backup."""
        return self.uds.read_str(Did.BACKUP_IMAGE)

    def image_hash(self) -> bytes:
        """FD07: SHA-256 of the running (primary slot) image as the DUT's flash holds it."""
        return self.uds.read_did(Did.ACTIVE_IMAGE_HASH)

    def backup_image_hash(self) -> bytes:
        """FD08: SHA-256 of the backup (secondary slot) image; 32 zero bytes if there is none."""
        return self.uds.read_did(Did.BACKUP_IMAGE_HASH)

    def security_counter(self) -> int:
        return struct.unpack(">I", self.uds.read_did(Did.SECURITY_COUNTER))[0]

    def boot_count(self) -> int:
        return struct.unpack(">I", self.uds.read_did(Did.BOOT_COUNTER))[0]

    def config(self) -> dict[str, Any]:
        """FD20: the configuration store (protection limits, calibration)."""
        return json.loads(self.uds.read_did(Did.CONFIGURATION).decode())

    def config_version(self) -> tuple[int, int]:
        """FD03: configuration schema and CRC32 of the record."""
        schema, crc = struct.unpack(">HI", self.uds.read_did(Did.CONFIG_VERSION))
        return schema, crc

    def write_config(self, config: dict[str, Any]) -> None:
        """Write the configuration unsigned: the development restore path (extended session, bench level 0x61).

        In the field configuration arrives as a signed package (`profiles` fixture); boards refuse this
        write at every other level."""
        self._bench_write(Did.CONFIGURATION, json.dumps(config, sort_keys=True, separators=(",", ":")).encode())

    def _bench_write(self, did: Did, data: bytes) -> None:
        if self.cfg.bench_security is None:
            raise ValueError(f"{did.name} is written at the bench level only; the bench file has no dut.bench_security")
        self.uds.session(contract.SESSION_EXTENDED)
        self.uds.unlock(self.cfg.bench_security)
        try:
            self.uds.write_did(did, data)
        finally:
            self.uds.session(contract.SESSION_DEFAULT)

    def update_history(self) -> list[contract.UpdateHistoryEntry]:
        """FD09: the update attempts the board remembers (from/to version, result, reason, boot counter), oldest first;
        decoded with the DUT profile's record layout and encodings."""
        from hil.bench.dut_profile import DutProfile

        profile = getattr(self.uds, "profile", None) or DutProfile()
        return list(profile.decode_history(self.uds.read_did(Did.UPDATE_HISTORY)))

    def dtcs(self, status_mask: int = 0xFF) -> dict[int, int]:
        """ReadDTCInformation 0x19 0x02: DTC number -> status byte."""
        return dict(self.uds.read_dtcs(status_mask))

    def clear_dtcs(self) -> None:
        """ClearDiagnosticInformation 0x14 FFFFFF (the history stays)."""
        self.uds.clear_dtcs()

    def profile_status(self) -> dict[str, Any]:
        """FD0B: active profile (name, version, vehicle group, schema) and the last apply result (state, reason)."""
        return json.loads(self.uds.read_did(Did.PROFILE_STATUS).decode())

    def vehicle_group(self) -> str:
        """FD0C: the vehicle group the board is provisioned for."""
        return self.uds.read_str(Did.VEHICLE_GROUP)

    def provision_vehicle_group(self, group: str) -> None:
        """Write FD0C (end-of-line provisioning: bench level 0x61)."""
        self._bench_write(Did.VEHICLE_GROUP, group.encode("ascii"))

    def vin(self) -> str:
        """F190: the vehicle identification number the board is provisioned with (17 zeros before that)."""
        return self.uds.read_str(Did.VIN)

    def provision_vin(self, vin: str) -> None:
        """Write F190 (end-of-line provisioning when the board goes into a vehicle: bench level 0x61)."""
        if not contract.is_vin(vin):
            raise ValueError(f"VIN {vin!r} is not 17 characters of {contract.VIN_ALPHABET} (ISO 3779)")
        self._bench_write(Did.VIN, vin.encode("ascii"))

    def wait_running(self, timeout: float) -> Any:
        """Wait for the SOC core's frame: the application is up."""
        return self.can.wait_for(contract.MSG_SOC_CORE, timeout=timeout)

    def wait_up(self, timeout: float | None = None) -> float:
        """Seconds until the DUT answers UDS again (after a reset or power cycle); HilTimeout otherwise."""
        return wait_dut_up(self, timeout if timeout is not None else self.cfg.boot_timeout_s)

    def reset(self, timeout: float | None = None) -> float:
        """ECUReset, then wait until the DUT answers UDS and its SOC core runs; returns the seconds it took."""
        start = time.monotonic()
        limit = timeout if timeout is not None else self.cfg.boot_timeout_s
        before = self.boot_count()
        self.uds.ecu_reset()
        # The response comes before the reset: up means answering with a higher boot counter.
        last = ""
        while time.monotonic() - start < limit:
            try:
                if self.boot_count() > before:
                    break
            except HilError as exc:
                last = str(exc).splitlines()[0]
            time.sleep(0.1)
        else:
            raise HilTimeout(f"DUT did not come back from ECUReset within {limit:.1f} s", last)
        self.wait_running(max(0.1, limit - (time.monotonic() - start)))
        return time.monotonic() - start

    def identity(self) -> dict[str, str]:
        """Hardware, serial and software identity for the run record."""
        return {"hardware": self.uds.read_str(Did.HARDWARE_NUMBER), "serial": self.uds.read_str(Did.SERIAL_NUMBER),
                "software": self.version(), "supplier_software": self.supplier_version()}


def wait_dut_up(dut: Dut, timeout: float) -> float:
    """Seconds until the DUT answers UDS (after a reset or power cycle); HilTimeout with the last error otherwise.

    The one owner of waiting for the DUT (`Dut.wait_up`, the verdict checks, the restore strategies)."""
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < timeout:
        try:
            dut.boot_info()
            return time.monotonic() - start
        except HilError as exc:
            last = str(exc).splitlines()[0]
            time.sleep(0.2)
    raise HilTimeout(f"DUT did not answer within {timeout:.1f} s", last)
