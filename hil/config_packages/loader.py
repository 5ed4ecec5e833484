"""Tester side of configuration packages: download into the board's package buffer, apply, read the result.

The sequence (bench contract section 11): programming session, SecurityAccess 0x01, RequestDownload
to `PROFILE_DOWNLOAD_ADDRESS`, TransferData, RequestTransferExit, RoutineControl FF02. The board
answers FF02 with `<ProfileState> <Reason>`; a refusal is a positive response with state REFUSED.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hil.bench import contract
from hil.bench.config import BenchConfig
from hil.bench.contract import ProfileState, Reason, Routine


@dataclass(frozen=True)
class PackageResult:
    """What routine FF02 answered."""

    state: ProfileState
    reason: Reason

    @property
    def applied(self) -> bool:
        return self.state is ProfileState.APPLIED

    def __str__(self) -> str:
        return f"{self.state.name}/{self.reason.name}"


def download_and_apply(uds: Any, security: Any, package: bytes) -> PackageResult:
    """Download `package` and run the apply routine; returns the board's verdict (UdsError on an NRC)."""
    uds.session(contract.SESSION_PROGRAMMING)
    uds.unlock(security)
    block_len = uds.request_download(contract.PROFILE_DOWNLOAD_ADDRESS, len(package))
    per_block = block_len - 2
    counter = 1
    for offset in range(0, len(package), per_block):
        uds.transfer_data(counter, package[offset:offset + per_block])
        counter = (counter + 1) & 0xFF
    uds.request_transfer_exit()
    status = uds.routine(Routine.APPLY_PROFILE)
    if len(status) < 2:
        raise ValueError(f"routine FF02 status record must be 2 bytes (state, reason), got {status.hex()}")
    result = PackageResult(ProfileState(status[0]), Reason(status[1]))
    uds.session(contract.SESSION_DEFAULT)
    return result


class ConfigPackageStore:
    """Configuration packages by recipe name (built and signed with the bench's keys), and applying them."""

    def __init__(self, cfg: BenchConfig, uds: Any) -> None:
        self.cfg = cfg
        self.uds = uds
        self._cache: dict[str, bytes] = {}

    def __getitem__(self, name: str) -> bytes:
        if name not in self._cache:
            from hil.config_packages.recipes import load_package

            self._cache[name] = load_package(name, self.cfg)
        return self._cache[name]

    def values(self, name: str) -> dict[str, Any]:
        """The values recipe `name` sets."""
        return dict(self.recipe(name).values)

    def recipe(self, name: str) -> Any:
        """The recipe `name` (hil.config_packages.recipes.PackageRecipe) in the bench's package folder."""
        from hil.config_packages.recipes import find_package_recipe

        return find_package_recipe(name, self.cfg.images.packages)

    # ------------------------------------------------------------------ the bench's fleet (config_packages:)
    @property
    def groups(self) -> list[str]:
        """The vehicle groups the bench file names (`config_packages.groups`), in its order."""
        return list(self.cfg.config_packages.groups)

    def sequence(self, group: str) -> list[str]:
        """The packages of vehicle group `group` in the order they apply (each newer than the one before);
        ValueError naming the groups there are, or a recipe that targets another group."""
        groups = self.cfg.config_packages.groups
        if group not in groups:
            raise ValueError(f"vehicle group {group!r} has no packages in the bench file's config_packages.groups; "
                             f"it has: {', '.join(groups)}")
        for name in groups[group]:
            target = self.recipe(name).vehicle_group
            if target != group:
                raise ValueError(f"config_packages.groups.{group}: recipe {name} targets vehicle group {target!r}")
        return list(groups[group])

    def role(self, role: str) -> str | None:
        """The recipe the bench names for a package role (`config_packages.roles`), None when it names none."""
        return self.cfg.config_packages.roles.get(role)

    def target_group(self, name: str) -> str:
        """The vehicle group recipe `name` is made for."""
        return str(self.recipe(name).vehicle_group)

    def reset_profile_version(self, dut: Any) -> None:
        """Development restore path (bench level): no active profile version, so any package version is newer."""
        config = dut.config()
        if int(config.get("profile_version", 0)) != 0:
            dut.write_config({**config, "profile": "default", "profile_version": 0})

    def apply(self, package: str | bytes) -> PackageResult:
        """Apply a package (recipe name or bytes) through the programming security level."""
        data = self[package] if isinstance(package, str) else package
        return download_and_apply(self.uds, self.cfg.dut.security, data)
