"""The emulated instruments as their manuals say, seen by clients we did not write.

- every emulator (four supply families, two battery emulators) answers the IEEE 488.2 mandatory
  common commands with the status-register semantics of the standard, over TCP with pyvisa;
- each supply dialect answers the commands of its family's programming guide a bench uses
  (protection, steps, MIN|MAX queries, the answer formats of `APPL?` and `MEAS:ALL?`), and an
  unknown command queues -113 and sets the ESR's command-error bit;
- pymeasure's `KeysightE36312A` and `HMP4040` run every member they define (enumerated from the
  classes, so a new member in a pymeasure release is noticed) against the emulators, with the
  error queue read after each and found empty; what a member changes is read back;
- our own supply driver reads the error queue after every write, channel selections included.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable, Iterator

import pymeasure
import pytest
import pyvisa
from pymeasure.instruments.generic_types import SCPIMixin
from pymeasure.instruments.keysight import KeysightE36312A
from pymeasure.instruments.keysight.keysightE36312A import VoltageChannel
from pymeasure.instruments.rohdeschwarz.hmp import HMP4040

from hil.bench.config import PsuConfig, PsuLimits
from hil.drivers.psu import ScpiPowerSupply
from hil.errors import InstrumentError
from hil.sim.instruments import (BATTERY_MODELS, SUPPLY_MODELS, ChannelRange, GenericSupplyModel, HmpModel,
                                 RigolDP800Model, SupplyModel)
from hil.sim.scpi import QUERY_INTERRUPTED, ScpiError, ScpiInstrument, ScpiServer

BOARD_AMPS = 0.15
EMULATORS: dict[str, Callable[[], ScpiInstrument]] = {
    **{f"supply-{name}": make for name, make in SUPPLY_MODELS.items()},
    **{f"battery-{name}": make for name, make in BATTERY_MODELS.items()},
}
# IEEE 488.2 bits (written out from the standard, not imported from the emulator).
OPC, QYE, DDE, EXE, CME, PON = 0x01, 0x04, 0x08, 0x10, 0x20, 0x80
EAV, MAV, ESB, MSS = 0x04, 0x10, 0x20, 0x40


def _board(volts: float) -> float:
    return BOARD_AMPS if volts >= 8.0 else 0.0


@pytest.fixture
def visa() -> Iterator[pyvisa.ResourceManager]:
    rm = pyvisa.ResourceManager("@py")
    yield rm
    rm.close()


def _open(rm: pyvisa.ResourceManager, server: ScpiServer) -> Any:
    return rm.open_resource(f"TCPIP0::127.0.0.1::{server.port}::SOCKET", read_termination="\n",
                            write_termination="\n", timeout=1000)


def _errors(inst: Any) -> list[str]:
    """Drain SYST:ERR? over the wire."""
    found = []
    for _ in range(40):
        entry = inst.query("SYST:ERR?")
        if entry.split(",")[0].strip() in ("0", "+0", "-0"):
            return found
        found.append(entry)
    raise AssertionError(f"error queue never empties: {found}")


# ------------------------------------------------------------------ IEEE 488.2, every emulator
@pytest.mark.parametrize("kind", list(EMULATORS))
def test_every_emulator_answers_the_ieee_488_2_common_commands(kind: str, visa: pyvisa.ResourceManager) -> None:
    model = EMULATORS[kind]()
    with ScpiServer(model) as server:
        inst = _open(visa, server)
        ident = inst.query("*IDN?").split(",")
        assert len(ident) == 4 and all(ident), ident  # manufacturer, model, serial, firmware
        assert int(inst.query("*ESR?")) == PON, "power-on: PON set, nothing else"
        assert int(inst.query("*ESR?")) == 0, "*ESR? clears the register it reads"
        assert int(inst.query("*STB?")) == 0 and int(inst.query("*TST?")) == 0 and inst.query("*OPC?") == "1"
        inst.write("*ESE 60")  # CME, EXE, DDE, QYE
        inst.write("*SRE 36")  # ESB and EAV
        assert int(inst.query("*ESE?")) == 60 and int(inst.query("*SRE?")) == 36
        inst.write("*SRE 255")
        assert int(inst.query("*SRE?")) == 255 & ~MSS, "bit 6 of the SRE cannot be set"
        inst.write("*SRE 36")
        inst.write("*OPC;*WAI")
        assert int(inst.query("*ESR?")) == OPC
        # an unknown command: -113 queued, command-error bit, error-queue and summary bits in the status byte
        inst.write("FOO:BAR 1")
        stb = int(inst.query("*STB?"))
        assert stb & EAV and stb & ESB and stb & MSS, f"*STB? {stb} after -113"
        assert int(inst.query("*STB?")) == stb, "*STB? reads without clearing"
        assert int(inst.query("*ESR?")) == CME
        assert [e.split(",")[0] for e in _errors(inst)] == ["-113"]
        # an execution error (-222): EXE
        inst.write("*ESE 300")
        assert int(inst.query("*ESR?")) == EXE
        assert [e.split(",")[0] for e in _errors(inst)] == ["-222"]
        assert int(inst.query("*ESE?")) == 60, "a refused *ESE leaves the register"
        # the error queue overflows: the last entry -350, device-dependent error
        for n in range(25):
            inst.write(f"NOPE{n}")
        assert int(inst.query("*ESR?")) == CME | DDE
        queued = _errors(inst)
        assert len(queued) == 20 and queued[-1].startswith("-350"), queued
        # message available: an answer waits in the output queue when *STB? runs
        idn_and_stb = inst.query("*IDN?;*STB?").rsplit(";", 1)
        assert int(idn_and_stb[1]) & MAV and not int(inst.query("*STB?")) & MAV
        # *CLS: ESR and queue cleared, enables kept; *RST touches no status register
        inst.write("BAD")
        inst.write("*CLS")
        assert int(inst.query("*STB?")) == 0 and int(inst.query("*ESR?")) == 0 and _errors(inst) == []
        inst.write("BAD")
        inst.write("*RST")
        assert int(inst.query("*ESR?")) == CME and int(inst.query("*ESE?")) == 60 and int(inst.query("*SRE?")) == 36
        assert _errors(inst)[0].startswith("-113")
        assert inst.query("*OPT?") is not None
        inst.close()


def test_error_classes_set_their_esr_bits() -> None:
    """Query errors (-4xx) have no source over a raw socket (answers go out as the message ends); their bit is
    still the standard's."""
    model = SupplyModel()
    model.read_event_status()
    for error, bit in ((QUERY_INTERRUPTED, QYE), ((-100, "Command error"), CME), ((-200, "Execution error"), EXE),
                       ((-300, "Device-specific error"), DDE), ((101, "a device's own"), DDE)):
        model.push_error(ScpiError(error))
        assert model.read_event_status() == bit, error
    model.clear_errors()


# ------------------------------------------------------------------ the families' own commands
def test_keysight_e36300_protection_steps_and_limits() -> None:
    ks = SupplyModel()
    ks.set_load(2, _board)
    run = ks.execute
    assert run("VOLT? MIN,(@2);VOLT? MAX,(@2);CURR? MAX,(@1)") == "+0.00000000E+00;+2.50000000E+01;+5.00000000E+00"
    run("VOLT 12,(@2);VOLT:STEP 0.5,(@2);VOLT UP,(@2)")
    assert ks.voltage_setpoint(2) == 12.5
    run("VOLT DOWN,(@2);VOLT DOWN,(@2)")
    assert ks.voltage_setpoint(2) == 11.5 and run("VOLT:STEP? (@2)") == "+5.00000000E-01"
    run("CURR 0.5,(@2);CURR:STEP 0.1,(@2);CURR UP,(@2)")
    assert ks.current_limit(2) == pytest.approx(0.6)
    # OVP trips and latches; OUTP ON is refused until OUTP:PROT:CLE, which restores the output
    run("VOLT:PROT 14,(@2);OUTP ON,(@2)")
    assert run("VOLT:PROT? (@2)") == "+1.40000000E+01" and ks.measure_voltage(2) == 11.5
    run("VOLT 15,(@2)")
    assert run("VOLT:PROT:TRIP? (@2);OUTP? (@2)") == "1;0" and ks.measure_voltage(2) == 0.0
    run("OUTP ON,(@2)")
    assert ks.next_error().startswith("-221")
    run("VOLT 12,(@2);OUTP:PROT:CLE (@2)")
    assert run("VOLT:PROT:TRIP? (@2);OUTP? (@2)") == "0;1" and ks.measure_voltage(2) == 12.0
    # OCP: trips when the output goes into current limit
    run("CURR:PROT:STAT ON,(@2)")
    assert run("CURR:PROT:STAT? (@2)") == "1"
    run("CURR 0.1,(@2)")
    assert run("CURR:PROT:TRIP? (@2);OUTP? (@2)") == "1;0"
    run("CURR 0.8,(@2);CURR:PROT:CLE (@2)")
    assert run("OUTP? (@2)") == "1" and ks.next_error().startswith("+0")
    # a step beyond the range is refused and changes nothing
    run("VOLT 25,(@2);VOLT UP,(@2)")
    assert ks.next_error().startswith("-222") and ks.voltage_setpoint(2) == 25.0


def test_rigol_dp800_answers_in_its_own_formats() -> None:
    rigol = RigolDP800Model()
    rigol.set_load(1, _board)
    run = rigol.execute
    run(":APPL CH1,5,1")
    assert run(":APPL? CH1") == "CH1:30V/3A,5.000,1.000"
    assert run(":APPL? CH1,VOLT;:APPL? CH1,CURR") == "5.000;1.000"
    run(":APPL 12,0.5")  # the selected channel (CH1, selected by :APPL CH1)
    run(":OUTP CH1,ON")
    assert run(":MEAS:ALL? CH1") == "12.000,0.150,1.800"
    assert run(":MEAS:POWE? CH1;:MEAS? CH1;:MEAS:CURR? CH1") == "1.800;12.000;0.150"
    assert run(":SOUR1:VOLT? MAX;:SOUR1:CURR? MIN") == "30.000;0.000"
    run(":SOUR1:VOLT:STEP 0.25;:SOUR1:VOLT UP")
    assert rigol.voltage_setpoint(1) == 12.25
    # OVP: off after *RST; :OUTP:OVP* and :SOURn:VOLT:PROT* are the same protection
    assert run(":OUTP:OVP? CH1;:OUTP:OVP:VAL? CH1") == "OFF;33.000"
    run(":OUTP:OVP:VAL CH1,13;:OUTP:OVP CH1,ON")
    assert run(":SOUR1:VOLT:PROT?;:SOUR1:VOLT:PROT:STAT?") == "13.000;ON"
    run(":SOUR1:VOLT 14")
    assert run(":OUTP:OVP:QUES? CH1;:OUTP? CH1") == "YES;OFF"
    run(":OUTP:OVP:CLEAR CH1;:SOUR1:VOLT 12")
    assert run(":OUTP:OVP:QUES? CH1;:OUTP? CH1") == "NO;OFF", "a Rigol clear leaves the output off"
    run(":OUTP CH1,ON;:OUTP:OCP:VAL CH1,0.1;:OUTP:OCP CH1,ON")
    assert run(":OUTP:OCP:QUES? CH1;:OUTP:OCP:VAL? CH1,MAX") == "YES;3.300"
    assert rigol.next_error().startswith("+0")


def test_hmp_answers_its_manuals_commands() -> None:
    hmp = HmpModel()
    hmp.set_load(2, _board)
    run = hmp.execute
    run("INST OUT2;APPL 12,1;OUTP ON")
    assert run("VOLT? MIN;VOLT? MAX;CURR? MAX") == "+0.00000000E+00;+3.20000000E+01;+1.00000000E+01"
    run("VOLT:STEP 0.5;VOLT UP")
    assert hmp.voltage_setpoint(2) == 12.5 and hmp.measure_voltage(2) == 12.5
    run("VOLT DOWN;CURR:STEP 0.2;CURR DOWN")
    assert hmp.voltage_setpoint(2) == 12.0 and hmp.current_limit(2) == pytest.approx(0.8)
    run("VOLT:PROT 13")
    assert run("VOLT:PROT?;VOLT:PROT? MAX;VOLT:PROT:TRIP?") == "+1.30000000E+01;+3.52000000E+01;0"
    run("VOLT 13.5")
    assert run("VOLT:PROT:TRIP?;OUTP:SEL?") == "1;0" and hmp.measure_voltage(2) == 0.0
    run("VOLT 12;VOLT:PROT:CLE;OUTP:SEL ON")
    assert hmp.measure_voltage(2) == 12.0
    run("FUSE ON;CURR 0.1")
    assert run("FUSE?;FUSE:TRIP?") == "1;1" and hmp.measure_voltage(2) == 0.0
    run("SYST:REM;SYST:BEEP")
    assert hmp.remote == "REM" and hmp.beeps == 1
    assert hmp.next_error().startswith("+0")


def test_hmp_sequence_plays_on_the_output() -> None:
    hmp = HmpModel()
    heard: list[float] = []
    hmp.add_listener(1, heard.append)  # every change of the output voltage, in order
    run = hmp.execute
    run("INST OUT1;ARB:DATA 5,1,0.06,7,1,0.06;ARB:REP 1;ARB:TRAN 1;OUTP ON;ARB:STAR 1")
    deadline = time.monotonic() + 10.0
    while hmp.sequence_running(1):
        assert time.monotonic() < deadline, "a 0.12 s sequence still running after 10 s"
        time.sleep(0.01)
    assert heard == [5.0, 7.0], heard
    run("ARB:REP 0;ARB:TRAN 1;ARB:STAR 1")
    assert hmp.sequence_running(1), "0 repetitions: endless"
    run("ARB:STOP 1")
    assert not hmp.sequence_running(1) and hmp.next_error().startswith("+0")


def test_generic_supply_takes_appl_and_unknown_headers_queue_113() -> None:
    generic = GenericSupplyModel()
    generic.execute("APPL 10,1")
    assert (generic.voltage_setpoint(1), generic.current_limit(1)) == (10.0, 1.0)
    assert generic.execute("APPL?") == "+1.00000000E+01,+1.00000000E+00"
    assert generic.execute("VOLT:NOPE?") is None
    assert generic.next_error() == '-113,"Undefined header; VOLT:NOPE?"'
    assert generic.read_event_status() & CME


# ------------------------------------------------------------------ pymeasure: every member
class Walk:
    """Exercise pymeasure members one by one; after each, the instrument's error queue must be empty."""

    def __init__(self, inst: Any) -> None:
        self.inst = inst
        self.read: set[str] = set()
        self.written: set[str] = set()
        self.called: set[str] = set()

    def _clean(self, what: str) -> None:
        errors = self.inst.check_errors()  # pymeasure's own SYST:ERR? loop
        assert errors == [], f"{what}: the instrument queued {errors}"

    def get(self, owner: Any, name: str, *, prefix: str = "") -> Any:
        value = getattr(owner, name)
        self.read.add(name)
        self._clean(f"{prefix}{name} (read)")
        return value

    def set(self, owner: Any, name: str, value: Any, *, prefix: str = "") -> None:
        setattr(owner, name, value)
        self.written.add(name)
        self._clean(f"{prefix}{name} = {value!r}")

    def call(self, owner: Any, name: str, *args: Any) -> Any:
        result = getattr(owner, name)(*args)
        self.called.add(name)
        self._clean(f"{name}{args}")
        return result

    def check_covered(self, *classes: type) -> None:
        """Every member the classes define was exercised: properties read / written as they allow, methods called."""
        missing = []
        for cls in classes:
            for name, member in vars(cls).items():
                if name.startswith("_"):
                    continue
                if isinstance(member, property):
                    params = inspect.signature(member.fget).parameters  # type: ignore[arg-type]
                    if params["get_command"].default is not None and name not in self.read:
                        missing.append(f"{cls.__name__}.{name} (read)")
                    setter = inspect.signature(member.fset).parameters  # type: ignore[arg-type]
                    if setter["set_command"].default is not None and name not in self.written:
                        missing.append(f"{cls.__name__}.{name} (write)")
                elif callable(member) and name not in self.called:
                    missing.append(f"{cls.__name__}.{name}()")
        assert not missing, f"pymeasure {pymeasure.__version__} members not exercised: {missing}"


def _scpi_mixin(walk: Walk, inst: Any, idn: str) -> None:
    assert walk.get(inst, "id") == idn
    assert walk.get(inst, "complete") == "1"
    assert int(walk.get(inst, "status")) == 0
    assert walk.get(inst, "options") == "0"
    assert walk.get(inst, "next_error")[0] == 0
    assert walk.call(inst, "check_errors") == []
    walk.call(inst, "clear")


def test_pymeasure_hmp4040_runs_every_member_against_the_emulator() -> None:
    model = HmpModel()
    model.set_load(3, _board)
    with ScpiServer(model) as server:
        hmp = HMP4040(f"TCPIP0::127.0.0.1::{server.port}::SOCKET", visa_library="@py", read_termination="\n",
                      write_termination="\n", timeout=1000)
        w = Walk(hmp)
        _scpi_mixin(w, hmp, model.idn)
        w.set(hmp, "control_method", "REM")
        assert model.remote == "REM"
        assert w.get(hmp, "version") == 1999.0
        w.call(hmp, "beep")
        assert model.beeps == 1
        w.set(hmp, "selected_channel", 3)
        assert w.get(hmp, "selected_channel") == 3
        w.set(hmp, "voltage", 12)
        assert w.get(hmp, "voltage") == 12.0
        assert (w.get(hmp, "min_voltage"), w.get(hmp, "max_voltage")) == (0.0, 32.0)
        w.set(hmp, "voltage_step", 0.5)
        assert w.get(hmp, "voltage_step") == 0.5
        w.call(hmp, "step_voltage_up")
        assert hmp.voltage == 12.5, "VOLT UP must move the setpoint by one step"
        w.call(hmp, "step_voltage_down")
        assert hmp.voltage == 12.0
        w.call(hmp, "voltage_to_max")
        assert hmp.voltage == 32.0
        w.call(hmp, "voltage_to_min")
        assert hmp.voltage == 0.0
        w.set(hmp, "current", 1)
        assert w.get(hmp, "current") == 1.0
        assert (w.get(hmp, "min_current"), w.get(hmp, "max_current")) == (0.0, 10.0)
        w.set(hmp, "current_step", 0.25)
        assert w.get(hmp, "current_step") == 0.25
        w.call(hmp, "step_current_up")
        assert hmp.current == 1.25
        w.call(hmp, "step_current_down")
        assert hmp.current == 1.0
        w.call(hmp, "current_to_max")
        assert hmp.current == 10.0
        w.call(hmp, "current_to_min")
        assert hmp.current == 0.0
        w.set(hmp, "voltage_and_current", (12, 0.5))
        assert w.get(hmp, "voltage_and_current") == [12.0, 0.5]
        w.set(hmp, "output_enabled", True)
        assert w.get(hmp, "output_enabled") is True
        assert w.get(hmp, "measured_voltage") == 0.0, "a channel not activated delivers nothing"
        w.set(hmp, "selected_channel_active", True)
        assert w.get(hmp, "selected_channel_active") is True
        assert w.get(hmp, "measured_voltage") == 12.0 and w.get(hmp, "measured_current") == BOARD_AMPS
        w.call(hmp, "set_channel_state", 2, True)
        assert hmp.selected_channel == 3 and model.is_on(2), "set_channel_state keeps the selection"
        w.set(hmp, "sequence", [5, 0.5, 0.06, 7, 0.5, 0.06])
        w.call(hmp, "save_sequence", 1)
        w.call(hmp, "clear_sequence", 3)
        assert model.execute("ARB:DATA?") == ""
        w.call(hmp, "load_sequence", 1)
        assert model.execute("ARB:DATA?") == "5,0.5,0.06,7,0.5,0.06"
        w.set(hmp, "repetitions", 0)  # endless: the sequence runs until stopped
        assert w.get(hmp, "repetitions") == 0
        w.call(hmp, "transfer_sequence", 3)
        w.call(hmp, "start_sequence", 3)
        assert model.sequence_running(3)
        w.call(hmp, "stop_sequence", 3)
        assert not model.sequence_running(3)
        w.call(hmp, "reset")
        assert not model.is_on(3) and model.voltage_setpoint(3) == 0.0
        w.check_covered(SCPIMixin, HMP4040)
        hmp.adapter.close()


def test_pymeasure_keysight_e36312a_runs_every_member_against_the_emulator() -> None:
    model = SupplyModel()
    for ch in (1, 2, 3):
        model.set_load(ch, _board)
    with ScpiServer(model) as server:
        supply = KeysightE36312A(f"TCPIP0::127.0.0.1::{server.port}::SOCKET", visa_library="@py",
                                 read_termination="\n", write_termination="\n", timeout=1000)
        w = Walk(supply)
        _scpi_mixin(w, supply, model.idn)
        for n, volts in ((1, 5.0), (2, 12.0), (3, 9.0)):
            ch = getattr(supply, f"ch_{n}")
            w.set(ch, "voltage_setpoint", volts, prefix=f"ch_{n}.")
            assert w.get(ch, "voltage_setpoint", prefix=f"ch_{n}.") == volts
            w.set(ch, "current_limit", 0.8, prefix=f"ch_{n}.")
            assert w.get(ch, "current_limit", prefix=f"ch_{n}.") == 0.8
            w.set(ch, "output_enabled", True, prefix=f"ch_{n}.")
            assert w.get(ch, "output_enabled", prefix=f"ch_{n}.") is True
            assert w.get(ch, "voltage", prefix=f"ch_{n}.") == volts
            assert w.get(ch, "current", prefix=f"ch_{n}.") == _board(volts)
            w.set(ch, "output_enabled", False, prefix=f"ch_{n}.")
            assert not model.is_on(n)
        w.call(supply, "reset")
        w.check_covered(SCPIMixin, VoltageChannel)
        assert {"ch_1", "ch_2", "ch_3"} == {k for k in vars(KeysightE36312A) if not k.startswith("_")}
        supply.adapter.close()


# ------------------------------------------------------------------ our own driver
def test_supply_driver_reads_the_error_queue_after_a_channel_selection() -> None:
    """An HMP-dialect supply whose channel selection is refused: the driver says so, never reads another channel."""

    class TwoChannelHmp(HmpModel):
        idn = "Rohde&Schwarz,HMP2020,100002,HW50020001/SW2.70"  # a model the driver knows no ranges of

        def __init__(self) -> None:
            super().__init__({1: ChannelRange(32.0, 10.0), 2: ChannelRange(32.0, 5.0)})

    model = TwoChannelHmp()
    with ScpiServer(model) as server:
        cfg = PsuConfig(resource=f"TCPIP0::127.0.0.1::{server.port}::SOCKET", dialect="rs_hmp", channel=3,
                        nominal_voltage=12.0, current_limit=0.8, limits=PsuLimits(max_voltage=16.0, max_current=1.0),
                        timeout_ms=1000)
        with ScpiPowerSupply(cfg) as psu:
            with pytest.raises(InstrumentError, match=r"INST:NSEL 3.*-222"):
                psu.is_on()
            with pytest.raises(InstrumentError, match=r"INST:NSEL 3.*-222"):
                psu.set_voltage(12.0)
    assert not model.is_on(1) and model.voltage_setpoint(1) == 0.0, "nothing reached another channel"
