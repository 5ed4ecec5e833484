"""The DUT profile: the default profile is today's contract, a bad profile is named precisely, and a
profile with other numbers changes what goes on the wire (seen in raw CAN frames)."""

from __future__ import annotations

import struct
import time
import uuid
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

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "benches/profiles/default.yaml"
VENDOR_B = ROOT / "benches/profiles/vendor-b.yaml"


def test_default_profile_file_is_the_contract():
    """benches/profiles/default.yaml and hil/bench/contract.py agree entry by entry (adding an id means both)."""
    loaded = load_profile(DEFAULT)
    assert loaded.model_dump(exclude={"can"}) == DutProfile().model_dump(exclude={"can"})
    assert loaded.can.messages == DutProfile().can.messages
    assert loaded.can.dbc == ROOT / "benches/dbc/bms.dbc"
    assert loaded.dids == {d.name: int(d) for d in Did}
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
    assert p.encode_status(rec)[:2] == bytes([0x1F, 0x81])
    assert p.decode_status(p.encode_status(rec)) == rec
    with pytest.raises(ProfileError, match=r"board value 3 has no meaning in encodings.update_state"):
        p.decode(UpdateState, 3)


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
    ({"dids": {"SOFTWARE_VERSON": 0xF189}}, r"profile.yaml: dids: .*unknown role 'SOFTWARE_VERSON'; accepted: .*SOFTWARE_VERSION"),
    ({"uds": {"phys_request_id": 0x7E0, "pading": 0}}, r"profile.yaml: uds.pading: unknown key; accepted here: .*padding"),
    ({"encodings": {"update_state": {"DONE": 8}}}, r"encodings: .*update_state.DONE: unknown name; accepted: IDLE"),
    ({"encodings": {"reason": {"NONE": 0, "UNSIGNED": 0}}}, r"encodings: .*board values \[0\] are used for more than one name"),
    ({"security": {"algorithm": "rot13"}}, r"security.algorithm: got 'rot13' - .*accepted: hmac-sha256, xor or module:function"),
    ({"security": {"programming_level": 2}}, r"security.programming_level: got 2 - .*odd"),
    ({"restore": {"method": "jtag"}}, r"restore.method: got 'jtag' - .*'uds_restore', 'pyocd' or 'command'"),
    ({"restore": {"method": "command"}}, r"restore: .*method command needs command"),
    ({"routines": {"ERASE_MEMORY": 0xFF00, "CHECK_PROGRAMMING_DEPENDENCIES": 0xFF00, "ACTIVATE_UPDATE": 0x0301,
                   "APPLY_PROFILE": 0xFF02}},
     r"routines: .*share the identifier 0xFF00"),
])
def test_bad_profile_names_file_field_value_and_accepted(tmp_path, data, message):
    with pytest.raises(ProfileError, match=message):
        load_profile(_write(tmp_path, data))


def test_profile_naming_a_message_missing_from_the_dbc(tmp_path):
    bench = yaml.safe_load((ROOT / "benches/sim.yaml").read_text())
    profile = _write(tmp_path, {"can": {"dbc": str(ROOT / "benches/dbc/bms.dbc"),
                                        "messages": {contract.MSG_SOC_CORE: "BMS_SocCoreX"}}})
    bench["dut"]["profile"] = str(profile)
    bench["sim"]["flash_file"] = str(tmp_path / "f.flash")
    bench["sim"]["trusted_keys"] = [str(ROOT / "firmware_images/keys/dev-ecdsa-p256.pem")]
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    with pytest.raises(BenchConfigError, match=r"can.messages.BMS_SocCore: got 'BMS_SocCoreX' - not in .*accepted: .*BMS_SocCore"):
        load_bench(tmp_path / "bench.yaml")


def test_missing_profile_file_is_named(tmp_path):
    bench = yaml.safe_load((ROOT / "benches/sim.yaml").read_text())
    bench["dut"]["profile"] = "profiles/nope.yaml"
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    with pytest.raises(BenchConfigError, match=r"nope.yaml: DUT profile not found"):
        load_bench(tmp_path / "bench.yaml")


# ---------------------------------------------------------------------- on the wire
def _inproc_bench(tmp_path: Path, profile: Path) -> Path:
    """The in-process virtual bench, with `profile` and without explicit levels (the profile's apply)."""
    data = yaml.safe_load((ROOT / "benches/sim-inproc.yaml").read_text())
    data["bench"] = f"profile-{uuid.uuid4().hex[:8]}"  # its own lock: runs beside a suite on sim-inproc
    data["dut"]["profile"] = str(profile)
    for key in ("security", "bench_security"):
        data["dut"][key].pop("level", None)
        data["dut"][key].pop("algorithm", None)
    data["can"]["channel"] = f"profile-{uuid.uuid4().hex[:8]}"
    data["can"]["pacing"] = False
    data["sim"]["flash_file"] = str(tmp_path / "bench.flash")
    data["sim"]["flash_timing"] = "fast"
    data["sim"]["trusted_keys"] = [str((ROOT / "benches" / k).resolve()) for k in data["sim"]["trusted_keys"]]
    data["images"] = {"recipes": str(ROOT / "firmware_images/recipes"), "build_dir": str(ROOT / "firmware_images/build"),
                      "keys_dir": str(ROOT / "firmware_images/keys"), "packages": str(ROOT / "firmware_images/packages")}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("profile_file", [DEFAULT, VENDOR_B], ids=["default", "vendor-b"])
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
            bench.uds.routine(Routine.ERASE_MEMORY)
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
    assert any(r[1:5] == b"\x31\x01" + erase for r in requests), "RoutineControl with the profile's routine id"
    unlock = [r for r in requests if r[1] == 0x27]
    assert unlock and unlock[0][2] == p.security.programming_level
    session = [r for r in requests if r[1] == 0x10]
    assert bytes([0x02, 0x10, p.sessions.programming]) in [r[:3] for r in session]
    status_did = p.did(Did.UPDATE_STATUS).to_bytes(2, "big")
    status_rec = [r for r in responses if r[2:5] == b"\x62" + status_did]
    assert status_rec and status_rec[0][5] == p.encode(status.state), "state code from the profile's table"
    import cantools

    db = cantools.database.load_file(str(p.can.dbc))
    soc_id = db.get_message_by_name(p.can.dbc_message(contract.MSG_SOC_CORE)).frame_id
    assert any(f.arbitration_id == soc_id for f in frames), f"SOC frames on the profile's DBC id 0x{soc_id:X}"
    others = load_profile(VENDOR_B if profile_file == DEFAULT else DEFAULT)
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

    p = DutProfile()
    db = cantools.database.load_file(str(ROOT / "benches/dbc/bms.dbc"))
    ids = (set(p.dids.values()) | set(p.routines.values()) | {m.frame_id for m in db.messages}
           | {p.uds.phys_request_id, p.uds.phys_response_id, p.uds.functional_request_id})
    found = []
    for path in sorted((ROOT / "hil").rglob("*.py")):
        if path.name in ("contract.py", "profile.py"):
            continue
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if tok.type == tokenize.NUMBER and tok.string.lower().startswith("0x") and int(tok.string, 16) in ids:
                found.append(f"{path.relative_to(ROOT)}:{tok.start[0]}: {tok.string}")
    assert not found, "board identifiers written as literals (ask the DUT profile instead):\n" + "\n".join(found)
