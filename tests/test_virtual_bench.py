"""The virtual bench, tested only through its wire protocols: UDS over ISO-TP (udsoncan), SCPI (pyvisa),
the console (pyserial). Nothing here reaches into the simulator's objects.

A fresh in-process bench per test (own flash file, OS-assigned ports, its own `virtual` CAN channel).
"""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Iterator

import can
import pytest
import serial
import udsoncan
from udsoncan.client import Client
from udsoncan.connections import PythonIsoTpConnection

from hil.bench.bench import Bench
from hil.bench.config import BenchConfig, load_bench
from hil.bench.contract import (MSG_SOC_CORE, ActivationMode, BootMode, Did, Nrc, Reason, Routine, UpdateState)
from hil.errors import HilError
from hil.images.build import load_image
from hil.images import mutate
from hil.images.keys import ensure_dev_keys

from bench_ports import private_config

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def bench_cfg(tmp_path: Path, *, fast: bool = True, paced: bool = False) -> BenchConfig:
    """The in-process sim bench with its own flash file and CAN channel; fast flash and bus unless timing matters."""
    cfg = private_config(load_bench(ROOT / "benches/sim-inproc.yaml"), tmp_path, prefix="inproc",
                         flash_timing="fast" if fast else "realistic")
    return cfg.model_copy(update={"can": cfg.can.model_copy(update={"pacing": paced})})


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    with Bench.open(bench_cfg(tmp_path), evidence_dir=tmp_path) as b:
        yield b


@pytest.fixture
def paced_bench(tmp_path: Path) -> Iterator[Bench]:
    with Bench.open(bench_cfg(tmp_path, paced=True), evidence_dir=tmp_path) as b:
        yield b


@pytest.fixture
def slow_bench(tmp_path: Path) -> Iterator[Bench]:
    with Bench.open(bench_cfg(tmp_path, fast=False), evidence_dir=tmp_path) as b:
        yield b


def _plain_udsoncan(b: Bench) -> Client:
    """A udsoncan client of our own over the bench's bus: no framework driver in between."""
    import isotp

    stack = isotp.NotifierBasedCanStack(b.can.bus, b.can.notifier,
                                        address=isotp.Address(isotp.AddressingMode.Normal_11bits, txid=0x7E0, rxid=0x7E8),
                                        params={"blocking_send": True, "tx_padding": 0xCC})
    client = Client(PythonIsoTpConnection(stack), config={**udsoncan.configs.default_client_config,
                                                           "data_identifiers": {0xF189: udsoncan.AsciiCodec(5)}})
    return client


def _raw(client: Client, request: bytes, timeout: float = 2.0) -> bytes:
    conn = client.conn
    conn.empty_rxqueue()
    conn.send(request)
    while True:
        resp = conn.wait_frame(timeout=timeout, exception=True)
        if not (len(resp) >= 3 and resp[0] == 0x7F and resp[2] == 0x78):
            return bytes(resp)


def _version(b: Bench) -> str:
    return b.uds.software_version()


# --------------------------------------------------------------------------- update paths
def test_background_download_activate_confirm(paced_bench):
    bench = paced_bench
    images = {n: load_image(n, bench.cfg) for n in ("1.0.0", "1.1.0")}
    assert _version(bench) == "1.0.0"
    with bench.can.recorder(MSG_SOC_CORE) as frames:
        staged = bench.flasher.stage(images["1.1.0"])
    assert staged.accepted, staged.reason
    ts = [f.timestamp for f in frames]
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    assert len(frames) >= 2 and max(gaps) < 0.2, f"SOC frames stopped during the download: max gap {max(gaps, default=0):.3f} s"
    bench.flasher.activate(ActivationMode.TEST)
    outcome = bench.flasher.wait_outcome(timeout=30)
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    assert _version(bench) == "1.1.0"
    assert bench.uds.read_str(Did.BACKUP_IMAGE) == "1.0.0"
    assert bench.uds.boot_info().confirmed


def test_flash_trace_on_the_virtual_interface_has_both_directions(bench, tmp_path):
    """python-can's in-process `virtual` bus never echoes a sender's frames: the tester's side is traced on send."""
    blf, asc = tmp_path / "t/can.blf", tmp_path / "t/can.asc"
    bench.can.start_trace([blf, asc])
    staged = bench.flasher.stage(load_image("1.1.0", bench.cfg))
    bench.can.stop_trace()
    assert staged.accepted, staged.reason
    for reader in (can.BLFReader(str(blf)), can.ASCReader(str(asc))):
        frames = list(reader)
        tester = [m for m in frames if m.arbitration_id == bench.cfg.dut.tx_id]
        ecu = [m for m in frames if m.arbitration_id == bench.cfg.dut.rx_id]
        # the download is ~10 KiB: hundreds of consecutive frames from the tester, flow control + responses back
        assert len(tester) > 100 and len(ecu) > 5, (type(reader).__name__, len(tester), len(ecu))
        assert all(not m.is_rx for m in tester) and all(m.is_rx for m in ecu)
        assert any(m.arbitration_id == 0x180 for m in frames)  # the DUT's SOC frames too
        # Host time stamps from two threads (sender, notifier): in order within scheduling jitter.
        stamps = [m.timestamp for m in frames]
        assert max(a - b for a, b in zip(stamps, stamps[1:])) < 0.05, "trace out of time order"


@pytest.mark.parametrize(("recipe", "reason"), [
    ("1.1.0-selftest-fail", Reason.SELFTEST_FAILED),
    ("1.1.0-crash-at-boot", Reason.CRASHED_AT_BOOT),
    ("1.1.0-hang", Reason.WATCHDOG_RESET),
])
def test_failing_builds_are_reverted_with_reason(bench, recipe, reason):
    outcome = bench.flasher.update(load_image(recipe, bench.cfg), timeout=30)
    assert (outcome.state, outcome.reason) == (UpdateState.ROLLED_BACK, reason), outcome.states_seen
    assert _version(bench) == "1.0.0"


def test_backup_did_never_names_a_download_and_discard_clears_the_slot(bench):
    """FD05 names the previous image only after a swap: never a staged, rejected or reverted download."""
    assert bench.uds.read_str(Did.BACKUP_IMAGE) == ""  # factory state: nothing in the secondary slot
    rejected = bench.flasher.stage(load_image("0.9.0-downgrade", bench.cfg))
    assert not rejected.accepted and rejected.reason is Reason.DOWNGRADE_VERSION
    assert bench.uds.read_str(Did.BACKUP_IMAGE) == "", "a rejected download reported as the backup"
    outcome = bench.flasher.update(load_image("1.1.0-selftest-fail", bench.cfg), timeout=30)
    assert outcome.state is UpdateState.ROLLED_BACK
    assert bench.uds.read_str(Did.BACKUP_IMAGE) == "", "a reverted image reported as the backup"
    bench.flasher.discard()
    status = bench.uds.update_status()
    assert (status.state, status.reason) == (UpdateState.IDLE, Reason.NONE)
    assert bench.uds.read_str(Did.BACKUP_IMAGE) == ""
    assert bench.flasher.update(load_image("1.1.0", bench.cfg), timeout=30).confirmed
    assert bench.uds.read_str(Did.BACKUP_IMAGE) == "1.0.0"  # after the swap: the previous image


@pytest.mark.parametrize(("make", "reason"), [
    (lambda img, cfg: mutate.flip_bit(img, "payload", 1234), Reason.HASH_MISMATCH),
    (lambda img, cfg: mutate.truncate(img, len(img) - 64), Reason.TRUNCATED),
    (lambda img, cfg: mutate.resign(img, ensure_dev_keys(cfg.images.keys_dir)["untrusted-ecdsa-p256"]), Reason.UNKNOWN_KEY),
    (lambda img, cfg: mutate.strip_signature(img), Reason.UNSIGNED),
    (lambda img, cfg: load_image("0.9.0-downgrade", cfg), Reason.DOWNGRADE_VERSION),
    (lambda img, cfg: load_image("1.1.0-wrong-hardware", cfg), Reason.WRONG_HARDWARE),
], ids=["flipped_byte", "truncated", "wrong_key", "unsigned", "downgrade", "wrong_hardware_id"])
def test_bad_images_rejected_running_image_untouched(bench, make, reason):
    bad = make(load_image("1.1.0", bench.cfg), bench.cfg)
    staged = bench.flasher.stage(bad)
    assert not staged.accepted and staged.reason is reason
    with pytest.raises(HilError) as err:
        bench.flasher.activate()
    assert getattr(err.value, "nrc", None) == Nrc.REQUEST_SEQUENCE_ERROR
    status = bench.uds.update_status()
    assert (status.state, status.reason) == (UpdateState.REJECTED, reason)
    assert _version(bench) == "1.0.0" and bench.uds.boot_info().confirmed


# --------------------------------------------------------------------------- power cuts through the supply
@pytest.mark.parametrize("phase", ["erase", "swap", "trailer", "first_boot"])
def test_power_cut_always_leaves_a_bootable_image(slow_bench, phase):
    b = slow_bench
    image = load_image("1.1.0", b.cfg)
    if phase == "erase":
        assert b.flasher.stage(image).accepted  # something to erase: blank sectors are skipped
        b.flasher.unlock()
        import threading

        threading.Timer(0.05, b.psu.output, args=(False,)).start()
        with pytest.raises(HilError):
            b.uds.routine(Routine.ERASE_MEMORY)
        time.sleep(0.3)
        b.psu.power_on()
        b.can.wait_for(MSG_SOC_CORE, timeout=10)
        assert _version(b) == "1.0.0"
        return
    assert b.flasher.stage(image).accepted
    mark = b.console.mark()
    b.flasher.activate()
    pattern = {"swap": r"BOOT: swap sector \d+/", "trailer": r"BOOT: swap done",
               "first_boot": r"APP: self-test running"}[phase]
    b.console.expect(pattern, timeout=20, since=mark)
    b.psu.dropout(0.3)
    outcome = b.flasher.wait_outcome(timeout=40)
    version = _version(b)
    assert b.uds.boot_info().mode is BootMode.APPLICATION
    assert (outcome.state, version) in ((UpdateState.SUCCESS, "1.1.0"), (UpdateState.ROLLED_BACK, "1.0.0")), \
        (outcome.states_seen, version)


# --------------------------------------------------------------------------- malformed requests
def test_malformed_requests_get_the_right_nrc_and_never_crash(bench):
    client = _plain_udsoncan(bench)
    with client:
        cases = [
            (b"\x22\xF1", Nrc.INCORRECT_MESSAGE_LENGTH),  # RDBI: half a DID
            (b"\x22\x12\x34", Nrc.REQUEST_OUT_OF_RANGE),  # unknown DID
            (b"\x10", Nrc.INCORRECT_MESSAGE_LENGTH),
            (b"\x10\x7A", Nrc.SUBFUNCTION_NOT_SUPPORTED),
            (b"\x99\x00", Nrc.SERVICE_NOT_SUPPORTED),
            (b"\x36\x01\x00", Nrc.REQUEST_SEQUENCE_ERROR),  # TransferData without RequestDownload
            (b"\x37", Nrc.REQUEST_SEQUENCE_ERROR),
            (b"\x27\x01", Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION),  # security in the default session
            (b"\x31\x01\xFF\x00", Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION),
        ]
        for request, nrc in cases:
            assert _raw(client, request) == bytes([0x7F, request[0], nrc]), request.hex()
        # Programming session, unlocked, then a download with a wrong block counter.
        assert _raw(client, b"\x10\x02")[0] == 0x50
        seed = _raw(client, b"\x27\x01")[2:]
        assert _raw(client, b"\x27\x02" + bench.cfg.dut.security.compute_key(seed)) == b"\x67\x02"
        assert _raw(client, b"\x27\x02" + bytes(4)) == bytes([0x7F, 0x27, Nrc.REQUEST_SEQUENCE_ERROR])  # no seed asked
        assert _raw(client, b"\x31\x01\xFF\x00") == b"\x71\x01\xFF\x00\x00"
        layout = _raw(client, b"\x22\xFD\x06")
        address, _size, _sector = struct.unpack(">III", layout[3:])
        assert _raw(client, b"\x34\x00\x44" + struct.pack(">II", address, 10000))[0] == 0x74
        assert _raw(client, b"\x36\x02" + b"\xAA" * 16) == bytes([0x7F, 0x36, Nrc.WRONG_BLOCK_SEQUENCE_COUNTER])
        assert _raw(client, b"\x36\x01" + b"\xAA" * 16) == b"\x76\x01"
        assert _raw(client, b"\x37") == bytes([0x7F, 0x37, Nrc.REQUEST_SEQUENCE_ERROR])  # exit too early
        assert _raw(client, b"\x34\x00\x44" + struct.pack(">II", address, 10000)) == \
            bytes([0x7F, 0x34, Nrc.CONDITIONS_NOT_CORRECT])  # a download is already running
    # still alive and serving
    assert _version(bench) == "1.0.0"
    bench.can.wait_for(MSG_SOC_CORE, timeout=2)


# --------------------------------------------------------------------------- start-up
def test_corrupted_flash_file_starts_in_recovery_mode(tmp_path):
    cfg = bench_cfg(tmp_path)
    with Bench.open(cfg, evidence_dir=tmp_path) as b:
        assert _version(b) == "1.0.0"
    assert cfg.sim is not None
    flash = bytearray(Path(cfg.sim.flash_file).read_bytes())
    start = cfg.flash_layout.primary_offset
    flash[start:start + 64] = bytes(64)  # the primary image's header is gone
    Path(cfg.sim.flash_file).write_bytes(bytes(flash))
    with Bench.open(cfg, evidence_dir=tmp_path) as b:
        info = b.uds.boot_info()
        assert info.mode is BootMode.RECOVERY
        assert b.uds.update_status().state is UpdateState.RECOVERY
        b.console.expect(r"no valid image", timeout=5)
        # Recovery can be flashed back to life.
        outcome = b.flasher.update(load_image("1.0.0", cfg), ActivationMode.PERMANENT, timeout=30)
        assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
        assert _version(b) == "1.0.0"


def test_console_and_supply_speak_their_protocols(bench):
    import pyvisa

    rm = pyvisa.ResourceManager("@py")
    inst = rm.open_resource(bench.cfg.psu.resource, read_termination="\n", write_termination="\n", timeout=2000)
    try:
        assert "E36312A" in inst.query("*IDN?")
        assert float(inst.query(f"MEAS:VOLT? (@{bench.cfg.psu.channel})")) == pytest.approx(12.0, abs=0.05)
        assert inst.query("SYST:ERR?").startswith("+0")
    finally:
        inst.close()
    assert bench.cfg.console is not None
    port = serial.serial_for_url(bench.cfg.console.url, timeout=2)
    try:
        bench.psu.power_cycle(0.3)
        line = port.read_until(b"BOOT: reset cause=")
        assert line.endswith(b"BOOT: reset cause="), line
    finally:
        port.close()


def test_soc_is_persisted_across_resets(bench):
    """Charge the pack, reset the ECU: the SOC core resumes from the stored SOC, not from a default."""
    start = float(bench.can.wait_for(MSG_SOC_CORE, timeout=2).signals["SOC"])
    bench.load.set_pack_current(180.0)  # fast charge: +0.1 % per second on the 50 Ah pack
    risen = bench.can.wait_for(MSG_SOC_CORE, predicate=lambda s: s["SOC"] >= start + 0.3, timeout=10)
    bench.load.set_pack_current(0.0)
    before_reset = float(bench.can.wait_for(MSG_SOC_CORE, timeout=2).signals["SOC"])
    bench.uds.ecu_reset()
    mark = time.monotonic()
    first = bench.can.wait_for(MSG_SOC_CORE, predicate=lambda s: s["RollingCounter"] == 0, timeout=10, since=mark)
    assert float(first.signals["SOC"]) == pytest.approx(before_reset, abs=0.1), (start, risen.signals["SOC"], first.signals)


@pytest.mark.parametrize(("psu_dialect", "load_dialect", "idn"), [
    ("rigol_dp800", "keysight_el30000", ("DP832", "EL34143A")),
    ("rs_hmp", "hil_sim", ("HMP4040", "BATTEMU")),
])
def test_virtual_bench_emulates_the_dialects_its_file_names(tmp_path, psu_dialect, load_dialect, idn):
    cfg = bench_cfg(tmp_path)
    assert cfg.load is not None
    cfg = cfg.model_copy(update={"psu": cfg.psu.model_copy(update={"dialect": psu_dialect}),
                                 "load": cfg.load.model_copy(update={"dialect": load_dialect})})
    with Bench.open(cfg, evidence_dir=tmp_path) as b:  # powers the board through the dialect, waits for SOC frames
        assert idn[0] in b.supply.identity() and b.load is not None and idn[1] in b.load.identity()
        assert b.supply.measure_voltage() == pytest.approx(12.0)
        b.load.set_pack_current(-40.0)
        assert b.flasher.stage(load_image("1.1.0", cfg)).accepted
        with pytest.raises(HilError):  # the board measures the load's current: activation refused
            b.flasher.activate()
        assert b.uds.update_status().reason is Reason.CURRENT_FLOWING
