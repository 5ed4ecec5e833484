"""Supply and battery emulators and their drivers, talking only through pyvisa and raw sockets."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import pyvisa

from hil.bench import contract
from hil.bench.config import LoadConfig, PsuConfig, PsuLimits
from hil.drivers.load import ScpiBatteryEmulator
from hil.drivers.protocols import BatteryEmulator, PowerSupply
from hil.drivers.psu import (
    DIALECTS,
    KeysightE36300Dialect,
    PsuDialect,
    RigolDP800Dialect,
    RsHmpDialect,
    ScpiPowerSupply,
)
from hil.errors import BenchConfigError, InstrumentError, LimitViolation, ReadbackMismatch
from hil.sim.instruments import BatteryEmulatorModel, ChannelRange, SupplyModel
from hil.sim.scpi import ScpiServer

BOARD_AMPS = 0.15
BROWNOUT_V = 8.0


def _resource(port: int) -> str:
    return f"TCPIP0::127.0.0.1::{port}::SOCKET"


def _psu_cfg(port: int, **overrides: object) -> PsuConfig:
    fields: dict[str, object] = dict(resource=_resource(port), dialect="keysight_e36300", channel=2,
                                     nominal_voltage=12.0, current_limit=0.8,
                                     limits=PsuLimits(max_voltage=16.0, max_current=1.0), timeout_ms=1000)
    fields.update(overrides)
    return PsuConfig(**fields)  # type: ignore[arg-type]


def _board_load(volts: float) -> float:
    return BOARD_AMPS if volts >= BROWNOUT_V else 0.0


@pytest.fixture
def supply() -> Iterator[tuple[SupplyModel, int]]:
    model = SupplyModel()
    model.set_load(2, _board_load)
    server = ScpiServer(model)
    port = server.start()
    yield model, port
    server.stop()


@pytest.fixture
def psu(supply: tuple[SupplyModel, int], tmp_path: Path) -> Iterator[ScpiPowerSupply]:
    _, port = supply
    driver = ScpiPowerSupply(_psu_cfg(port), log_path=tmp_path / "supply.log")
    yield driver
    driver.close()


@pytest.fixture
def visa() -> Iterator[pyvisa.ResourceManager]:
    rm = pyvisa.ResourceManager("@py")
    yield rm
    rm.close()


def _open_raw(rm: pyvisa.ResourceManager, port: int) -> pyvisa.resources.MessageBasedResource:
    return rm.open_resource(_resource(port), read_termination="\n", write_termination="\n", timeout=1000)  # type: ignore[return-value]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- supply
def test_identity_over_pyvisa(supply: tuple[SupplyModel, int], psu: ScpiPowerSupply,
                              visa: pyvisa.ResourceManager) -> None:
    assert psu.identity() == contract.PSU_IDN_SIM
    assert _open_raw(visa, supply[1]).query("*IDN?") == contract.PSU_IDN_SIM
    assert psu.range == (25.0, 1.0), "E36312A CH2 range looked up from *IDN?"
    assert isinstance(psu, PowerSupply)


def test_settings_reach_the_instrument_and_read_back(supply: tuple[SupplyModel, int], psu: ScpiPowerSupply,
                                                     visa: pyvisa.ResourceManager) -> None:
    model, port = supply
    psu.set_voltage(12.5)
    psu.set_current_limit(0.75)
    assert model.voltage_setpoint(2) == pytest.approx(12.5)
    assert model.current_limit(2) == pytest.approx(0.75)
    assert model.voltage_setpoint(1) == 0.0, "only the configured channel changes"
    raw = _open_raw(visa, port)
    assert float(raw.query("VOLT? (@2)")) == pytest.approx(12.5)
    assert float(raw.query("CURR? (@2)")) == pytest.approx(0.75)
    received = model.received()
    for cmd in ("VOLT 12.5,(@2)", "VOLT? (@2)", "CURR 0.75,(@2)", "CURR? (@2)"):
        assert cmd in received
    assert received.count("SYST:ERR?") >= 2, "the error queue is read after every setting"


def test_output_off_measures_zero_and_on_measures_setpoint_and_load(supply: tuple[SupplyModel, int],
                                                                     psu: ScpiPowerSupply) -> None:
    psu.power_on()
    assert psu.is_on()
    assert psu.measure_voltage() == pytest.approx(12.0)
    assert psu.measure_current() == pytest.approx(BOARD_AMPS)
    psu.output(False)
    assert not psu.is_on()
    assert psu.measure_voltage() == 0.0
    assert psu.measure_current() == 0.0
    psu.safe_state()
    assert not psu.is_on() and supply[0].voltage_setpoint(2) == pytest.approx(12.0)


def test_current_limit_sags_the_output(supply: tuple[SupplyModel, int], psu: ScpiPowerSupply) -> None:
    model, _ = supply
    model.set_load(2, lambda volts: volts / 6.0)  # 6 ohm: 2 A at 12 V, above the 0.8 A limit
    psu.power_on()
    assert psu.measure_current() == pytest.approx(0.8)
    assert psu.measure_voltage() == pytest.approx(4.8)


def test_listener_hears_off_on_and_dip(supply: tuple[SupplyModel, int], psu: ScpiPowerSupply) -> None:
    model, _ = supply
    heard: list[tuple[float, float]] = []
    model.add_listener(2, lambda volts: heard.append((time.monotonic(), volts)))
    psu.power_on()
    psu.dropout(0.1)
    psu.dip(5.0, 0.05)
    psu.power_off()
    assert [v for _, v in heard] == [12.0, 0.0, 12.0, 5.0, 12.0, 0.0]
    off_for = heard[2][0] - heard[1][0]
    assert 0.1 <= off_for < 0.3, f"dropout lasted {off_for:.3f} s"


def test_out_of_range_requests_send_nothing(supply: tuple[SupplyModel, int], psu: ScpiPowerSupply) -> None:
    model, _ = supply
    psu.power_on()
    model.clear_received()
    with pytest.raises(LimitViolation, match=r"17 V exceeds the bench limit psu\.limits\.max_voltage = 16 V"):
        psu.set_voltage(17.0)
    with pytest.raises(LimitViolation, match=r"1\.5 A exceeds the bench limit psu\.limits\.max_current = 1 A"):
        psu.set_current_limit(1.5)
    with pytest.raises(LimitViolation, match="not a non-negative number"):
        psu.set_voltage(-1.0)
    with pytest.raises(LimitViolation, match="dip voltage 20 V"):
        psu.dip(20.0, 0.1)
    assert model.received() == [], "nothing may reach the instrument"
    assert model.voltage_setpoint(2) == pytest.approx(12.0)


def test_channel_range_is_checked_beyond_the_bench_limits(supply: tuple[SupplyModel, int]) -> None:
    model, port = supply
    with ScpiPowerSupply(_psu_cfg(port, limits=PsuLimits(max_voltage=30.0, max_current=1.0))) as wide:
        model.clear_received()
        with pytest.raises(LimitViolation, match="exceeds the E36312A channel 2 range of 25 V"):
            wide.set_voltage(26.0)
    assert model.received() == []


class ClampingSupply(SupplyModel):
    """A supply that silently clamps setpoints at 10 V (a firmware quirk the readback must catch)."""

    def set_voltage(self, channel: int, volts: float) -> None:
        super().set_voltage(channel, min(volts, 10.0))


def test_readback_mismatch_is_caught() -> None:
    with ScpiServer(ClampingSupply()) as server:
        assert server.port is not None
        with ScpiPowerSupply(_psu_cfg(server.port)) as psu:
            with pytest.raises(ReadbackMismatch, match=r"commanded 12, instrument reads back 10"):
                psu.set_voltage(12.0)


def test_instrument_error_after_a_setting_is_raised() -> None:
    narrow = SupplyModel(ranges={1: ChannelRange(6.0, 5.0), 2: ChannelRange(10.0, 1.0), 3: ChannelRange(10.0, 1.0)})
    with ScpiServer(narrow) as server:
        assert server.port is not None
        with ScpiPowerSupply(_psu_cfg(server.port)) as psu:
            with pytest.raises(InstrumentError) as err:
                psu.set_voltage(12.0)
    assert type(err.value) is InstrumentError, "reported from SYST:ERR? before any readback"
    assert '-222,"Data out of range' in str(err.value) and "VOLT 12,(@2)" in str(err.value)


def test_error_queue_over_raw_scpi(supply: tuple[SupplyModel, int], visa: pyvisa.ResourceManager) -> None:
    model, port = supply
    raw = _open_raw(visa, port)
    raw.write("FOO:BAR 1")
    assert raw.query("SYST:ERR?").startswith('-113,"Undefined header')
    assert raw.query("SYST:ERR?") == '+0,"No error"'
    raw.write("VOLT 30,(@2)")
    raw.write("VOLT")
    raw.write("OUTP MAYBE,(@2)")
    assert raw.query("SYST:ERR?").startswith('-222,"Data out of range')
    assert raw.query("SYST:ERR?").startswith('-109,"Missing parameter')
    assert raw.query("SYST:ERR?").startswith('-224,"Illegal parameter value')
    assert raw.query("SYST:ERR?") == '+0,"No error"'
    assert model.voltage_setpoint(2) == 0.0, "a refused setting leaves the setting unchanged"
    raw.write("VOLT 1;FOO")
    raw.write("*CLS")
    assert raw.query("SYST:ERR?") == '+0,"No error"'


def test_full_command_set_over_raw_socket(supply: tuple[SupplyModel, int]) -> None:
    """'\\r\\n' terminators, ';'-joined commands answered in one line, several clients, long forms."""
    model, port = supply
    with socket.create_connection(("127.0.0.1", port)) as a, socket.create_connection(("127.0.0.1", port)) as b:
        fa, fb = a.makefile("rwb"), b.makefile("rwb")

        def ask(f: object, line: str) -> str:
            f.write(line.encode() + b"\r\n")  # type: ignore[attr-defined]
            f.flush()  # type: ignore[attr-defined]
            return f.readline().decode().strip()  # type: ignore[attr-defined]

        assert ask(fa, "APPL CH1,5,2;OUTP ON,(@1);*OPC?") == "1"
        assert ask(fb, "MEAS:VOLT? (@1:3);MEASure:SCALar:CURRent:DC? (@1)") == \
            "+5.00000000E+00,+0.00000000E+00,+0.00000000E+00;+0.00000000E+00"
        assert ask(fb, "INST:NSEL 3;VOLT 7.5;INST?;VOLT?") == "CH3;+7.50000000E+00"
        assert ask(fa, "sour:volt:lev? (@3);APPL? CH1") == '+7.50000000E+00;"+5.00000000E+00,+2.00000000E+00"'
        assert ask(fa, "*RST;OUTP? (@1);SYST:ERR?") == '0;+0,"No error"'
    assert model.voltage_setpoint(3) == 0.0


def test_server_stops_promptly_with_clients_connected() -> None:
    server = ScpiServer(SupplyModel())
    port = server.start()
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    assert server.wait_for_clients(3, timeout=2.0) == 3
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 0.5
    for c in clients:
        assert c.recv(10) == b"", "clients see the connection closed"
        c.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1.0)


def test_unreachable_supply_names_the_resource_quickly() -> None:
    port = _free_port()
    t0 = time.monotonic()
    with pytest.raises(InstrumentError, match=rf"TCPIP0::127\.0\.0\.1::{port}::SOCKET.*\*IDN\?"):
        ScpiPowerSupply(_psu_cfg(port, timeout_ms=200))
    assert time.monotonic() - t0 < 1.0


class SilentInstrument:
    """Accepts connections, never answers."""

    def execute(self, message: str) -> str | None:
        return None


def test_silent_instrument_times_out_naming_resource_and_command() -> None:
    with ScpiServer(SilentInstrument()) as server:
        t0 = time.monotonic()
        with pytest.raises(InstrumentError, match=r"::SOCKET did not answer '\*IDN\?' within 200 ms"):
            ScpiPowerSupply(_psu_cfg(server.port, timeout_ms=200))
        assert time.monotonic() - t0 < 1.0


def test_supply_log_and_events(supply: tuple[SupplyModel, int], psu: ScpiPowerSupply, tmp_path: Path) -> None:
    psu.power_on()
    volts = psu.measure_voltage()
    log = (tmp_path / "supply.log").read_text().splitlines()
    assert any(line.endswith("> VOLT 12,(@2)") for line in log)
    assert any(line.endswith("< +1.20000000E+01") for line in log)
    assert all(line[:4].isdigit() and "T" in line.split(" ")[0] for line in log), "every line timestamped"
    measurements = [e for e in psu.events if e.kind == "measure"]
    assert measurements[-1].name == "voltage" and measurements[-1].value == volts and measurements[-1].unit == "V"
    assert abs(measurements[-1].time - time.time()) < 5
    psu.start_log(tmp_path / "second.log")
    psu.is_on()
    assert "OUTP? (@2)" in (tmp_path / "second.log").read_text()
    assert "OUTP? (@2)" not in (tmp_path / "supply.log").read_text().splitlines()[-1]


def test_hmp_and_generic_dialects_drive_the_emulator(supply: tuple[SupplyModel, int]) -> None:
    """The E36312A also takes `INST:NSEL n` + plain commands (HMP style) and channel-less ones (generic)."""
    model, port = supply
    with ScpiPowerSupply(_psu_cfg(port, dialect="rs_hmp")) as hmp:
        hmp.power_on()
        assert hmp.measure_voltage() == pytest.approx(12.0)
    assert model.is_on(2) and model.voltage_setpoint(2) == pytest.approx(12.0)
    assert "INST:NSEL 2" in model.received()
    generic_cfg = _psu_cfg(port, dialect="scpi", channel=1, nominal_voltage=5.0, current_limit=1.0,
                           limits=PsuLimits(max_voltage=6.0, max_current=2.0))
    with ScpiPowerSupply(generic_cfg) as generic:
        model.execute("INST:NSEL 1")
        generic.power_on()
    assert model.is_on(1) and model.voltage_setpoint(1) == pytest.approx(5.0)


def test_dialect_command_formatting() -> None:
    rigol, hmp, keysight, generic = RigolDP800Dialect(), RsHmpDialect(), KeysightE36300Dialect(), PsuDialect()
    assert DIALECTS["rigol_dp800"].name == "rigol_dp800" and set(DIALECTS) == {
        "keysight_e36300", "rigol_dp800", "rs_hmp", "scpi"}
    assert rigol.select(2) == []
    assert rigol.set_voltage(2, 12.0) == ":SOUR2:VOLT 12"
    assert rigol.query_voltage(3) == ":SOUR3:VOLT?"
    assert rigol.set_current(1, 0.8) == ":SOUR1:CURR 0.8"
    assert rigol.set_output(2, True) == ":OUTP CH2,ON"
    assert rigol.set_output(2, False) == ":OUTP CH2,OFF"
    assert rigol.query_output(2) == ":OUTP? CH2"
    assert rigol.measure_voltage(2) == ":MEAS:VOLT? CH2"
    assert rigol.measure_current(1) == ":MEAS:CURR? CH1"
    assert rigol.parse_output("ON") is True and rigol.parse_output("OFF") is False
    assert hmp.select(3) == ["INST:NSEL 3"]
    assert hmp.set_voltage(3, 13.8) == "VOLT 13.8"
    assert hmp.set_output(3, True) == "OUTP ON"
    assert hmp.measure_current(3) == "MEAS:CURR?"
    assert keysight.set_voltage(2, 12.25) == "VOLT 12.25,(@2)"
    assert keysight.set_output(2, False) == "OUTP OFF,(@2)"
    assert keysight.measure_voltage(2) == "MEAS:VOLT? (@2)"
    assert generic.set_current(1, 0.001) == "CURR 0.001"
    with pytest.raises(ValueError):
        generic.parse_output("2")


def test_generic_dialect_refuses_a_second_channel() -> None:
    with pytest.raises(BenchConfigError, match="single-output"):
        ScpiPowerSupply(_psu_cfg(_free_port(), dialect="scpi", channel=2))


def test_dropout_runs_from_another_thread_while_measuring(supply: tuple[SupplyModel, int],
                                                          psu: ScpiPowerSupply) -> None:
    """Fault injectors cut power from a timer thread while the test keeps using the supply."""
    psu.power_on()
    cutter = threading.Thread(target=psu.dropout, args=(0.1,))
    cutter.start()
    seen = set()
    while cutter.is_alive():
        seen.add(round(psu.measure_voltage(), 3))
    cutter.join()
    assert seen <= {0.0, 12.0} and 0.0 in seen
    assert psu.is_on()


# --------------------------------------------------------------------------- battery emulator
@pytest.fixture
def battery() -> Iterator[tuple[BatteryEmulatorModel, ScpiBatteryEmulator]]:
    model = BatteryEmulatorModel()
    server = ScpiServer(model)
    port = server.start()
    driver = ScpiBatteryEmulator(LoadConfig(resource=_resource(port), max_current=100.0, timeout_ms=1000))
    yield model, driver
    driver.close()
    server.stop()


def test_battery_emulator_set_and_get(battery: tuple[BatteryEmulatorModel, ScpiBatteryEmulator]) -> None:
    model, load = battery
    assert load.identity() == contract.LOAD_IDN_SIM
    assert isinstance(load, BatteryEmulator)
    load.set_pack_current(-40.0)
    load.set_temperature(30.0)
    load.set_temperature(45.5, channel=3)
    load.set_cell_voltage(4.1, cell=12)
    assert model.pack_current() == pytest.approx(-40.0)
    assert model.temperatures() == [30.0, 30.0, 45.5, 30.0, 30.0, 30.0, 30.0, 30.0]
    assert model.cell_voltages()[-1] == pytest.approx(4.1) and model.cell_voltages()[0] == pytest.approx(3.7)
    assert load.pack_current() == pytest.approx(-40.0)
    assert load.temperatures()[2] == pytest.approx(45.5)
    load.safe_state()
    assert model.pack_current() == 0.0
    assert model.temperatures() == [25.0] * contract.N_TEMPS
    assert model.cell_voltages() == [3.7] * contract.N_CELLS


def test_battery_emulator_limits(battery: tuple[BatteryEmulatorModel, ScpiBatteryEmulator]) -> None:
    model, load = battery
    model.clear_received()
    with pytest.raises(LimitViolation, match=r"-150 A exceeds the bench limit load\.max_current = 100 A"):
        load.set_pack_current(-150.0)
    with pytest.raises(LimitViolation, match="temperature channel 9 is outside 1..8"):
        load.set_temperature(20.0, channel=9)
    with pytest.raises(LimitViolation, match="cell 0 is outside 1..12"):
        load.set_cell_voltage(3.0, cell=0)
    assert model.received() == []
    with pytest.raises(InstrumentError, match='-222,"Data out of range'):
        load.set_temperature(200.0, channel=1)  # the instrument's own range refuses it
    assert model.temperatures()[0] == 25.0


def test_battery_emulator_raw_commands(visa: pyvisa.ResourceManager) -> None:
    model = BatteryEmulatorModel()
    with ScpiServer(model) as server:
        assert server.port is not None
        raw = _open_raw(visa, server.port)
        raw.write("CURR 12.5;TEMP 40,(@1,2);CELL:VOLT:ALL 3.9")
        assert raw.query("CURR?;TEMP? (@1:3)") == "+1.25000000E+01;+4.00000000E+01,+4.00000000E+01,+2.50000000E+01"
        raw.write("TEMP 40")
        assert raw.query("SYST:ERR?").startswith('-109,"Missing parameter')
        raw.write("CELL:VOLT 3.5,(@13)")
        assert raw.query("SYST:ERR?").startswith('-222,"Data out of range')
    assert model.cell_voltages() == [3.9] * contract.N_CELLS


# --------------------------------------------------------------------------- every dialect against its own emulator
from hil.sim.instruments import (  # noqa: E402 - grouped with the tests that use them
    BATTERY_MODELS, SUPPLY_MODELS, HmpModel, KeysightEL30000Model, RigolDP800Model)

#: (dialect, channel, commands only that dialect's emulator takes - proof the driver spoke it)
_SUPPLY_DIALECTS = [
    ("keysight_e36300", 2, ("VOLT 12,(@2)", "OUTP ON,(@2)")),
    ("rigol_dp800", 2, (":SOUR2:VOLT 12", ":OUTP CH2,ON")),
    ("rs_hmp", 2, ("INST:NSEL 2", "VOLT 12", "OUTP ON")),
    ("scpi", 1, ("VOLT 12", "OUTP ON")),
]


@pytest.fixture(params=_SUPPLY_DIALECTS, ids=[d[0] for d in _SUPPLY_DIALECTS])
def dialect_supply(request: pytest.FixtureRequest) -> Iterator[tuple[SupplyModel, ScpiPowerSupply, int, tuple[str, ...]]]:
    dialect, channel, spoken = request.param
    model = SUPPLY_MODELS[dialect]()
    model.set_load(channel, _board_load)
    server = ScpiServer(model)
    port = server.start()
    driver = ScpiPowerSupply(_psu_cfg(port, dialect=dialect, channel=channel))
    yield model, driver, channel, spoken
    driver.close()
    server.stop()


def test_each_supply_dialect_drives_its_own_emulator_over_tcp(dialect_supply) -> None:
    model, psu, ch, spoken = dialect_supply
    assert isinstance(psu, PowerSupply)
    psu.power_on()
    assert model.is_on(ch) and model.voltage_setpoint(ch) == pytest.approx(12.0)
    assert model.current_limit(ch) == pytest.approx(0.8)
    assert psu.measure_voltage() == pytest.approx(12.0) and psu.measure_current() == pytest.approx(BOARD_AMPS)
    heard: list[float] = []
    model.add_listener(ch, heard.append)
    psu.dip(5.0, 0.0)
    psu.power_cycle(0.0)
    assert heard == [5.0, 12.0, 0.0, 12.0]
    with pytest.raises(LimitViolation):
        psu.set_voltage(17.0)  # beyond psu.limits: never sent
    psu.safe_state()
    assert not model.is_on(ch) and not psu.is_on()
    received = model.received()
    for command in spoken:
        assert command in received, f"{command!r} not among {received[-20:]}"
    assert model.next_error().startswith("+0"), "the driver left an error in the queue"


def test_other_dialects_are_refused_by_an_emulator_of_another_family() -> None:
    """The emulators are strict: a Rigol does not take Keysight channel lists, an HMP no channel lists at all."""
    rigol, hmp = RigolDP800Model(), HmpModel()
    rigol.execute("VOLT 12,(@2)")
    assert rigol.next_error().startswith("-108")
    hmp.execute("OUTP ON,(@2)")
    assert hmp.next_error().startswith("-108")
    hmp.execute(":SOUR2:VOLT 3")
    assert hmp.next_error().startswith("-113")


def test_hmp_general_output_gates_every_channel() -> None:
    hmp = HmpModel()
    assert hmp.execute("INST OUT2;VOLT 12;OUTP:SEL ON;OUTP?") == "0"  # activated, general output still off
    assert hmp.execute("OUTP:GEN ON;OUTP?;MEAS:VOLT?") == "1;+1.20000000E+01"
    assert hmp.execute("OUTP:GEN OFF;MEAS:VOLT?") == "+0.00000000E+00"


@pytest.mark.parametrize("dialect", ["hil_sim", "keysight_el30000"])
def test_each_battery_emulator_dialect_drives_its_own_emulator_over_tcp(dialect: str) -> None:
    model = BATTERY_MODELS[dialect]()
    with ScpiServer(model) as server:
        cfg = LoadConfig(resource=_resource(server.port or 0), dialect=dialect, max_current=50.0)
        with ScpiBatteryEmulator(cfg) as load:
            assert isinstance(load, BatteryEmulator)
            load.set_pack_current(-40.0)  # driving: 40 A discharge
            assert model.pack_current() == pytest.approx(-40.0) and load.pack_current() == pytest.approx(-40.0)
            load.safe_state()
            assert model.pack_current() == 0.0
            with pytest.raises(LimitViolation):
                load.set_pack_current(-60.0)  # beyond load.max_current
            if dialect == "keysight_el30000":
                assert {"FUNC CURR", "CURR 40", "INP ON", "INP OFF"} <= set(model.received())
                with pytest.raises(LimitViolation, match="only sinks"):
                    load.set_pack_current(5.0)
                with pytest.raises(InstrumentError, match="has no temperature"):
                    load.set_temperature(40.0)
            else:
                load.set_pack_current(5.0)
                load.set_temperature(40.0, 3)
                load.set_cell_voltage(3.9)
                assert model.temperatures()[2] == 40.0 and model.cell_voltages() == [3.9] * model.n_cells
    assert model.next_error().startswith("+0")


def test_el30000_emulator_is_strict() -> None:
    el = KeysightEL30000Model()
    assert el.execute("*IDN?").startswith("Keysight Technologies,EL34143A")
    el.execute("CURR 61")
    assert el.next_error().startswith("-222")
    el.execute("CURR 5,(@2)")
    assert el.next_error().startswith("-222")
    el.execute("CELL:VOLT:ALL 3.7")
    assert el.next_error().startswith("-113")
    assert el.execute("FUNC CURR;CURR 5;INP ON;MEAS:CURR?;INP?") == "+5.00000000E+00;1"
    assert el.pack_current() == -5.0


def test_supply_monitor_samples_go_to_its_csv_not_line_by_line_into_the_log(psu: ScpiPowerSupply, tmp_path: Path) -> None:
    """The cut monitor's 50 Hz samples are its CSV's; the supply log keeps the settings and the test's own readings."""
    from hil.faults.power import SupplyMonitor

    psu.power_on()
    with SupplyMonitor(psu, tmp_path / "supply-samples.csv") as monitor:
        psu.measure_voltage()  # the test's own reading, from this thread: logged
        time.sleep(0.3)
    assert monitor.samples >= 5
    assert len((tmp_path / "supply-samples.csv").read_text().splitlines()) == monitor.samples + 1
    log = (tmp_path / "supply.log").read_text()
    assert "OUTP ON" in log and log.count("measure voltage") == 1, log
    measured = [e for e in psu.events if e.kind == "measure" and e.name == "voltage"]
    assert len(measured) == monitor.samples + 1  # still events (reports read them)


def test_closing_one_bench_supply_leaves_another_bench_supply_working(tmp_path: Path) -> None:
    """pyvisa shares one resource manager per VISA library in a process: a driver that closed it on its
    own close took every other bench's session with it (the virtual fleet: "Invalid session handle")."""
    servers, drivers = [], []
    try:
        for i in range(2):
            model = SupplyModel()
            model.set_load(2, _board_load)
            server = ScpiServer(model)
            servers.append(server)
            drivers.append(ScpiPowerSupply(_psu_cfg(server.start()), log_path=tmp_path / f"supply-{i}.log"))
        drivers[0].close()
        drivers[1].set_voltage(11.0)
        assert drivers[1].identity() == contract.PSU_IDN_SIM
    finally:
        for d in drivers[1:]:
            d.close()
        for s in servers:
            s.stop()
