"""Configuration packages: container, signature, recipes, the board's checks, and `hil profiles`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hil.bench.contract import Reason
from hil.errors import ImageBuildError, ImageError
from hil.images.keys import ensure_dev_keys
from hil.images.mcuboot import load_trusted_keys
from hil.config_packages.package import HEADER, build_package, parse_package, verify_package
from hil.config_packages.recipes import load_package_recipe, load_package_recipes
from hil.sim.config_packages import HARDWARE_LIMITS, Refused, check_config, check_values

from bench_ports import private_bench_file

ROOT = Path(__file__).resolve().parents[1]
KEYS = ROOT / "firmware_images/keys"


@pytest.fixture(scope="module")
def keys() -> dict[str, Path]:
    return ensure_dev_keys(KEYS)


def _package(keys, key="dev-ecdsa-p256", **over) -> bytes:
    fields = {"name": "winter-north", "vehicle_group": "north", "hardware": "BMS-HW-A2", "schema": 1, "version": 2,
              "values": {"cold_charge_A": 20}}
    fields.update(over)
    return build_package(**fields, key_path=keys[key] if key else None)


@pytest.mark.parametrize("key", ["dev-ecdsa-p256", "dev-ed25519"])
def test_signed_package_verifies_with_either_key_type(keys, key):
    trusted = load_trusted_keys([keys["dev-ecdsa-p256"], keys["dev-ed25519"]])
    pkg = verify_package(_package(keys, key), trusted)
    assert (pkg.name, pkg.vehicle_group, pkg.version, pkg.values) == ("winter-north", "north", 2, {"cold_charge_A": 20})


@pytest.mark.parametrize("mangle, reason", [
    (lambda d: d[:10], Reason.BAD_MAGIC),  # too short for a header
    (lambda d: b"XXXXXXXX" + d[8:], Reason.BAD_MAGIC),
    (lambda d: d[:-20], Reason.TRUNCATED),
    (lambda d: d[:HEADER.size + 3] + bytes([d[HEADER.size + 3] ^ 1]) + d[HEADER.size + 4:], Reason.HASH_MISMATCH),
])
def test_malformed_or_corrupted_package_names_its_reason(keys, mangle, reason):
    trusted = load_trusted_keys([keys["dev-ecdsa-p256"]])
    with pytest.raises(ImageError) as err:
        verify_package(mangle(_package(keys)), trusted)
    assert err.value.reason == reason, str(err.value)


def test_unsigned_and_untrusted_packages_are_refused(keys):
    trusted = load_trusted_keys([keys["dev-ecdsa-p256"]])
    with pytest.raises(ImageError) as unsigned:
        verify_package(_package(keys, key=None), trusted)
    assert unsigned.value.reason == Reason.UNSIGNED
    with pytest.raises(ImageError) as unknown:
        verify_package(_package(keys, key="untrusted-ecdsa-p256"), trusted)
    assert unknown.value.reason == Reason.UNKNOWN_KEY
    # parse alone trusts nothing but still reads the fields
    assert parse_package(_package(keys, key=None)).vehicle_group == "north"


def test_every_shipped_recipe_loads():
    recipes = load_package_recipes(ROOT / "firmware_images/packages")
    assert {"winter-north", "summer-north", "winter-south", "summer-south"} <= set(recipes)
    for season in ("north", "south"):
        assert recipes[f"summer-{season}"].version > recipes[f"winter-{season}"].version


def test_bad_recipe_names_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vehicle_group: north\nversion: 0\nvalues: {}\ncolour: red\n")
    with pytest.raises(ImageBuildError) as err:
        load_package_recipe(bad)
    text = str(err.value)
    assert "bad.yaml" in text and "version" in text and "colour" in text and "values" in text


def test_board_range_checks_follow_the_hardware_limits():
    check_values({"cell_ov_mV": 4200, "cold_charge_A": 20}, set(HARDWARE_LIMITS))
    for values in ({"cell_ov_mV": 5000}, {"cold_charge_A": -1}, {"max_charge_A": "lots"}, {"unknown_key": 1},
                   {"profile_version": 99}):
        with pytest.raises(Refused) as err:
            check_values(values, set(HARDWARE_LIMITS) | {"profile_version"})
        assert err.value.reason == Reason.VALUE_OUT_OF_RANGE
    with pytest.raises(Refused):
        check_config({"max_charge_A": 20, "cold_charge_A": 30, "cell_uv_mV": 2800, "cell_ov_mV": 4200})


def test_hil_profiles_build_info_verify(tmp_path, keys):
    bench = private_bench_file("benches/sim.yaml", tmp_path)
    run = [sys.executable, "-m", "hil", "packages"]
    out = tmp_path / "ws.prf"
    r = subprocess.run(run + ["sign", "--bench", str(bench), "-k", "dev-ed25519",
                              str(ROOT / "firmware_images/packages/winter-south.yaml"), str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(run + ["verify", "--bench", str(bench), str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "winter-south v2" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(run + ["verify", "--bench", str(bench), "--vehicle-group", "north", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "PROFILE_WRONG_GROUP" in r.stderr
    r = subprocess.run(run + ["info", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "ED25519" in r.stdout, r.stdout + r.stderr


class _FakeEcu:
    """Just what hil.sim.profiles needs from a board: NV, identity, trust, a clock that can be cut."""

    def __init__(self, trusted, cut_at_write: int | None = None) -> None:
        from hil.sim.board import DEFAULT_CONFIG

        from hil.sim.defects import Defects

        self.trusted = trusted
        self.defects = Defects()
        self.hardware_number = "BMS-HW-A2"
        self.nv: dict = {"config": dict(DEFAULT_CONFIG[1]), "config_schema": 1, "vehicle_group": "north"}
        self.lines: list[str] = []
        self._writes = 0
        self._cut_at = cut_at_write

    def nv_get(self, key, default=None):
        import copy
        return copy.deepcopy(self.nv.get(key, default))

    def nv_update(self, **changes):
        from hil.sim.errors import PowerLoss
        self._writes += 1
        if self._cut_at is not None and self._writes == self._cut_at:
            raise PowerLoss("cut")  # the journaled record is not written: the old state stays
        self.nv.update(changes)

    def vehicle_group(self) -> str:
        return self.nv["vehicle_group"]

    def known_config_keys(self) -> set[str]:
        return set(self.nv["config"])

    def pause(self, seconds: float) -> None:
        pass

    def log(self, line: str) -> None:
        self.lines.append(line)


def test_board_applies_a_good_package_and_refuses_a_replay(keys):
    from hil.bench.contract import ProfileState
    from hil.sim.config_packages import apply_package

    ecu = _FakeEcu(load_trusted_keys([keys["dev-ecdsa-p256"]]))
    package = _package(keys)
    assert apply_package(ecu, package) == (ProfileState.APPLIED, Reason.NONE)
    assert ecu.nv["config"]["cold_charge_A"] == 20 and ecu.nv["config"]["profile_version"] == 2
    config = dict(ecu.nv["config"])
    assert apply_package(ecu, package) == (ProfileState.REFUSED, Reason.PROFILE_DOWNGRADE)
    assert ecu.nv["config"] == config


@pytest.mark.parametrize("cut_at_write, outcome", [(1, "old"), (2, "old"), (3, "new")])
def test_power_cut_during_apply_resolves_to_old_or_new(keys, cut_at_write, outcome):
    from hil.bench.contract import ProfileState
    from hil.sim.errors import PowerLoss
    from hil.sim.config_packages import apply_package, resolve_after_boot

    ecu = _FakeEcu(load_trusted_keys([keys["dev-ecdsa-p256"]]), cut_at_write=cut_at_write)
    old = dict(ecu.nv["config"])
    with pytest.raises(PowerLoss):
        apply_package(ecu, _package(keys))
    ecu._cut_at = None
    resolve_after_boot(ecu)
    config = ecu.nv["config"]
    state = ecu.nv.get("profile_status", {}).get("state", ProfileState.NONE)
    if outcome == "old":
        assert config == old and state != ProfileState.APPLYING
    else:
        assert config["profile"] == "winter-north" and state == ProfileState.APPLIED
