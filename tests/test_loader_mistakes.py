"""Every mistake a porter made that the loader used to accept silently is caught at load, and its message
names the file, the field, the value (identifiers in hex) and what is accepted (issue 19).

Each test writes a bench file and a DUT profile into a temporary folder - never a shipped bench - so the
file named in the message is that folder's.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from hil.bench.config import SIM_COPY_CHUNK, FlashLayout, load_bench
from hil.bench.dut_profile import DutProfile, compute_key, load_profile
from hil.errors import BenchConfigError

ROOT = Path(__file__).resolve().parents[1]
BASE_BENCH = yaml.safe_load((ROOT / "benches/sim-inproc.yaml").read_text())
BASE_PROFILE = yaml.safe_load((ROOT / "benches/profiles/default.yaml").read_text())


def _bench(tmp_path: Path, profile: dict[str, Any] | None = None, **changes: Any) -> Path:
    """A bench file (and its profile) in `tmp_path/board/`; `changes`: top-level sections replaced or merged."""
    folder = tmp_path / "board"
    folder.mkdir(exist_ok=True)
    data = copy.deepcopy(BASE_BENCH)
    data["sim"]["flash_file"] = str(tmp_path / "board.flash")
    data["sim"]["trusted_keys"] = [str(ROOT / "firmware_images/keys/dev-ecdsa-p256.pem")]
    data["images"] = {"recipes": str(ROOT / "firmware_images/recipes"), "keys_dir": str(tmp_path / "keys"),
                      "build_dir": str(tmp_path / "build"), "packages": str(ROOT / "firmware_images/packages")}
    if profile is not None:
        prof = copy.deepcopy(BASE_PROFILE)
        prof["can"]["dbc"] = str(ROOT / "benches/dbc/bms.dbc")
        for key, value in profile.items():
            if isinstance(value, dict) and isinstance(prof.get(key), dict):
                prof[key] = {**prof[key], **value}
            else:
                prof[key] = value
        (folder / "board-profile.yaml").write_text(yaml.safe_dump(prof))
        data["dut"]["profile"] = "board-profile.yaml"
        for key in ("security", "bench_security"):
            data["dut"][key].pop("level", None)
            data["dut"][key].pop("algorithm", None)
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _message(path: Path) -> str:
    with pytest.raises(BenchConfigError) as exc:
        load_bench(path)
    return str(exc.value)


# ------------------------------------------------------------------------------ DUT profile mistakes
def test_a_typo_in_a_can_messages_key_is_named(tmp_path):
    messages = dict(BASE_PROFILE["can"]["messages"])
    messages["BMS_SocCor"] = messages.pop("BMS_SocCore")
    msg = _message(_bench(tmp_path, {"can": {"messages": messages}}))
    assert re.search(r"board-profile\.yaml: can\.messages\.BMS_SocCor: got 'BMS_SocCore' - not a framework message "
                     r"name .*; accepted: BMS_SocCore, BMS_CycleDiag", msg), msg


def test_a_partial_encodings_table_is_refused_naming_the_missing_names(tmp_path):
    """Refused, not merged: the default's bytes for the missing names may mean something else on this board."""
    msg = _message(_bench(tmp_path, {"encodings": {"update_state": {"IDLE": 0x10, "SUCCESS": 0x17}}}))
    assert re.search(r"board-profile\.yaml: encodings\.update_state: got \{\.\.\.\} - no board value for DOWNLOADING, "
                     r"DOWNLOADED, .*RECOVERY .*; accepted: IDLE, DOWNLOADING", msg), msg


def test_tables_left_out_are_the_default_boards():
    profile = DutProfile.model_validate({"encodings": {"boot_mode": {"APPLICATION": 0x05, "RECOVERY": 0x06}}})
    assert profile.encodings["boot_mode"] == {"APPLICATION": 0x05, "RECOVERY": 0x06}
    assert profile.encodings["update_state"] == DutProfile().encodings["update_state"]


def test_an_unknown_console_pattern_name_is_named(tmp_path):
    msg = _message(_bench(tmp_path, {"console": {"patterns": {"selftest_pased": "APP: self-test passed"}}}))
    assert re.search(r"board-profile\.yaml: console\.patterns\.selftest_pased: got 'APP: self-test passed' - no case "
                     r"waits for a console line of this name; accepted: swap_start, .*selftest_passed", msg), msg


def test_an_invalid_regular_expression_is_named(tmp_path):
    msg = _message(_bench(tmp_path, {"console": {"patterns": {"swap_start": "BOOT: swap (start"}}}))
    assert re.search(r"board-profile\.yaml: console\.patterns\.swap_start: got 'BOOT: swap \(start' - not a regular "
                     r"expression \(missing \), unterminated subpattern at position 11\); accepted: a Python regular "
                     r"expression", msg), msg


def test_a_swap_progress_pattern_without_its_groups_is_named(tmp_path):
    msg = _message(_bench(tmp_path, {"console": {"patterns": {"swap_progress": r"BOOT: swap sector \d+/\d+"}}}))
    assert re.search(r"console\.patterns\.swap_progress: got .* - lacks the named group\(s\) sector, total; "
                     r"accepted: a pattern with \(\?P<sector>\.\.\.\), \(\?P<total>\.\.\.\)", msg), msg


@pytest.mark.parametrize(("uds", "expected"), [
    ({"phys_request_id": 0x20000000, "extended_ids": True},
     r"uds\.phys_request_id: got 0x20000000 - must be at most 0x1FFFFFFF"),
    ({"phys_request_id": 0x18DA10F1}, r"uds\.phys_request_id: got 0x18DA10F1 - does not fit 11 bits; "
                                      r"accepted: 0x000-0x7FF, or extended_ids: true"),
    ({"phys_response_id": 0x7E0}, r"uds\.phys_response_id: got 0x7E0 - equals phys_request_id"),
], ids=["above_29_bits", "29_bit_id_without_extended_ids", "response_equals_request"])
def test_identifiers_are_shown_in_hex(tmp_path, uds, expected):
    msg = _message(_bench(tmp_path, {"uds": uds}))
    assert re.search(r"board-profile\.yaml: " + expected, msg), msg
    assert not re.search(r"got \d{3,}", msg), f"an identifier in decimal: {msg}"


def test_a_did_out_of_range_is_shown_in_hex(tmp_path):
    dids = dict(BASE_PROFILE["dids"], SOFTWARE_VERSION=0x1F189)
    msg = _message(_bench(tmp_path, {"dids": dids}))
    assert re.search(r"board-profile\.yaml: dids\.SOFTWARE_VERSION: got 0x1F189 - identifier does not fit 16 bits; "
                     r"accepted: 0x0000-0xFFFF", msg), msg


def test_a_bench_tx_id_out_of_range_is_shown_in_hex(tmp_path):
    path = _bench(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["dut"]["tx_id"] = 0x3FFFFFFF
    path.write_text(yaml.safe_dump(data))
    msg = _message(path)
    assert re.search(r"bench\.yaml: dut\.tx_id: got 0x3FFFFFFF - must be at most 0x1FFFFFFF", msg), msg


# ------------------------------------------------------------------------------ flash layout
def test_flash_layout_limits_are_checked_at_load(tmp_path):
    """Found at load, not when the virtual board refuses to start ("trailer needs 3920 bytes for 80 image sectors")."""
    msg = _message(_bench(tmp_path, flash_layout={"sector_size": 2048, "slot_sectors": 80, "write_align": 16}))
    assert re.search(r"bench\.yaml: flash_layout\.slot_sectors: got 80 - the slot trailer needs 3920 bytes for 80 "
                     r"image sectors .* a trailer sector has 2048; accepted: at most 41 image sectors", msg), msg


def test_the_trailer_size_is_the_virtual_boards():
    """The loader's formula and the simulator's trailer layout agree (one promise, two readers)."""
    from hil.sim.bootloader import Bootloader, TrailerLayout

    for layout in (FlashLayout(), FlashLayout(sector_size=2048, slot_sectors=37, write_align=16),
                   FlashLayout(sector_size=1024, slot_sectors=40, write_align=4)):
        assert TrailerLayout(layout).end == layout.trailer_bytes
    import inspect

    assert inspect.signature(Bootloader).parameters["chunk"].default == SIM_COPY_CHUNK


def test_a_sector_the_virtual_board_cannot_copy_is_named(tmp_path):
    msg = _message(_bench(tmp_path, flash_layout={"sector_size": 512, "slot_sectors": 16}))
    assert re.search(r"bench\.yaml: flash_layout\.sector_size: got 512 - the virtual board copies sectors 1024 bytes "
                     r"at a time; accepted: a multiple of 1024", msg), msg


# ------------------------------------------------------------------------------ paths and keys
def test_relative_paths_resolve_against_the_bench_file_not_the_working_directory(tmp_path, monkeypatch):
    path = _bench(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["images"]["prebuild"] = {"key": "keys/board-release.pem", "key_type": "ed25519"}
    data["images"]["catalogue"] = {"baseline": "images/1.0.0.bin", "update": "recipes/1.1.0.yaml",
                                   "major_update": "2.0.0"}
    path.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)  # anywhere but the bench file's folder
    cfg = load_bench(path)
    assert cfg.images.prebuild is not None
    assert cfg.images.prebuild.key == str(path.parent / "keys/board-release.pem")
    assert cfg.images.catalogue == {"baseline": str(path.parent / "images/1.0.0.bin"),
                                    "update": str(path.parent / "recipes/1.1.0.yaml"), "major_update": "2.0.0"}


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ed25519", "rsa-2048"])
def test_prebuild_makes_the_key_type_the_bench_names(tmp_path, kind):
    """images.prebuild generates the named key type; the images it signs verify on the virtual board."""
    from hil.images.catalogue import prebuild
    from hil.images.keys import key_type
    from hil.images.mcuboot import load_trusted_keys, verify_image

    path = _bench(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["images"]["prebuild"] = {"key": f"keys/release-{kind}.pem", "key_type": kind}
    data["images"]["catalogue"] = {"baseline": "images/1.0.0.bin", "update": "images/1.1.0.bin"}
    data["sim"]["trusted_keys"] = [f"keys/release-{kind}.pem"]
    data["sim"]["initial_image"] = "baseline"
    path.write_text(yaml.safe_dump(data))
    cfg = load_bench(path)
    made = prebuild(cfg)
    key = path.parent / f"keys/release-{kind}.pem"
    assert key_type(key) == kind
    assert sorted(p.name for p in made) == ["1.0.0.bin", "1.1.0.bin"]
    img = verify_image((path.parent / "images/1.1.0.bin").read_bytes(), load_trusted_keys([key]),
                       hardware_id=cfg.dut.hardware_number)
    assert img.version_str == "1.1.0"


def test_a_prebuild_key_of_another_type_is_named(tmp_path):
    from hil.images.keys import ensure_key
    from hil.errors import ImageBuildError

    key = ensure_key(str(tmp_path / "release.pem"), tmp_path, "ed25519")
    with pytest.raises(ImageBuildError, match=r"release\.pem is ed25519, the bench asks for ecdsa-p256 "
                                              r"\(images\.prebuild\.key_type\)"):
        ensure_key(str(key), tmp_path, "ecdsa-p256")


# ------------------------------------------------------------------------------ seed-to-key
SEED_KEY_MODULE = '''
import hashlib


def key(secret: bytes, seed: bytes, level: int) -> bytes:
    return hashlib.sha256(secret + seed + bytes([level])).digest()
'''


def test_a_seed_key_module_beside_the_bench_file_is_imported_at_load(tmp_path):
    name = f"board_seedkey_{uuid.uuid4().hex[:8]}"
    path = _bench(tmp_path, {"security": {"algorithm": f"{name}:key"}})
    (path.parent / f"{name}.py").write_text(SEED_KEY_MODULE)
    assert name not in sys.modules
    cfg = load_bench(path)
    assert name in sys.modules
    assert cfg.dut.security.algorithm == f"{name}:key"
    key = compute_key(cfg.dut.security.algorithm, b"\x01" * 16, b"\x02" * 4, 1, 4)  # later look-ups find it by name
    assert len(key) == 4


def test_a_console_script_finds_a_seed_key_module_beside_the_bench_file_without_pythonpath(tmp_path):
    """`hil doctor` is a console script: it loads the bench the same way, in a fresh interpreter."""
    name = f"board_seedkey_{uuid.uuid4().hex[:8]}"
    path = _bench(tmp_path, {"security": {"algorithm": f"{name}:key"}})
    (path.parent / f"{name}.py").write_text(SEED_KEY_MODULE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import sys; from hil.bench.config import load_bench; from hil.bench.dut_profile import compute_key; "
            f"cfg = load_bench({str(path)!r}); "
            "print(compute_key(cfg.dut.security.algorithm, bytes(16), bytes(4), 1, 4).hex())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip()) == 8


@pytest.mark.parametrize(("algorithm", "what"), [
    ("board_seedkye:key", r"no module named 'board_seedkye' on the Python path or in .*board"),
    ("board_seedkey_attr:kee", r"has no attribute 'kee'"),
], ids=["module_typo", "function_typo"])
def test_a_typo_in_the_seed_key_name_fails_at_load_naming_it(tmp_path, algorithm, what):
    path = _bench(tmp_path, {"security": {"algorithm": algorithm}})
    (path.parent / "board_seedkey_attr.py").write_text(SEED_KEY_MODULE)
    sys.modules.pop("board_seedkey_attr", None)
    msg = _message(path)
    assert re.search(r"board-profile\.yaml: security\.algorithm: got '" + re.escape(algorithm) + r"' - .*" + what
                     + r".*; accepted: hmac-sha256, xor or module:function\(secret, seed, level\), importable from "
                       r"the Python path or from .*board", msg), msg
    sys.modules.pop("board_seedkey_attr", None)


def test_a_seed_key_typo_in_the_bench_file_names_the_bench_field(tmp_path):
    path = _bench(tmp_path, {"security": {"algorithm": "hmac-sha256"}})
    data = yaml.safe_load(path.read_text())
    data["dut"]["security"]["algorithm"] = "nowhere_module:key"
    path.write_text(yaml.safe_dump(data))
    msg = _message(path)
    assert re.search(r"bench\.yaml: dut\.security\.algorithm: got 'nowhere_module:key' - .*no module named "
                     r"'nowhere_module'.*; accepted: hmac-sha256", msg), msg


def test_the_shipped_profiles_and_benches_still_load():
    for bench in sorted((ROOT / "benches").glob("*.yaml")):
        load_bench(bench)
    for profile in sorted((ROOT / "benches/profiles").glob("*.yaml")):
        load_profile(profile)
