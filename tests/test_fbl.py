"""The OEM flash-bootloader family: its image container (bincopy HEX and S-record, signed header, detached
signature), the update-family registry, its programming sequence against the virtual board, the board's own
defects (each caught), and the exhaustive power-cut sweep of its bank switch."""

from __future__ import annotations

import hashlib
import struct
import uuid
from pathlib import Path
from typing import Any

import bincopy
import can
import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from hil.bench.bench import Bench
from hil.bench.config import FlashLayout, load_bench
from hil.bench.contract import Did, Reason, Routine, UpdateState
from hil.bench.dut_profile import DutProfile, ProfileError, load_profile
from hil.dut.dut import Dut
from hil.dut.sequence import ProgrammingSequence
from hil.errors import ImageBuildError, ImageError
from hil.images import fbl
from hil.images.container import ImageContainer, container_for
from hil.images.families import FAMILIES, load
from hil.images.keys import ensure_dev_keys, ensure_key
from hil.images.mcuboot import load_trusted_keys
from hil.images.recipes import find_recipe
from hil.sim.family import BoardParts, board_parts

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "firmware_images" / "recipes"
PROFILE = ROOT / "benches" / "profiles" / "fbl.yaml"
HW = "BMS-HW-A2"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fbl")


@pytest.fixture(autouse=True)
def private_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bench locks of this module's in-process benches in a temporary folder: beside any run of the shipped benches."""
    monkeypatch.setenv("HIL_LOCK_DIR", str(tmp_path / "locks"))


@pytest.fixture(scope="module")
def profile() -> DutProfile:
    return load_profile(PROFILE)


@pytest.fixture(scope="module")
def container(profile: DutProfile) -> fbl.FblContainer:
    return fbl.FblContainer(profile)


@pytest.fixture(scope="module")
def keys(work: Path) -> dict[str, Path]:
    return ensure_dev_keys(work / "keys")


@pytest.fixture(scope="module")
def built(container: fbl.FblContainer, keys: dict[str, Path], work: Path) -> dict[str, Path]:
    """Builds of the recipes the cases below use: HEX (ECDSA P-256 or Ed25519 as the recipe says) and one S-record."""
    out = {n: container.build(find_recipe(n, RECIPES), work / "keys", work / "build", hardware=HW)
           for n in ("1.0.0", "1.1.0", "2.0.0", "1.1.0-wrong-hardware", "1.3.0-seccnt-2", "0.9.0-downgrade",
                     "3.0.0-needs-config-v3", "1.1.0-selftest-fail")}
    out["1.1.0.s19"] = container.build(find_recipe("1.1.0", RECIPES), work / "keys", work / "build", suffix=".s19",
                                       hardware=HW)
    return out


def _board_check(container: fbl.FblContainer, image: bytes, trusted: list[Any], *, hardware: str = HW,
                 counter: int = 0, current: tuple[int, int, int] | None = None, schema: int | None = None) -> Reason:
    """What the board's two check routines say about an image held in memory as downloaded."""
    file_bytes, record = fbl.unbundle(image)
    memory = fbl._Memory(fbl.read_data(file_bytes))
    try:
        img = fbl.check_memory(memory.read, container.header_address, memory.covers, record, trusted)
        fbl.check_dependencies(img, hardware_id=hardware, min_security_counter=counter, current_version=current,
                               config_schema=schema)
    except ImageError as exc:
        return Reason(exc.reason)
    return Reason.NONE


# ---------------------------------------------------------------------- the container
def test_hex_and_srecord_builds_round_trip_through_bincopy(container: fbl.FblContainer, built: dict[str, Path]) -> None:
    hex_image, srec_image = container.load(built["1.1.0"]), container.load(built["1.1.0.s19"])
    assert built["1.1.0"].read_text().startswith(":") and built["1.1.0.s19"].read_text().startswith("S")
    # bincopy reads both files to the same memory, and writes them back byte for byte.
    a, b = bincopy.BinFile(str(built["1.1.0"])), bincopy.BinFile(str(built["1.1.0.s19"]))
    assert [(s.minimum_address, bytes(s.data)) for s in a.segments] == [(s.minimum_address, bytes(s.data)) for s in b.segments]
    assert fbl.write_data(fbl.read_data(built["1.1.0"].read_bytes()), "ihex") == built["1.1.0"].read_bytes()
    assert container.digest(hex_image) == container.digest(srec_image)
    assert fbl.signature_path(built["1.1.0"]).is_file(), "the signature is detached: <file>.sig"
    # Two logical blocks: the application (header first) and the calibration block, at the profile's addresses.
    blocks = container.blocks_of(hex_image)
    assert [(b.name, b.address) for b, _d in blocks] == [(b.name, b.address) for b in container.blocks]
    assert container.size(hex_image) == sum(len(d) for _b, d in blocks)


def test_header_read_by_hand_and_signature_verified_directly(container: fbl.FblContainer, built: dict[str, Path],
                                                             keys: dict[str, Path]) -> None:
    """An independent reading of the format: struct for the header, cryptography for the signature."""
    image = container.load(built["1.1.0"])
    memory = bincopy.BinFile(str(built["1.1.0"]))
    base = container.header_address
    header = bytes(memory[base:base + 256])
    assert header[:4] == b"FBLH"
    major, minor, rev = struct.unpack_from(">BBH", header, 40)
    (counter,) = struct.unpack_from(">I", header, 48)
    assert (major, minor, rev, counter) == (1, 1, 0, 1)
    assert header[54:86].rstrip(b"\x00").decode() == HW
    ranges = [struct.unpack_from(">II", header, 8 + 8 * i) for i in range(header[6])]
    digest = hashlib.sha256(header + b"".join(bytes(memory[a:a + n]) for a, n in ranges)).digest()
    record = fbl.signature_path(built["1.1.0"]).read_bytes()
    assert record[:4] == b"FBS1" and record[40:72] == digest
    key = serialization.load_pem_private_key(keys["dev-ecdsa-p256"].read_bytes(), password=None).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(record[72:], digest, ec.ECDSA(Prehashed(hashes.SHA256())))  # raises if it does not verify
    info = container.read(image)
    assert (info.version_str, info.security_counter, info.hardware_id) == ("1.1.0", 1, HW)


@pytest.mark.parametrize(("mutation", "expected"), [
    (lambda c, i: c.flip_bit(i, "payload"), Reason.HASH_MISMATCH),
    (lambda c, i: c.flip_bit(i, "payload", -8 * 64), Reason.HASH_MISMATCH),
    (lambda c, i: c.flip_bit(i, "header"), Reason.HASH_MISMATCH),
    (lambda c, i: c.flip_bit(i, "protected_tlv"), Reason.HASH_MISMATCH),
    (lambda c, i: c.flip_bit(i, "signature"), Reason.SIGNATURE_INVALID),
    (lambda c, i: c.truncate(i, c.size(i) - 100), Reason.TRUNCATED),
    (lambda c, i: c.truncate(i, 1000), Reason.TRUNCATED),
    (lambda c, i: c.strip_signature(i), Reason.UNSIGNED),
], ids=["payload", "payload_end", "header", "metadata", "signature", "truncated", "header_only", "unsigned"])
@pytest.mark.parametrize("name", ["1.1.0", "2.0.0"], ids=["ecdsa", "ed25519"])
def test_every_mutation_yields_its_reason(container: fbl.FblContainer, built: dict[str, Path], keys: dict[str, Path],
                                          name: str, mutation: Any, expected: Reason) -> None:
    trusted = load_trusted_keys([keys["dev-ecdsa-p256"], keys["dev-ed25519"]])
    image = container.load(built[name])
    assert _board_check(container, image, trusted) is Reason.NONE
    assert _board_check(container, mutation(container, image), trusted) is expected


def test_resign_and_the_dependency_checks(container: fbl.FblContainer, built: dict[str, Path],
                                          keys: dict[str, Path]) -> None:
    trusted = load_trusted_keys([keys["dev-ecdsa-p256"], keys["dev-ed25519"]])
    update = container.load(built["1.1.0"])
    assert _board_check(container, container.resign(update, keys["untrusted-ecdsa-p256"]), trusted) is Reason.UNKNOWN_KEY
    older = container.resign(update, keys["dev-ed25519"], version=(0, 0, 1))  # another key type, still trusted
    assert container.read(older).version == (0, 0, 1)
    assert _board_check(container, older, trusted, current=(1, 0, 0)) is Reason.DOWNGRADE_VERSION
    higher = container.resign(update, keys["dev-ecdsa-p256"], security_counter=7)
    assert container.read(higher).security_counter == 7 and _board_check(container, higher, trusted) is Reason.NONE
    assert _board_check(container, update, trusted, counter=2) is Reason.DOWNGRADE_SECURITY_COUNTER
    other = container.resign(update, keys["dev-ecdsa-p256"], hardware_id="BMS-HW-B1")
    assert _board_check(container, other, trusted) is Reason.WRONG_HARDWARE
    assert _board_check(container, container.load(built["1.1.0-wrong-hardware"]), trusted) is Reason.WRONG_HARDWARE
    assert _board_check(container, container.load(built["3.0.0-needs-config-v3"]), trusted, schema=1) \
        is Reason.CONFIG_INCOMPATIBLE
    # The payload and the version survive re-signing; the digest does not move for the same data.
    assert container.payload(higher) == container.payload(update)


def test_files_load_save_and_bad_input_is_named(container: fbl.FblContainer, built: dict[str, Path], tmp_path: Path) -> None:
    image = container.load(built["1.1.0"])
    written = container.save(image, tmp_path / "delivery.hex")
    assert [p.name for p in written] == ["delivery.hex", "delivery.hex.sig"]
    assert container.load(tmp_path / "delivery.hex") == image
    (tmp_path / "vendor.s19").write_bytes(fbl.unbundle(container.load(built["1.1.0.s19"]))[0])
    (tmp_path / "vendor.sig").write_bytes(fbl.unbundle(image)[1])  # a delivery's <stem>.sig
    assert container.digest(container.load(tmp_path / "vendor.s19")) == container.digest(image)
    (tmp_path / "nosig.hex").write_bytes(fbl.unbundle(image)[0])
    assert fbl.unbundle(container.load(tmp_path / "nosig.hex"))[1] == b"", "no .sig: an unsigned image"
    (tmp_path / "garbage.hex").write_bytes(b"\x7fELF binary")
    with pytest.raises(ImageError, match=r"neither Intel HEX .* nor Motorola S-record"):
        container.load(tmp_path / "garbage.hex")
    with pytest.raises(ImageError, match="not a flash-bootloader image bundle"):
        container.read(b"\x3d\xb8\xf3\x96" + bytes(60))
    with pytest.raises(ValueError, match="unknown region 'tlv'; accepted: header, payload, protected_tlv, signature"):
        container.flip_bit(image, "tlv")
    with pytest.raises(ImageBuildError, match="exceed logical block application"):
        container.build(find_recipe("1.2.0-large", RECIPES).model_copy(update={"code_size": 200_000}),
                        tmp_path / "keys", tmp_path / "b", hardware=HW)


# ---------------------------------------------------------------------- the registry
def test_every_family_loads_and_keeps_its_protocols(profile: DutProfile) -> None:
    for name, fam in FAMILIES.items():
        prof = profile if name == "flash_bootloader" else DutProfile()
        assert prof.update.family == name
        assert isinstance(container_for(prof), ImageContainer)
        assert container_for(prof).suffixes == fam.suffixes
        assert isinstance(board_parts(prof), BoardParts)
        sequence = load(fam.sequence)
        assert all(callable(getattr(sequence, m, None)) for m in ProgrammingSequence.__dict__ if not m.startswith("_"))


def test_an_unknown_family_is_named_with_the_accepted_ones(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"update": {"family": "uboot"}}))
    with pytest.raises(ProfileError, match=r"update.family: got 'uboot' - .*accepted: mcuboot, flash_bootloader"):
        load_profile(tmp_path / "p.yaml")
    with pytest.raises(ValueError, match="unknown update family 'uboot'; accepted: mcuboot, flash_bootloader"):
        from hil.images.families import family

        family("uboot")


# ---------------------------------------------------------------------- the sequence on the virtual board
def _bench(work: Path, tmp_path: Path, defects: list[str] | None = None) -> Path:
    """An in-process virtual FBL bench (python-can virtual bus, fast flash) sharing the module's keys and builds."""
    data = yaml.safe_load((ROOT / "benches/sim-fbl.yaml").read_text())
    data["bench"] = f"fbl-{uuid.uuid4().hex[:8]}"  # never the shipped bench's name (its lock may be held)
    data["dut"]["profile"] = str(PROFILE)
    data["can"] = {"interface": "virtual", "channel": f"fbl-{uuid.uuid4().hex[:8]}", "bitrate": 500000, "pacing": False}
    for key in ("psu", "load"):
        data[key]["resource"] = "TCPIP0::127.0.0.1::0::SOCKET"
    data["console"]["url"] = "socket://127.0.0.1:0"
    release = ensure_key("fbl-release-ed25519", work / "keys", "ed25519")
    data["sim"].update(flash_file=str(tmp_path / "bench.flash"), flash_timing="fast", trusted_keys=[str(release)],
                       defects=defects or [])
    data["images"].update(build_dir=str(work / "bench-build"), keys_dir=str(work / "keys"), recipes=str(RECIPES),
                          packages=str(ROOT / "firmware_images/packages"), signing_key=str(release),
                          catalogue={k: str(work / "bench-build" / Path(v).name)
                                     for k, v in data["images"]["catalogue"].items()})
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _store(cfg: Any) -> Any:
    from hil.plugin.images import ImageStore

    return ImageStore(cfg)


@pytest.mark.integration
def test_the_oem_sequence_on_the_wire_updates_and_keeps_the_backup(work: Path, tmp_path: Path) -> None:
    cfg = load_bench(_bench(work, tmp_path))
    p, images = cfg.profile, _store(cfg)
    frames: list[can.Message] = []
    with Bench.open(cfg, evidence_dir=tmp_path) as bench:
        spy = can.Bus(interface="virtual", channel=bench.cfg.can.channel)
        notifier = can.Notifier(spy, [frames.append], timeout=0.05)
        try:
            dut = Dut(bench.uds, bench.can, bench.cfg.dut)
            assert dut.version() == "1.0.0"
            outcome = bench.flasher.update(images["update"])
            assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
            assert (dut.version(), dut.backup_version()) == ("1.1.0", "1.0.0")
            assert dut.image_hash() == images.container.digest(images["update"])
            assert dut.backup_image_hash() == images.container.digest(images.baseline())
            assert bench.uds.read_did(Did.FINGERPRINT)[3:14] == b"bms-ota-hil"
        finally:
            notifier.stop()
            spy.shutdown()
    req = [bytes(f.data) for f in frames if f.arbitration_id == p.uds.phys_request_id]
    # Single frames and first frames, as (SID, the bytes after it).
    starts = [r[1:] if r[0] >> 4 == 0 else r[2:] for r in req if r[0] >> 4 in (0, 1)]
    sids = [s[0] for s in starts]
    erase, check, deps = (p.routine(r).to_bytes(2, "big") for r in
                          (Routine.ERASE_MEMORY, Routine.CHECK_MEMORY, Routine.CHECK_PROGRAMMING_DEPENDENCIES))
    order = [i for i, s in enumerate(starts) if s[:2] == bytes([0x10, p.sessions.programming])] + \
            [sids.index(0x27), sids.index(0x2E)] + \
            [i for i, s in enumerate(starts) if s[:4] == b"\x31\x01" + erase][:1] + [sids.index(0x34)] + \
            [i for i, s in enumerate(starts) if s[:4] == b"\x31\x01" + check] + \
            [i for i, s in enumerate(starts) if s[:4] == b"\x31\x01" + deps] + [sids.index(0x11)]
    assert order == sorted(order) and len(order) == 8, f"sequence out of order: {order}"
    assert starts[sids.index(0x2E)][1:3] == p.did(Did.FINGERPRINT).to_bytes(2, "big")
    first_erase = next(s for s in starts if s[:4] == b"\x31\x01" + erase)
    assert first_erase[4] == p.update.address_length_format
    assert p.update.blocks[0].address.to_bytes(4, "big").startswith(first_erase[5:9])  # a first frame holds 6 bytes
    assert sum(1 for s in starts if s[0] == 0x34) == len(p.update.blocks), "one RequestDownload per logical block"


@pytest.mark.integration
def test_rollback_resume_and_refusals_on_the_board(work: Path, tmp_path: Path) -> None:
    cfg = load_bench(_bench(work, tmp_path))
    images = _store(cfg)
    with Bench.open(cfg, evidence_dir=tmp_path) as bench:
        dut, flasher = Dut(bench.uds, bench.can, bench.cfg.dut), bench.flasher
        outcome = flasher.update(images["selftest_fail"])
        assert (outcome.state, outcome.reason, dut.version()) == (UpdateState.ROLLED_BACK, Reason.SELFTEST_FAILED, "1.0.0")
        staged = flasher.stage(images.container.flip_bit(images["update"], "signature"))
        assert (staged.accepted, staged.reason) == (False, Reason.SIGNATURE_INVALID)
        flasher.activate()  # the reset: nothing pending, the old image keeps running
        dut.wait_up(10.0)
        assert (dut.version(), dut.status().state) == ("1.0.0", UpdateState.REJECTED)
        # An interrupted download resumes where the board stopped storing, without erasing.
        image = images["update"]

        def cut(sent: int, total: int) -> None:
            if sent > total // 2:
                raise KeyboardInterrupt
        flasher.on_progress.append(cut)
        with pytest.raises(KeyboardInterrupt):
            flasher.stage(image)
        flasher.on_progress.clear()
        bench.uds.ecu_reset()
        dut.wait_up(10.0)
        before = len(flasher.phases)
        staged = flasher.stage(image, resume=True)
        assert staged.accepted and staged.resumed_from > 0, staged
        assert "erase" not in [ph.value for ph, _t in flasher.phases[before:]]
        assert flasher.update(images["update"]).state is UpdateState.SUCCESS


@pytest.mark.integration
@pytest.mark.parametrize(("defect", "case"), [
    ("check_memory_ignores_signature", "bad_signature"),
    ("dependency_check_skipped", "wrong_hardware"),
    ("bank_marked_valid_before_check", "rejected_then_reset"),
    ("backup_bank_invalidated_at_switch", "selftest_fail"),
])
def test_each_family_defect_breaks_its_promise(work: Path, tmp_path: Path, defect: str, case: str) -> None:
    """The same input on the good board and on the defective one: the good board keeps the promise, the other not."""
    for defects in ([], [defect]):
        cfg = load_bench(_bench(work, tmp_path / (defect if defects else "good"), defects))
        images = _store(cfg)
        with Bench.open(cfg, evidence_dir=tmp_path) as bench:
            dut, flasher = Dut(bench.uds, bench.can, bench.cfg.dut), bench.flasher
            if case == "bad_signature":
                kept = not flasher.stage(images.container.flip_bit(images["update"], "signature")).accepted
            elif case == "wrong_hardware":
                kept = not flasher.stage(images["wrong_hardware"]).accepted
            elif case == "rejected_then_reset":
                assert not flasher.stage(images["wrong_hardware"]).accepted
                flasher.activate()
                flasher.wait_outcome(timeout=20.0)
                kept = dut.version() == "1.0.0"
            else:
                kept = flasher.update(images["selftest_fail"]).state is UpdateState.ROLLED_BACK
        assert kept == (not defects), f"{defect}: promise {'broken' if defects else 'kept'} unexpectedly"


# ---------------------------------------------------------------------- the exhaustive sweep
@pytest.mark.parametrize(("scenario", "torn"), [("install", False), ("revert", True), ("install", True)])
def test_power_cuts_at_every_flash_operation_leave_a_working_image(container: fbl.FblContainer, built: dict[str, Path],
                                                                   keys: dict[str, Path], profile: DutProfile,
                                                                   scenario: str, torn: bool) -> None:
    from hil.sim.fbl import FblBootloader, FblRig
    from hil.sim.sweep import sweep

    trusted = load_trusted_keys([keys["dev-ecdsa-p256"], keys["dev-ed25519"]])
    report = sweep(FlashLayout(slot_sectors=33), container.load(built["1.0.0"]), container.load(built["1.1.0"]), trusted,
                   HW, scenario=scenario, torn=torn, make_bootloader=FblBootloader, rig=FblRig, profile=profile)  # type: ignore[arg-type]
    assert report.total_ops > 30, "programming the inactive bank and the bank switch are swept"
    assert report.bricks == 0, "\n".join(str(p) for p in report.points if p.outcome == "brick")
    assert {p.outcome for p in report.points} >= {"old", "new" if scenario == "install" else "old"}


def test_the_sweep_finds_a_bank_switch_written_in_two_records(container: fbl.FblContainer, built: dict[str, Path],
                                                             keys: dict[str, Path], profile: DutProfile) -> None:
    from hil.sim.fbl import FblBootloader, FblRig
    from hil.sim.sweep import sweep

    class TwoRecordSwitch(FblBootloader):
        """Broken on purpose: switches the active bank in one NV record and notes the trial boot in a second."""

        def _install(self, s: dict[str, Any]) -> None:
            pending = s["pending"]
            self.nv.update(fbl={**s, "active": pending["bank"], "pending": None})
            self.nv.update(fbl={**self.state(), "trial": {"bank": pending["bank"], "backup": s["active"]}},
                           update=self._set_update(UpdateState.TESTING, Reason.NONE))

    trusted = load_trusted_keys([keys["dev-ecdsa-p256"]])
    report = sweep(FlashLayout(slot_sectors=33), container.load(built["1.0.0"]), container.load(built["1.1.0"]), trusted,
                   HW, scenario="revert", torn=False, make_bootloader=TwoRecordSwitch, rig=FblRig, profile=profile)  # type: ignore[arg-type]
    assert report.bricks > 0, "the sweep did not notice a bank switch without its trial record"
    assert next(p for p in report.points if p.outcome == "brick").detail


def test_a_bench_refuses_defects_its_family_cannot_carry(work: Path, tmp_path: Path) -> None:
    from hil.errors import BenchConfigError

    with pytest.raises(BenchConfigError, match=r"sim.defects \['swap_status_written_before_copy'\]: a board of update "
                                               r"family flash_bootloader cannot carry them .*mcuboot"):
        load_bench(_bench(work, tmp_path / "a", ["swap_status_written_before_copy"]))
    mcuboot = yaml.safe_load((ROOT / "benches/sim-inproc.yaml").read_text())
    mcuboot["sim"]["defects"] = ["dependency_check_skipped"]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mcuboot))
    with pytest.raises(BenchConfigError, match=r"update family mcuboot cannot carry them .*flash_bootloader"):
        load_bench(tmp_path / "m.yaml")


def test_a_case_that_does_not_apply_to_the_family_is_not_covered_with_its_reason(tmp_path: Path) -> None:
    """The console_pattern fixture's skip for a swap phase this family does not have reaches the fault matrix."""
    import json

    from hil.images.families import NOT_APPLICABLE_PREFIX, family
    from hil.report.records import NOT_COVERED, TestRecord, write_fault_matrix

    fam = family("flash_bootloader")
    why = f"{NOT_APPLICABLE_PREFIX}{fam.name}: console pattern 'swap_progress': {fam.not_applicable['swap_progress']}"
    records = [TestRecord("t.py::test_swap", "test_swap", "skipped", 0.0, fault_rows=[4], reason=why),
               TestRecord("t.py::test_download_cut", "test_download_cut", "passed", 1.0, fault_rows=[4])]
    _md, js = write_fault_matrix(records, tmp_path)
    row = next(r for r in json.loads(js.read_text())["rows"] if r["row"] == 4)
    assert row["verdict"] == NOT_COVERED and row["not_covered_because"] == [why]
    assert "no swap" in why
