"""The DUT profile: the default profile is today's contract, a bad profile is named precisely, and a
profile with other numbers changes what goes on the wire (seen in raw CAN frames)."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import can
import pytest
import yaml

from hil.bench import contract
from hil.bench.bench import Bench
from hil.bench.config import load_bench
from hil.bench.contract import ActivationMode, Did, Reason, Routine, UpdateState
from hil.dut.dut import Dut
from hil.errors import BenchConfigError
from hil.bench.dut_profile import DutProfile, ProfileError, compute_key, load_profile

from bench_ports import private_bench_data

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "benches/profiles/default.yaml"
VENDOR_B = ROOT / "benches/profiles/vendor-b.yaml"
FBL = ROOT / "benches/profiles/fbl.yaml"


def test_default_profile_file_is_the_contract():
    """benches/profiles/default.yaml and hil/bench/contract.py agree entry by entry (adding an id means both)."""
    loaded = load_profile(DEFAULT)
    assert loaded.model_dump(exclude={"can"}) == DutProfile().model_dump(exclude={"can"})
    assert loaded.can.messages == DutProfile().can.messages
    assert loaded.can.dbc == ROOT / "benches/dbc/bms.dbc"
    from hil.images.families import FAMILIES, shared_dids

    default_family = FAMILIES[loaded.update.family]
    roles = (*shared_dids(tuple(d.name for d in Did)), *default_family.dids)
    assert loaded.dids == {d.name: int(d) for d in Did if d.name in roles}
    assert loaded.routines == {r.name: int(r) for r in Routine if r.name in default_family.routines}
    assert loaded.encode(UpdateState.SUCCESS) == int(UpdateState.SUCCESS)


def test_vendor_b_differs_wherever_a_profile_can():
    a, b = load_profile(DEFAULT), load_profile(VENDOR_B)
    assert not set(a.dids.values()) & set(b.dids.values())
    assert not set(a.routines.values()) & set(b.routines.values())
    for table in a.encodings:
        assert a.encodings[table] != b.encodings[table], table
    assert (a.uds.phys_request_id, a.uds.phys_response_id) != (b.uds.phys_request_id, b.uds.phys_response_id)
    assert a.security.programming_level != b.security.programming_level
    assert a.security.algorithm != b.security.algorithm
    assert all(a.can.messages[m] != b.can.messages[m] for m in a.can.messages)
    assert b.console.patterns == {}


def test_encode_decode_round_trip_and_unknown_value():
    p = load_profile(VENDOR_B)
    for member in UpdateState:
        assert p.decode(UpdateState, p.encode(member)) is member
    rec = contract.UpdateStatusRecord(UpdateState.ROLLED_BACK, Reason.SELFTEST_FAILED, 0, (1, 1, 0))
    at = _offset(p, "state")  # vendor B's record starts with the target version
    assert at == 3 and p.encode_status(rec)[at:at + 2] == bytes([0x1F, 0x81])
    assert p.decode_status(p.encode_status(rec)) == rec
    with pytest.raises(ProfileError, match=r"board value 0x03 has no meaning in encodings.update_state"):
        p.decode(UpdateState, 3)


def _offset(p: DutProfile, field: str) -> int:
    """Where `field` starts in the profile's update status record."""
    from hil.bench.dut_profile import FIELD_BYTES

    order = p.records.update_status
    return sum(FIELD_BYTES[f] for f in order[:order.index(field)])


def test_record_layouts_follow_the_profile():
    """Status and history records in vendor B's layout: other field order, a 2-byte little-endian boot count, its codes."""
    p = load_profile(VENDOR_B)
    entries = [contract.UpdateHistoryEntry((1, 0, 0), (1, 1, 0), UpdateState.ROLLED_BACK, Reason.SELFTEST_FAILED, 0x1234)]
    data = p.encode_history(entries)
    assert data == bytes([1, 0x1F, 0x81, 1, 0, 0, 1, 1, 0, 0x34, 0x12])
    assert p.decode_history(data) == entries
    assert DutProfile().decode_history(DutProfile().encode_history(entries)) == entries
    with pytest.raises(ValueError, match=r"update history must be 1 \+ count x 10 bytes \(profile vendor-b\)"):
        p.decode_history(DutProfile().encode_history(entries))


def test_vendor_seed_key_by_dotted_path():
    key = compute_key("hil.bench.seedkeys:aes_cmac", bytes(16), b"\x01" * 8, 0x11, 8)
    assert len(key) == 8 and key != compute_key("hil.bench.seedkeys:aes_cmac", bytes(16), b"\x02" * 8, 0x11, 8)
    with pytest.raises(ProfileError, match="cannot be loaded"):
        compute_key("hil.nothing_here:fn", b"", b"", 1)


# ---------------------------------------------------------------------- config errors
def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    p = tmp_path / "profile.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(("data", "message"), [
    ({"update": {"family": "autosar"}}, r"profile.yaml: update.family: got 'autosar' - .*unknown update family 'autosar'; "
                                        r"accepted: mcuboot, flash_bootloader"),
    ({"update": {"family": "flash_bootloader"}}, r"dids: roles without an identifier: FINGERPRINT \(update family "
                                                 r"flash_bootloader uses them\)"),
    ({"update": {"family": "flash_bootloader", "blocks": [{"name": "a", "address": 0x1000, "size": 0x2000},
                                                          {"name": "b", "address": 0x2000, "size": 0x100}]}},
     r"update.blocks: .*block b at 0x2000 overlaps"),
    ({"update": {"address_length_format": 0x30}}, r"update.address_length_format: got 48 - .*both nibbles"),
    ({"dids": {"SOFTWARE_VERSON": 0xF189}}, r"profile.yaml: dids.SOFTWARE_VERSON: got 0xF189 - unknown role; accepted: .*SOFTWARE_VERSION"),
    ({"uds": {"phys_request_id": 0x7E0, "pading": 0}}, r"profile.yaml: uds.pading: unknown key; accepted here: .*padding"),
    ({"encodings": {"update_state": {"DONE": 8}}}, r"encodings.update_state.DONE: got 0x08 - unknown name; accepted: IDLE"),
    ({"encodings": {"reset_cause": {"POWER_ON": 0, "SOFTWARE": 1, "WATCHDOG": 2, "FAULT": 3, "BROWN_OUT": 0}}},
     r"encodings.reset_cause: .* - board values 0x00 are used for more than one name"),
    ({"security": {"algorithm": "rot13"}}, r"security.algorithm: got 'rot13' - .*accepted: hmac-sha256, xor or module:function"),
    ({"security": {"programming_level": 2}}, r"security.programming_level: got 0x02 - .*odd"),
    ({"restore": {"method": "jtag"}}, r"restore.method: got 'jtag' - .*'uds_restore', 'pyocd' or 'command'"),
    ({"restore": {"method": "command"}}, r"restore: .*method command needs command"),
    ({"console": {"lines": {"swap_progress": "BL: copy {sector} of {total}"}}},
     r"console: .*pattern swap_progress .* does not match the line 'BL: copy 3 of 32'"),
    ({"console": {"lines": {"reset": "BOOT: cause={why}"}}}, r"console.lines: .*reset: unknown field\(s\) why .*accepted: cause"),
    ({"console": {"patterns": {"power_up": "BOOT: reset"}, "lines": {"reset": "BOOT: reset cause={cause}"}}},
     r"pattern power_up 'BOOT: reset' also matches a software reset"),
    ({"console": {"patterns": {"revert": "BOOT: (revert"}}}, r"console.patterns.revert: got 'BOOT: \(revert' - not a regular expression"),
    ({"soc_core": {"cells": 0}}, r"soc_core.cells: got 0"),
    ({"records": {"update_status": ["state", "state", "progress", "target_version"]}},
     r"records.update_status: .*must list each of state, reason, progress, target_version exactly once"),
    ({"records": {"boot_count_bytes": 3}}, r"records.boot_count_bytes: .*must be 2 or 4, got 3"),
    ({"vehicle_state": {"period_ms": 500, "timeout_ms": 400}}, r"vehicle_state: .*timeout_ms 400 must exceed period_ms 500"),
    ({"security": {"delay_s": -1}}, r"security.delay_s: got -1"),
    ({"routines": {"ERASE_MEMORY": 0xFF00, "CHECK_PROGRAMMING_DEPENDENCIES": 0xFF00, "ACTIVATE_UPDATE": 0x0301,
                   "APPLY_PROFILE": 0xFF02}},
     r"routines\.\w+: got 0xFF00 - \w+ has the same identifier"),
])
def test_bad_profile_names_file_field_value_and_accepted(tmp_path, data, message):
    with pytest.raises(ProfileError, match=message):
        load_profile(_write(tmp_path, data))


def test_profile_naming_a_message_missing_from_the_dbc(tmp_path):
    bench = private_bench_data("benches/sim.yaml", tmp_path)
    profile = _write(tmp_path, {"can": {"dbc": str(ROOT / "benches/dbc/bms.dbc"),
                                        "messages": {contract.MSG_SOC_CORE: "BMS_SocCoreX"}}})
    bench["dut"]["profile"] = str(profile)
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    with pytest.raises(BenchConfigError, match=r"can.messages.BMS_SocCore: got 'BMS_SocCoreX' - not in .*accepted: .*BMS_SocCore"):
        load_bench(tmp_path / "bench.yaml")


def test_missing_profile_file_is_named(tmp_path):
    bench = private_bench_data("benches/sim.yaml", tmp_path)
    bench["dut"]["profile"] = "profiles/nope.yaml"
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    with pytest.raises(BenchConfigError, match=r"nope.yaml: DUT profile not found"):
        load_bench(tmp_path / "bench.yaml")


# ---------------------------------------------------------------------- on the wire
def _inproc_bench(tmp_path: Path, profile: Path) -> Path:
    """The in-process virtual bench, with `profile` and without explicit levels (the profile's apply)."""
    data = private_bench_data("benches/sim-inproc.yaml", tmp_path, prefix="profile")
    data["dut"]["profile"] = str(profile)
    data["can"].pop("dbc", None)  # the profile's DBC
    for key in ("security", "bench_security"):
        data["dut"][key].pop("level", None)
        data["dut"][key].pop("algorithm", None)
    data["can"]["pacing"] = False
    data["sim"]["flash_timing"] = "fast"
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.integration
@pytest.mark.parametrize("profile_file", [DEFAULT, VENDOR_B, FBL], ids=["default", "vendor-b", "fbl"])
def test_profile_numbers_are_what_goes_on_the_wire(tmp_path, profile_file):
    """Raw CAN frames show the profile's ids, DIDs, routine ids, padding and state codes - nothing else."""
    cfg = load_bench(_inproc_bench(tmp_path, profile_file))
    p = cfg.profile
    frames: list[can.Message] = []
    with Bench.open(cfg, evidence_dir=tmp_path) as bench:
        spy = can.Bus(interface="virtual", channel=bench.cfg.can.channel)  # sees both directions
        notifier = can.Notifier(spy, [frames.append], timeout=0.05)
        try:
            dut = Dut(bench.uds, bench.can, bench.cfg.dut)
            assert dut.version() == "1.0.0"
            status = dut.status()
            assert status.state in (UpdateState.IDLE, UpdateState.SUCCESS)
            bench.flasher.unlock()
            struct.unpack(">III", bench.uds.read_did(Did.FLASH_LAYOUT))
            bench.flasher.erase()  # the update family's erase step, with its option record where it has one
            dut.wait_running(5.0)
            time.sleep(0.3)  # a few SOC cycles on the spy bus
        finally:
            notifier.stop()
            spy.shutdown()
    req, resp = p.uds.phys_request_id, p.uds.phys_response_id
    requests = [bytes(f.data) for f in frames if f.arbitration_id == req]
    responses = [bytes(f.data) for f in frames if f.arbitration_id == resp]
    did = p.did(Did.SOFTWARE_VERSION).to_bytes(2, "big")
    assert bytes([0x03, 0x22]) + did in [r[:4] for r in requests], "ReadDataByIdentifier with the profile's DID"
    assert any(r[0] == 0x06 and r[1:4] == b"\x62" + did for r in responses) or any(
        r[2:5] == b"\x62" + did for r in responses), "the response echoes the profile's DID"
    assert all(len(r) == 8 and r.endswith(bytes([p.uds.padding])) for r in requests if r[0] < 0x07)
    erase = p.routine(Routine.ERASE_MEMORY).to_bytes(2, "big")
    assert any(r[1:5] == b"\x31\x01" + erase or (r[0] >> 4 == 1 and r[2:6] == b"\x31\x01" + erase) for r in requests), \
        "RoutineControl with the profile's routine id (single or first frame)"
    unlock = [r for r in requests if r[1] == 0x27]
    assert unlock and unlock[0][2] == p.security.programming_level
    session = [r for r in requests if r[1] == 0x10]
    assert bytes([0x02, 0x10, p.sessions.programming]) in [r[:3] for r in session]
    status_did = p.did(Did.UPDATE_STATUS).to_bytes(2, "big")
    first = next(i for i, r in enumerate(responses) if r[2:5] == b"\x62" + status_did)  # a first frame: 9 bytes
    record = responses[first][5:8] + next(r for r in responses[first + 1:] if r[0] == 0x21)[1:]
    assert record[_offset(p, "state")] == p.encode(status.state), "state code from the profile's table, where its layout puts it"
    import cantools

    db = cantools.database.load_file(str(p.can.dbc))
    soc_id = db.get_message_by_name(p.can.dbc_message(contract.MSG_SOC_CORE)).frame_id
    assert any(f.arbitration_id == soc_id for f in frames), f"SOC frames on the profile's DBC id 0x{soc_id:X}"
    for other in {DEFAULT, VENDOR_B, FBL} - {profile_file}:
        others = load_profile(other)
        assert not [f for f in frames if f.arbitration_id in (others.uds.phys_request_id, others.uds.phys_response_id)]
    if profile_file == VENDOR_B:
        assert p.encode(ActivationMode.RESTORE) == 0x5A


# ---------------------------------------------------------------------- no identifier outside the profile
def test_no_board_identifier_is_a_literal_outside_the_profile():
    """DIDs, routine ids, UDS and DBC CAN ids appear as numbers only in hil/bench/contract.py (the default
    profile's values) and hil/bench/dut_profile.py; everything else asks the profile."""
    import io
    import tokenize

    import cantools

    ids: set[int] = set()
    for p, dbc in ((DutProfile(), ROOT / "benches/dbc/bms.dbc"), (load_profile(FBL), ROOT / "benches/dbc/fbl.dbc")):
        db = cantools.database.load_file(str(dbc))
        ids |= (set(p.dids.values()) | set(p.routines.values()) | {m.frame_id for m in db.messages}
                | {p.uds.phys_request_id, p.uds.phys_response_id, p.uds.functional_request_id}
                | {b.address for b in p.update.blocks})
    found = []
    for path in sorted((ROOT / "hil").rglob("*.py")):
        if path.name in ("contract.py", "profile.py"):
            continue
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if tok.type == tokenize.NUMBER and tok.string.lower().startswith("0x") and int(tok.string, 16) in ids:
                found.append(f"{path.relative_to(ROOT)}:{tok.start[0]}: {tok.string}")
    assert not found, "board identifiers written as literals (ask the DUT profile instead):\n" + "\n".join(found)


# ---------------------------------------------------------------------- no default-board literal in the suite
#: Where the default board must not be named: the cases and the framework parts that judge any board.
BOARD_BLIND = ("testcases", "hil/timing", "hil/faults", "hil/plugin")


def _default_board_literals() -> tuple[dict[str, str], set[str]]:
    """What only the default board says, as regular expressions searched in the whole text (code, comments,
    docstrings) -> what it is; and plain words that count only as a whole string literal (or a word inside one)."""
    import re

    import cantools

    from hil.config_packages.recipes import load_package_recipes

    p = DutProfile()
    db = cantools.database.load_file(str(ROOT / "benches/dbc/bms.dbc"))
    ids = set(p.dids.values()) | set(p.routines.values()) | {m.frame_id for m in db.messages} | {
        p.uds.phys_request_id, p.uds.phys_response_id, p.uds.functional_request_id or 0}
    text: dict[str, str] = {}
    words: set[str] = set()
    for ident in sorted(ids):
        text[rf"\b0x0*{ident:X}\b"] = f"identifier 0x{ident:X}"
        if ident > 0xFFF and re.search("[A-F]", f"{ident:X}"):
            text[rf"\b{ident:X}\b"] = f"DID/routine {ident:X}"
    names = {m.name for m in db.messages} | {s.name for m in db.messages for s in m.signals}
    framework = set(vars(contract))  # a framework meaning of the same name (BootMode) is not the DBC's
    for name in names:
        distinctive = ("_" in name or re.search(r"[a-z][A-Z]", name) or re.search(r"\d$", name)) and name not in framework
        if distinctive:
            text[rf"\b{re.escape(name)}\b"] = f"DBC name {name}"
        else:
            words.add(name)
    packages = ROOT / "firmware_images/packages"
    for recipe in load_package_recipes(packages).values():
        text[rf"\b{re.escape(recipe.name)}\b"] = f"package {recipe.name}"
        words.add(recipe.vehicle_group)
    words |= set(contract.CONFIG_PACKAGE_GROUPS)
    text[r"\b(?:100|1000)\s?ms\b"] = "a default period"
    text[r"\bevery 10th\b"] = "a default period"
    text[r"\b10 ?Hz\b"] = "a default period"
    return text, words


def default_board_literals_in(paths: list[Path]) -> list[str]:
    """Every place in `paths` that writes a default-board literal (see `_default_board_literals`)."""
    import ast
    import io
    import re
    import tokenize

    text, words = _default_board_literals()
    found = []
    for path in paths:
        source = path.read_text()
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for n, line in enumerate(source.splitlines(), start=1):
            for pattern, what in text.items():
                if re.search(pattern, line):
                    found.append(f"{rel}:{n}: {what}: {line.strip()}")
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.STRING:
                continue
            try:
                value = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):
                value = tok.string  # an f-string: its text
            if not isinstance(value, str):
                continue
            hit = next((w for w in sorted(words) if value == w or (w.islower() and re.search(rf"\b{w}\b", value))), None)
            if hit is not None:
                found.append(f"{rel}:{tok.start[0]}: default-board name {hit!r} in a string: {tok.string[:60]}")
    return found


def test_no_default_board_literal_in_cases_timing_faults_or_plugin():
    """DIDs, CAN ids, message and signal names of the default DBC, vehicle groups, package names and default
    periods are named only by the profile, the bench file and the contract: the cases and the framework that
    judges a board read them through fixtures (dut_profile, bench_config, config_packages)."""
    paths = sorted(p for d in BOARD_BLIND for p in (ROOT / d).rglob("*.py"))
    assert len(paths) > 20
    found = default_board_literals_in(paths)
    assert not found, "default-board literals (read them from the DUT profile or the bench file):\n" + "\n".join(found)


def test_the_literal_rule_catches_each_kind(tmp_path):
    bad = tmp_path / "case.py"
    bad.write_text('"""Reads DID 0xFD01 and BMS_SocCore every 100 ms."""\n'
                   'x = frame.signals["SOC"]\n'
                   'dut.provision_vehicle_group("north")\n'
                   'apply("winter-north")\n'
                   'y = s["MaxChargeCurrent"]\n')
    found = "\n".join(default_board_literals_in([bad]))
    for what in ("identifier 0xFD01", "DBC name BMS_SocCore", "a default period", "'SOC'", "'north'", "package winter-north",
                 "DBC name MaxChargeCurrent"):
        assert what in found, (what, found)
    ok = tmp_path / "ok.py"
    ok.write_text('"""The SOC core keeps its state; Reason.NONE."""\nx = frame.signals[contract.SIG_SOC]\n')
    assert default_board_literals_in([ok]) == []


def test_a_virtual_board_whose_lines_its_patterns_miss_does_not_start(tmp_path):
    """Patterns of a board of one's own, but no `console.lines`: the virtual board would print the default
    board's lines and every console wait would time out - refused at start, naming the pattern and the line."""
    from hil.sim.bench import VirtualBench

    profile = _write(tmp_path, {"console": {"patterns": {"swap_start": "BL> swap begin"}}})
    cfg = load_bench(_inproc_bench(tmp_path, profile))
    with pytest.raises(BenchConfigError, match=r"pattern swap_start 'BL> swap begin' does not match the line "
                                                r"'BOOT: swap start type=TEST sectors=32'"):
        VirtualBench(cfg).start()
