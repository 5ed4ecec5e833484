"""Emulated bench instruments: supplies of four families and two battery emulators.

Every one speaks SCPI through `hil.sim.scpi.ScpiServer` (IEEE 488.2 common commands and status
registers from `ScpiInstrument`); the board reads them through the thread-safe Python API
(`SupplyModel.add_listener`/`set_load`, `BatteryEmulatorModel.pack_current()` ...). What each
family answers, and what it does not: docs/instruments.md.
"""

from __future__ import annotations

import math
import threading
import types
from dataclasses import dataclass, replace
from typing import Callable, Mapping

from hil.bench import contract
from hil.sim.scpi import (
    DATA_OUT_OF_RANGE,
    ILLEGAL_PARAMETER_VALUE,
    MISSING_PARAMETER,
    PARAMETER_NOT_ALLOWED,
    SETTINGS_CONFLICT,
    ScpiCommand,
    ScpiError,
    ScpiInstrument,
    format_number,
    parse_bool,
    parse_channel_list,
    parse_number,
)

#: The board's load: amps drawn at a given output voltage.
LoadFn = Callable[[float], float]
#: Called with the channel's new output voltage whenever it changes.
VoltageListener = Callable[[float], None]

#: Protection levels reach 10 % beyond the programmable range (the reset level: protection never trips
#: at any setting the range allows until a lower level is programmed).
PROTECTION_HEADROOM = 1.1
#: Step sizes after *RST (VOLT:STEP, CURR:STEP).
DEFAULT_VOLTAGE_STEP_V = 1.0
DEFAULT_CURRENT_STEP_A = 0.1
_MIN_MAX = ("MIN", "MINIMUM", "MAX", "MAXIMUM")
_UP_DOWN = ("UP", "DOWN")


@dataclass(frozen=True)
class ChannelRange:
    """Programmable range of one supply output."""

    max_voltage: float
    max_current: float

    @property
    def max_ovp(self) -> float:
        return round(self.max_voltage * PROTECTION_HEADROOM, 3)

    @property
    def max_ocp(self) -> float:
        return round(self.max_current * PROTECTION_HEADROOM, 3)


#: Keysight E36312A: CH1 6 V / 5 A, CH2 and CH3 25 V / 1 A.
E36312A_RANGES: Mapping[int, ChannelRange] = types.MappingProxyType({
    1: ChannelRange(6.0, 5.0),
    2: ChannelRange(25.0, 1.0),
    3: ChannelRange(25.0, 1.0),
})


@dataclass(frozen=True)
class _Channel:
    voltage: float  # setpoint
    current: float  # current limit
    on: bool
    ovp: float = math.inf  # over-voltage protection level
    ovp_on: bool = True
    ocp: float | None = None  # over-current level; None: OCP trips when the output goes constant-current
    ocp_on: bool = False
    tripped: str = ""  # "OV" / "OC": protection latched, the output off until cleared
    volt_step: float = DEFAULT_VOLTAGE_STEP_V
    curr_step: float = DEFAULT_CURRENT_STEP_A


@dataclass(frozen=True)
class OutputState:
    """What one output delivers right now."""

    volts: float
    amps: float
    constant_current: bool


def solve_output(setting: _Channel, load: LoadFn | None) -> OutputState:
    """Output voltage and current of a channel driving `load`.

    Constant voltage unless the load would draw more than the limit; then the supply regulates
    the current and the voltage falls. The load is treated as resistive at the setpoint for
    that drop (V = Vset * Ilim / Idraw) - enough to make an over-current visible as a sag.
    """
    if not setting.on:
        return OutputState(0.0, 0.0, False)
    draw = max(load(setting.voltage), 0.0) if load else 0.0
    if draw <= setting.current:
        return OutputState(setting.voltage, draw, False)
    volts = setting.voltage * setting.current / draw
    amps = min(max(load(volts), 0.0) if load else 0.0, setting.current)
    return OutputState(volts, amps, True)


def _word(text: str) -> str:
    return text.strip().upper()


def _count(params: list[str], low: int, high: int, usage: str) -> None:
    """-109 with fewer than `low` parameters (or an empty first one), -108 with more than `high`."""
    if len(params) < low or (low and not params[0]):
        raise ScpiError(MISSING_PARAMETER, usage)
    if len(params) > high:
        raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params[high:]))


class SupplyModel(ScpiInstrument):
    """Keysight E36312A triple-output supply (E36300 series programming guide).

    Output on -> measured voltage = setpoint (less CC limiting), off -> 0 V; measured current is
    what the attached load draws. Over-voltage protection is always armed (level `VOLT:PROT`),
    over-current protection when `CURR:PROT:STAT ON` (it trips when the output goes into current
    limit); a trip switches the output off and latches until `OUTP:PROT:CLE`, which restores the
    output. Listeners hear every change of a channel's output voltage, in order, outside the state
    lock (the board treats below-brown-out as power loss).
    """

    idn = contract.PSU_IDN_SIM
    signed_nr1 = True  # Keysight answers `*ESR?` with `+0`
    #: OUTP:PROT:CLE (Keysight) restores the output as it was before the trip; other families leave it off.
    clear_restores_output = True

    def __init__(self, ranges: Mapping[int, ChannelRange] = E36312A_RANGES) -> None:
        self.ranges = dict(ranges)
        self._lock = threading.Lock()  # channel state
        # Held across a change and its notifications so listeners see changes in order;
        # re-entrant so a listener may itself change the supply.
        self._change_lock = threading.RLock()
        self._channels: dict[int, _Channel] = {}
        self._loads: dict[int, LoadFn] = {}
        self._listeners: dict[int, list[VoltageListener]] = {ch: [] for ch in self.ranges}
        self._notified: dict[int, float] = {ch: 0.0 for ch in self.ranges}
        self._selected = min(self.ranges)
        #: sim_only defect `supply_ignores_output_off`: OUTP OFF is acknowledged (OUTP? says 0) but the
        #: output stays live, as with a welded relay. Power-cut cases must notice from the DUT and MEAS:VOLT?.
        self.ignore_output_off = False
        self._reset_state()
        super().__init__()

    # ------------------------------------------------------------------ Python API (board, bench)
    def add_listener(self, channel: int, fn: VoltageListener) -> None:
        """Call `fn(volts)` on every change of `channel`'s output voltage."""
        self._check_channel(channel)
        with self._change_lock:
            self._listeners[channel].append(fn)

    def remove_listener(self, channel: int, fn: VoltageListener) -> None:
        """Stop calling `fn` for `channel`."""
        with self._change_lock:
            if fn in self._listeners.get(channel, []):
                self._listeners[channel].remove(fn)

    def set_load(self, channel: int, load: LoadFn | None) -> None:
        """Attach what `channel` powers: `load(volts) -> amps`."""
        self._check_channel(channel)
        with self._change_lock:
            with self._lock:
                if load is None:
                    self._loads.pop(channel, None)
                else:
                    self._loads[channel] = load
            self._protect(channel)
            self._notify(channel)

    def set_voltage(self, channel: int, volts: float) -> None:
        """Voltage setpoint; outside the channel's range -> ScpiError(-222), setting unchanged."""
        self._check_value(channel, volts, self.ranges[self._check_channel(channel)].max_voltage, "V")
        self._change(channel, voltage=volts)

    def set_current_limit(self, channel: int, amps: float) -> None:
        """Current limit; outside the channel's range -> ScpiError(-222), setting unchanged."""
        self._check_value(channel, amps, self.ranges[self._check_channel(channel)].max_current, "A")
        self._change(channel, current=amps)

    def set_output(self, channel: int, on: bool) -> None:
        """Output on or off; on while a protection is tripped -> ScpiError(-221), the output stays off."""
        self._check_channel(channel)
        if on and self.tripped(channel):
            raise ScpiError(SETTINGS_CONFLICT, f"CH{channel} {self.tripped(channel)} protection tripped; clear it first")
        self._change(channel, on=on)

    def power_on(self, channel: int, volts: float, amps: float) -> None:
        """Setpoint, current limit and output on in one change (`APPL` then `OUTP ON`)."""
        rng = self.ranges[self._check_channel(channel)]
        self._check_value(channel, volts, rng.max_voltage, "V")
        self._check_value(channel, amps, rng.max_current, "A")
        self._change(channel, voltage=volts, current=amps, on=True, tripped="")

    def voltage_setpoint(self, channel: int) -> float:
        """Programmed voltage."""
        return self._setting(channel).voltage

    def current_limit(self, channel: int) -> float:
        """Programmed current limit."""
        return self._setting(channel).current

    def is_on(self, channel: int) -> bool:
        """Output state."""
        return self._setting(channel).on

    def tripped(self, channel: int) -> str:
        """The latched protection of a channel: "OV", "OC" or "" (none)."""
        return self._setting(channel).tripped

    def output(self, channel: int) -> OutputState:
        """What the channel delivers now (the load callback runs outside the lock)."""
        with self._lock:
            setting = self._channels[self._check_channel(channel)]
            load = self._loads.get(channel)
        if self.ignore_output_off and not setting.on and setting.voltage > 0 and not setting.tripped:
            setting = replace(setting, on=True)
        return solve_output(setting, load)

    def measure_voltage(self, channel: int) -> float:
        """`MEAS:VOLT?`: output voltage."""
        return self.output(channel).volts

    def measure_current(self, channel: int) -> float:
        """`MEAS:CURR?`: what the load draws (at most the limit)."""
        return self.output(channel).amps

    def set_protection(self, channel: int, *, ovp: float | None = None, ovp_on: bool | None = None,
                       ocp: float | None = None, ocp_on: bool | None = None) -> None:
        """Protection levels and states (levels outside 0..110 % of the range -> ScpiError(-222))."""
        rng = self.ranges[self._check_channel(channel)]
        fields: dict[str, float | bool] = {}
        if ovp is not None:
            self._check_value(channel, ovp, rng.max_ovp, "V")
            fields["ovp"] = ovp
        if ocp is not None:
            self._check_value(channel, ocp, rng.max_ocp, "A")
            fields["ocp"] = ocp
        if ovp_on is not None:
            fields["ovp_on"] = ovp_on
        if ocp_on is not None:
            fields["ocp_on"] = ocp_on
        self._change(channel, **fields)

    def clear_protection(self, channel: int) -> None:
        """Unlatch a tripped protection (Keysight: the output comes back as it was; a persisting fault trips again)."""
        setting = self._setting(channel)
        if setting.tripped:
            self._change(channel, tripped="", on=self.clear_restores_output)

    def set_step(self, channel: int, *, volts: float | None = None, amps: float | None = None) -> None:
        """`VOLT:STEP` / `CURR:STEP` sizes (0..the range)."""
        rng = self.ranges[self._check_channel(channel)]
        if volts is not None:
            self._check_value(channel, volts, rng.max_voltage, "V")
            self._change(channel, volt_step=volts)
        if amps is not None:
            self._check_value(channel, amps, rng.max_current, "A")
            self._change(channel, curr_step=amps)

    def reset(self) -> None:
        """`*RST`: every output off and unlatched, 0 V, current limit at full range, protection and steps at
        their defaults, channel 1 selected."""
        with self._change_lock:
            self._reset_state()
            for ch in self.ranges:
                self._notify(ch)

    # ------------------------------------------------------------------ internals
    def _reset_channel(self, rng: ChannelRange) -> _Channel:
        """A channel after *RST (families differ in their protection defaults)."""
        return _Channel(0.0, rng.max_current, False, ovp=rng.max_ovp, ovp_on=True, ocp=None, ocp_on=False)

    def _reset_state(self) -> None:
        with self._lock:
            self._channels = {ch: self._reset_channel(rng) for ch, rng in self.ranges.items()}
            self._selected = min(self.ranges)

    def _setting(self, channel: int) -> _Channel:
        with self._lock:
            return self._channels[self._check_channel(channel)]

    def _check_channel(self, channel: int) -> int:
        if channel not in self.ranges:
            raise ScpiError(DATA_OUT_OF_RANGE, f"channel {channel} outside {min(self.ranges)}..{max(self.ranges)}")
        return channel

    @staticmethod
    def _check_value(channel: int, value: float, maximum: float, unit: str) -> None:
        if value != value or not 0.0 <= value <= maximum:
            raise ScpiError(DATA_OUT_OF_RANGE, f"{value:g} {unit} outside 0..{maximum:g} {unit} of CH{channel}")

    def _change(self, channel: int, **fields: float | bool | str | None) -> None:
        with self._change_lock:
            with self._lock:
                self._channels[channel] = replace(self._channels[channel], **fields)  # type: ignore[arg-type]
            self._protect(channel)
            self._notify(channel)

    def _protect(self, channel: int) -> None:
        """Trip a protection the output now violates: output off, latched (caller holds the change lock)."""
        with self._lock:
            setting = self._channels[channel]
            load = self._loads.get(channel)
        if not setting.on or setting.tripped:
            return
        out = solve_output(setting, load)
        over_current = out.constant_current if setting.ocp is None else out.amps > setting.ocp
        kind = "OV" if setting.ovp_on and out.volts > setting.ovp else "OC" if setting.ocp_on and over_current else ""
        if kind:
            with self._lock:
                self._channels[channel] = replace(self._channels[channel], on=False, tripped=kind)

    def _notify(self, channel: int) -> None:
        """Tell listeners if the output voltage changed (caller holds the change lock, not the state lock)."""
        volts = self.output(channel).volts
        if volts == self._notified[channel]:
            return
        self._notified[channel] = volts
        for fn in list(self._listeners[channel]):
            fn(volts)

    def _level(self, channel: int, text: str, what: str) -> float:
        """A voltage/current level parameter: a number, MIN|MAX|DEF, or UP|DOWN (one step from the setting)."""
        rng, setting = self.ranges[channel], self._setting(channel)
        maximum = rng.max_voltage if what == "volt" else rng.max_current
        word = _word(text)
        if word in _UP_DOWN:
            now, step = (setting.voltage, setting.volt_step) if what == "volt" else (setting.current, setting.curr_step)
            value = round(now + (step if word == "UP" else -step), 6)
            self._check_value(channel, value, maximum, "V" if what == "volt" else "A")
            return value
        return parse_number(text, minimum=0.0, maximum=maximum, default=0.0 if what == "volt" else maximum)

    def _set_level(self, channel: int, text: str, what: str) -> None:
        value = self._level(channel, text, what)
        (self.set_voltage if what == "volt" else self.set_current_limit)(channel, value)  # public: subclasses model quirks

    def _limit_answer(self, channel: int, what: str, word: str) -> float:
        """The value a `VOLT? MIN|MAX`-style query answers."""
        rng = self.ranges[channel]
        maximum = {"volt": rng.max_voltage, "curr": rng.max_current, "ovp": rng.max_ovp, "ocp": rng.max_ocp}[what]
        return 0.0 if word.startswith("MIN") else maximum

    # ------------------------------------------------------------------ SCPI (Keysight E36300)
    def commands(self) -> list[ScpiCommand]:
        level = "[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]"
        curr = "[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]"
        return [
            ScpiCommand(level, False, lambda p: self._ks_each(p, lambda ch, v: self._set_level(ch, v, "volt"))),
            ScpiCommand(level, True, self._ks_query(lambda ch: self.voltage_setpoint(ch), "volt")),
            ScpiCommand(curr, False, lambda p: self._ks_each(p, lambda ch, v: self._set_level(ch, v, "curr"))),
            ScpiCommand(curr, True, self._ks_query(lambda ch: self.current_limit(ch), "curr")),
            ScpiCommand("[SOURce:]VOLTage[:LEVel]:STEP[:INCRement]", False, lambda p: self._ks_each(
                p, lambda ch, v: self.set_step(ch, volts=self._step_value(ch, v, "volt")))),
            ScpiCommand("[SOURce:]VOLTage[:LEVel]:STEP[:INCRement]", True,
                        self._ks_query(lambda ch: self._setting(ch).volt_step)),
            ScpiCommand("[SOURce:]CURRent[:LEVel]:STEP[:INCRement]", False, lambda p: self._ks_each(
                p, lambda ch, v: self.set_step(ch, amps=self._step_value(ch, v, "curr")))),
            ScpiCommand("[SOURce:]CURRent[:LEVel]:STEP[:INCRement]", True,
                        self._ks_query(lambda ch: self._setting(ch).curr_step)),
            ScpiCommand("[SOURce:]VOLTage:PROTection[:LEVel]", False, lambda p: self._ks_each(
                p, lambda ch, v: self.set_protection(ch, ovp=parse_number(
                    v, minimum=0.0, maximum=self.ranges[ch].max_ovp, default=self.ranges[ch].max_ovp)))),
            ScpiCommand("[SOURce:]VOLTage:PROTection[:LEVel]", True, self._ks_query(lambda ch: self._setting(ch).ovp, "ovp")),
            ScpiCommand("[SOURce:]VOLTage:PROTection:TRIPped", True,
                        self._ks_flag(lambda ch: "1" if self.tripped(ch) == "OV" else "0")),
            ScpiCommand("[SOURce:]VOLTage:PROTection:CLEar", False, self._ks_flag(self._clear_kind("OV"))),
            ScpiCommand("[SOURce:]CURRent:PROTection:STATe", False,
                        lambda p: self._ks_each(p, lambda ch, v: self.set_protection(ch, ocp_on=parse_bool(v)))),
            ScpiCommand("[SOURce:]CURRent:PROTection:STATe", True,
                        self._ks_flag(lambda ch: "1" if self._setting(ch).ocp_on else "0")),
            ScpiCommand("[SOURce:]CURRent:PROTection:TRIPped", True,
                        self._ks_flag(lambda ch: "1" if self.tripped(ch) == "OC" else "0")),
            ScpiCommand("[SOURce:]CURRent:PROTection:CLEar", False, self._ks_flag(self._clear_kind("OC"))),
            ScpiCommand("OUTPut:PROTection:CLEar", False, self._ks_flag(self._clear_kind(""))),
            ScpiCommand("OUTPut[:STATe]", False, lambda p: self._ks_each(p, lambda ch, v: self.set_output(ch, parse_bool(v)))),
            ScpiCommand("OUTPut[:STATe]", True, self._ks_flag(lambda ch: "1" if self.is_on(ch) else "0")),
            ScpiCommand("MEASure[:SCALar]:VOLTage[:DC]", True, self._ks_flag(lambda ch: format_number(self.measure_voltage(ch)))),
            ScpiCommand("MEASure[:SCALar]:CURRent[:DC]", True, self._ks_flag(lambda ch: format_number(self.measure_current(ch)))),
            ScpiCommand("INSTrument:NSELect", False, self._scpi_nselect),
            ScpiCommand("INSTrument:NSELect", True, lambda params: self._no_params_query(params, str(self._selected))),
            ScpiCommand("INSTrument[:SELect]", False, self._scpi_select),
            ScpiCommand("INSTrument[:SELect]", True, lambda params: self._no_params_query(params, f"CH{self._selected}")),
            ScpiCommand("APPLy", False, self._scpi_apply),
            ScpiCommand("APPLy", True, self._scpi_apply_query),
        ]

    def _channels_of(self, params: list[str], index: int) -> list[int]:
        if len(params) > index:
            return parse_channel_list(params[index], min(self.ranges), max(self.ranges))
        return [self._selected]

    def _ks_each(self, params: list[str], apply: Callable[[int, str], None]) -> None:
        """`<value>[,(@list)]`: every channel checked before any changes, so an error changes nothing."""
        _count(params, 1, 2, "<value>[,(@list)]")
        channels = self._channels_of(params, 1)
        snapshot = {ch: self._setting(ch) for ch in channels}
        try:
            for ch in channels:
                apply(ch, params[0])
        except ScpiError:
            with self._change_lock:  # undo what the earlier channels took
                for ch, setting in snapshot.items():
                    with self._lock:
                        self._channels[ch] = setting
                    self._notify(ch)
            raise

    def _ks_query(self, fn: Callable[[int], float], limits: str | None = None) -> Callable[[list[str]], str]:
        """`<query>? [MIN|MAX][,(@list)]`: the value per channel, or the limit MIN/MAX names."""
        def handler(params: list[str]) -> str:
            word = _word(params[0]) if params else ""
            if limits is not None and word in _MIN_MAX:
                _count(params, 1, 2, "MIN|MAX[,(@list)]")
                return ",".join(format_number(self._limit_answer(ch, limits, word)) for ch in self._channels_of(params, 1))
            _count(params, 0, 1, "[(@list)]")
            return ",".join(format_number(fn(ch)) for ch in self._channels_of(params, 0))

        return handler

    def _ks_flag(self, fn: Callable[[int], str | None]) -> Callable[[list[str]], str | None]:
        """`<header> [(@list)]`: one answer (or action) per channel."""
        def handler(params: list[str]) -> str | None:
            _count(params, 0, 1, "[(@list)]")
            answers = [fn(ch) for ch in self._channels_of(params, 0)]
            return ",".join(a for a in answers if a is not None) if any(a is not None for a in answers) else None

        return handler

    def _clear_kind(self, kind: str) -> Callable[[int], None]:
        def clear(channel: int) -> None:
            if not kind or self.tripped(channel) == kind:
                self.clear_protection(channel)
        return clear

    def _step_value(self, channel: int, text: str, what: str) -> float:
        rng = self.ranges[channel]
        default = DEFAULT_VOLTAGE_STEP_V if what == "volt" else DEFAULT_CURRENT_STEP_A
        maximum = rng.max_voltage if what == "volt" else rng.max_current
        return parse_number(text, minimum=0.0, maximum=maximum, default=default)

    @staticmethod
    def _no_params_query(params: list[str], answer: str) -> str:
        if params:
            raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params))
        return answer

    @staticmethod
    def _no_param_action(params: list[str], action: Callable[[], None]) -> None:
        if params:
            raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params))
        action()

    def _scpi_nselect(self, params: list[str]) -> None:
        _count(params, 1, 1, "INST:NSEL n")
        channel = int(parse_number(params[0], minimum=min(self.ranges), maximum=max(self.ranges)))
        with self._lock:
            self._selected = channel

    def _channel_name(self, text: str) -> int:
        name = _word(text)
        if not name.startswith("CH") or not name[2:].isdigit():
            raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"{text!r} is not CH1..CH{max(self.ranges)}")
        return self._check_channel(int(name[2:]))

    def _scpi_select(self, params: list[str]) -> None:
        _count(params, 1, 1, "INST CHn")
        channel = self._channel_name(params[0])
        with self._lock:
            self._selected = channel

    def _scpi_apply(self, params: list[str]) -> None:
        _count(params, 2, 3, "APPL CHn,<volts>[,<amps>]")
        channel = self._channel_name(params[0])
        self._apply(channel, params[1], params[2] if len(params) == 3 else None)

    def _apply(self, channel: int, volts_text: str | None, amps_text: str | None) -> None:
        """Setpoint and limit in one change; both checked first (an error changes neither)."""
        rng = self.ranges[channel]
        volts = (parse_number(volts_text, minimum=0.0, maximum=rng.max_voltage, default=0.0)
                 if volts_text is not None else self.voltage_setpoint(channel))
        amps = (parse_number(amps_text, minimum=0.0, maximum=rng.max_current, default=rng.max_current)
                if amps_text is not None else self.current_limit(channel))
        self._change(channel, voltage=volts, current=amps)

    def _scpi_apply_query(self, params: list[str]) -> str:
        _count(params, 0, 1, "APPL? [CHn]")
        channel = self._channel_name(params[0]) if params else self._selected
        return f'"{format_number(self.voltage_setpoint(channel))},{format_number(self.current_limit(channel))}"'


# --------------------------------------------------------------------------- other supply dialects
#: Rigol DP832: CH1 and CH2 30 V / 3 A, CH3 5 V / 3 A (rated; the guide's settable range is 5-7 % wider).
DP832_RANGES: Mapping[int, ChannelRange] = types.MappingProxyType({
    1: ChannelRange(30.0, 3.0),
    2: ChannelRange(30.0, 3.0),
    3: ChannelRange(5.0, 3.0),
})
#: Rohde & Schwarz HMP4040: four outputs of 32 V / 10 A.
HMP4040_RANGES: Mapping[int, ChannelRange] = types.MappingProxyType({ch: ChannelRange(32.0, 10.0) for ch in range(1, 5)})
#: A generic single-output SCPI supply (dialect `scpi`).
GENERIC_RANGES: Mapping[int, ChannelRange] = types.MappingProxyType({1: ChannelRange(30.0, 5.0)})

RIGOL_DP832_IDN = "RIGOL TECHNOLOGIES,DP832,DP8SIM000001,00.01.16"
RS_HMP4040_IDN = "Rohde&Schwarz,HMP4040,100001,HW50020001/SW2.70"
GENERIC_PSU_IDN = "HIL-SIM,PSU-1,SIM-0001,1.0.0"


def _rigol(value: float, decimals: int = 3) -> str:
    """Numbers as the DP800 answers them: fixed point (`5.000`)."""
    return f"{value:.{decimals}f}"


class RigolDP800Model(SupplyModel):
    """Rigol DP800 (DP832) command set (DP800 programming guide): `:SOURn:VOLT 12`, `:OUTP CH2,ON`,
    `:MEAS:VOLT? CH2`, `:APPL CH2,12,1`, `:APPL? CH2` -> `CH2:30V/3A,12.000,1.000`, `:MEAS:ALL?`, OVP/OCP
    (`:OUTP:OVP*`, `:OUTP:OCP*`, or `:SOURn:VOLT:PROT*` / `:SOURn:CURR:PROT*`), steps and MIN|MAX.

    A header without its channel (`:SOUR:VOLT`, `:OUTP ON`, `:MEAS?`) acts on the selected channel
    (`:INST CH2` / `:INST:NSEL 2`), as on the instrument. OVP and OCP are off after *RST; a trip
    switches the output off until `:OUTP:OVP:CLEAR` and a new `:OUTP ON`.
    """

    idn = RIGOL_DP832_IDN
    signed_nr1 = False
    clear_restores_output = False

    def __init__(self, ranges: Mapping[int, ChannelRange] = DP832_RANGES) -> None:
        super().__init__(ranges)

    def _reset_channel(self, rng: ChannelRange) -> _Channel:
        return _Channel(0.0, rng.max_current, False, ovp=rng.max_ovp, ovp_on=False, ocp=rng.max_ocp, ocp_on=False)

    def _suffix_channel(self) -> int:
        n = self.suffixes[0] if self.suffixes else 0
        return self._check_channel(n) if n else self._selected

    def _ch_param(self, params: list[str], index: int) -> int:
        return self._channel_name(params[index]) if len(params) > index else self._selected

    def commands(self) -> list[ScpiCommand]:
        level = "[:SOURce#]:VOLTage[:LEVel][:IMMediate][:AMPLitude]"
        curr = "[:SOURce#]:CURRent[:LEVel][:IMMediate][:AMPLitude]"
        sfx = self._suffix_channel
        commands = [
            ScpiCommand(level, False, lambda p: self._one(p, lambda v: self._set_level(sfx(), v, "volt"))),
            ScpiCommand(level, True, lambda p: self._rigol_query(p, lambda ch: self.voltage_setpoint(ch), "volt")),
            ScpiCommand(curr, False, lambda p: self._one(p, lambda v: self._set_level(sfx(), v, "curr"))),
            ScpiCommand(curr, True, lambda p: self._rigol_query(p, lambda ch: self.current_limit(ch), "curr")),
            ScpiCommand("[:SOURce#]:VOLTage[:LEVel][:IMMediate]:STEP[:INCRement]", False,
                        lambda p: self._one(p, lambda v: self.set_step(sfx(), volts=self._step_value(sfx(), v, "volt")))),
            ScpiCommand("[:SOURce#]:VOLTage[:LEVel][:IMMediate]:STEP[:INCRement]", True,
                        lambda p: self._rigol_query(p, lambda ch: self._setting(ch).volt_step)),
            ScpiCommand("[:SOURce#]:CURRent[:LEVel][:IMMediate]:STEP[:INCRement]", False,
                        lambda p: self._one(p, lambda v: self.set_step(sfx(), amps=self._step_value(sfx(), v, "curr")))),
            ScpiCommand("[:SOURce#]:CURRent[:LEVel][:IMMediate]:STEP[:INCRement]", True,
                        lambda p: self._rigol_query(p, lambda ch: self._setting(ch).curr_step)),
            ScpiCommand(":OUTPut[:STATe]", False, self._rigol_output),
            ScpiCommand(":OUTPut[:STATe]", True, lambda p: "ON" if self.is_on(self._only_channel(p)) else "OFF"),
            ScpiCommand(":MEASure[:VOLTage][:DC]", True, lambda p: _rigol(self.measure_voltage(self._only_channel(p)))),
            ScpiCommand(":MEASure:CURRent[:DC]", True, lambda p: _rigol(self.measure_current(self._only_channel(p)))),
            ScpiCommand(":MEASure:POWEr[:DC]", True, lambda p: _rigol(self._power(self._only_channel(p)))),
            ScpiCommand(":MEASure:ALL[:DC]", True, lambda p: self._measure_all(self._only_channel(p))),
            ScpiCommand(":INSTrument[:SELect]", False, self._scpi_select),
            ScpiCommand(":INSTrument[:SELect]", True, lambda p: self._no_params_query(p, f"CH{self._selected}")),
            ScpiCommand(":INSTrument:NSELect", False, self._scpi_nselect),
            ScpiCommand(":INSTrument:NSELect", True, lambda p: self._no_params_query(p, str(self._selected))),
            ScpiCommand(":APPLy", False, self._rigol_apply),
            ScpiCommand(":APPLy", True, self._rigol_apply_query),
        ]
        for kind, unit in (("OVP", "volt"), ("OCP", "curr")):
            commands += self._protection_commands(kind, unit)
        return commands

    def _protection_commands(self, kind: str, unit: str) -> list[ScpiCommand]:
        """`:OUTP:OVP[:STAT] [CHn,]ON|OFF`, `:OUTP:OVP:VAL [CHn,]<v>`, `:OUTP:OVP:QUES? [CHn]`, `:OUTP:OVP:CLEAR [CHn]`
        and the same under `[:SOURn]:VOLT:PROT` (`:STAT`, `[:LEV]`, `:QUES?`, `:CLE`); OCP alike."""
        level, state = ("ovp", "ovp_on") if kind == "OVP" else ("ocp", "ocp_on")
        limit = "ovp" if kind == "OVP" else "ocp"
        prot = f"[:SOURce#]:{'VOLTage' if unit == 'volt' else 'CURRent'}:PROTection"
        trip = "OV" if kind == "OVP" else "OC"

        def set_state(ch: int, v: str) -> None:
            self.set_protection(ch, **{state: parse_bool(v)})  # type: ignore[arg-type]

        def set_level(ch: int, v: str) -> None:
            maximum = self._limit_answer(ch, limit, "MAX")
            self.set_protection(ch, **{level: parse_number(v, minimum=0.0, maximum=maximum, default=maximum)})  # type: ignore[arg-type]

        def level_query(ch: int, word: str) -> str:
            return _rigol(self._limit_answer(ch, limit, word) if word else getattr(self._setting(ch), level))

        def clear(ch: int) -> None:
            if self.tripped(ch) == trip:
                self.clear_protection(ch)

        return [
            ScpiCommand(f":OUTPut:{kind}[:STATe]", False, lambda p: self._ch_value(p, set_state)),
            ScpiCommand(f":OUTPut:{kind}[:STATe]", True,
                        lambda p: "ON" if getattr(self._setting(self._only_channel(p)), state) else "OFF"),
            ScpiCommand(f":OUTPut:{kind}:VALue", False, lambda p: self._ch_value(p, set_level)),
            ScpiCommand(f":OUTPut:{kind}:VALue", True, lambda p: self._ch_minmax(p, level_query)),
            ScpiCommand(f":OUTPut:{kind}:QUEStion", True, lambda p: "YES" if self.tripped(self._only_channel(p)) == trip else "NO"),
            ScpiCommand(f":OUTPut:{kind}:ALARm", True, lambda p: "YES" if self.tripped(self._only_channel(p)) == trip else "NO"),
            ScpiCommand(f":OUTPut:{kind}:CLEar", False, lambda p: clear(self._only_channel(p))),
            ScpiCommand(f"{prot}:STATe", False, lambda p: self._one(p, lambda v: set_state(self._suffix_channel(), v))),
            ScpiCommand(f"{prot}:STATe", True,
                        lambda p: self._no_params_query(p, "ON" if getattr(self._setting(self._suffix_channel()), state) else "OFF")),
            ScpiCommand(f"{prot}[:LEVel]", False, lambda p: self._one(p, lambda v: set_level(self._suffix_channel(), v))),
            ScpiCommand(f"{prot}[:LEVel]", True, lambda p: self._rigol_query(
                p, lambda ch: getattr(self._setting(ch), level), limit)),
            ScpiCommand(f"{prot}:QUEStion", True,
                        lambda p: self._no_params_query(p, "YES" if self.tripped(self._suffix_channel()) == trip else "NO")),
            ScpiCommand(f"{prot}:CLEar", False, lambda p: self._no_param_action(p, lambda: clear(self._suffix_channel()))),
        ]

    def _one(self, params: list[str], apply: Callable[[str], None]) -> None:
        _count(params, 1, 1, "<value>")
        apply(params[0])

    def _ch_value(self, params: list[str], apply: Callable[[int, str], None]) -> None:
        """`[CHn,]<value>`."""
        _count(params, 1, 2, "[CHn,]<value>")
        channel = self._channel_name(params[0]) if len(params) == 2 else self._selected
        apply(channel, params[-1])

    def _ch_minmax(self, params: list[str], answer: Callable[[int, str], str]) -> str:
        """`[CHn][,MIN|MAX]`."""
        _count(params, 0, 2, "[CHn][,MIN|MAX]")
        word = _word(params[-1]) if params and _word(params[-1]) in _MIN_MAX else ""
        names = params[:-1] if word else params
        channel = self._channel_name(names[0]) if names else self._selected
        return answer(channel, word)

    def _rigol_query(self, params: list[str], fn: Callable[[int], float], limits: str | None = None) -> str:
        """`<query>? [MIN|MAX]` on the header's channel."""
        _count(params, 0, 1 if limits else 0, "[MIN|MAX]")
        channel = self._suffix_channel()
        if params:
            word = _word(params[0])
            if word not in _MIN_MAX:
                raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"{params[0]!r} is not MIN|MAX")
            assert limits is not None
            return _rigol(self._limit_answer(channel, limits, word))
        return _rigol(fn(channel))

    def _only_channel(self, params: list[str]) -> int:
        _count(params, 0, 1, "[CHn]")
        return self._ch_param(params, 0)

    def _power(self, channel: int) -> float:
        out = self.output(channel)
        return out.volts * out.amps

    def _measure_all(self, channel: int) -> str:
        """`:MEAS:ALL? [CHn]`: voltage, current and power, fixed point."""
        out = self.output(channel)
        return f"{_rigol(out.volts)},{_rigol(out.amps)},{_rigol(out.volts * out.amps)}"

    def _rigol_output(self, params: list[str]) -> None:
        _count(params, 1, 2, ":OUTP [CHn,]ON|OFF")
        channel = self._channel_name(params[0]) if len(params) == 2 else self._selected
        self.set_output(channel, parse_bool(params[-1]))

    def _rigol_apply(self, params: list[str]) -> None:
        """`:APPL CHn[,<v>[,<c>]]` (selects the channel, then sets) or `:APPL <v>[,<c>]` (the selected channel)."""
        _count(params, 1, 3, ":APPL [CHn,]<volts>[,<amps>]")
        if _word(params[0]).startswith("CH"):
            channel = self._channel_name(params[0])
            with self._lock:
                self._selected = channel
            values = params[1:]
        else:
            channel, values = self._selected, params
            if len(values) > 2:
                raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(values[2:]))
        if values:
            self._apply(channel, values[0], values[1] if len(values) > 1 else None)

    def _rigol_apply_query(self, params: list[str]) -> str:
        """`:APPL? [CHn[,VOLT|CURR]]` -> `CH1:30V/3A,5.000,1.000`, or the one value asked for."""
        _count(params, 0, 2, ":APPL? [CHn[,CURR|VOLT]]")
        channel = self._channel_name(params[0]) if params else self._selected
        rng = self.ranges[channel]
        volts, amps = _rigol(self.voltage_setpoint(channel)), _rigol(self.current_limit(channel))
        if len(params) == 2:
            item = _word(params[1])
            if item in ("VOLT", "VOLTAGE"):
                return volts
            if item in ("CURR", "CURRENT"):
                return amps
            raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"{params[1]!r} is not CURR|VOLT")
        return f"CH{channel}:{rng.max_voltage:g}V/{rng.max_current:g}A,{volts},{amps}"


@dataclass
class _ArbSequence:
    """An HMP arbitrary sequence: (volts, amps, dwell s) points and repetitions (0 = endless)."""

    points: list[tuple[float, float, float]]
    repetitions: int = 0


class HmpModel(SupplyModel):
    """Rohde & Schwarz HMP4040 (HMP series manual): select a channel (`INST:NSEL 2` or `INST OUT2`), then plain
    commands act on it - setpoints with MIN|MAX|UP|DOWN and steps, `VOLT? MIN|MAX`, OVP (`VOLT:PROT*`),
    the electronic fuse (`FUSE*`), the arbitrary function (`ARB:*`), `SYST:REM|LOC|MIX|RWL`, `SYST:BEEP`.

    A channel delivers when it is activated (`OUTP:SEL ON`, or `OUTP ON` which also switches the
    general output on) and the general output is on (`OUTP:GEN ON`). No channel lists. OVP is
    always armed; the fuse trips when the output goes into current limit (after `FUSE:DEL`, 0 here).
    """

    idn = RS_HMP4040_IDN
    signed_nr1 = False
    clear_restores_output = False
    #: ARB:DATA takes at most this many points; dwell times 0.06..10 s.
    ARB_MAX_POINTS = 128
    ARB_DWELL_S = (0.06, 10.0)

    def __init__(self, ranges: Mapping[int, ChannelRange] = HMP4040_RANGES) -> None:
        self._general = False
        self.remote = "LOC"  # SYST:REM|LOC|MIX|RWL
        self.beeps = 0
        self._fuse_delay_ms = 0.0
        self._ovp_mode = "MEAS"
        self._arb_editor = _ArbSequence([])
        self._arb_saved: dict[int, _ArbSequence] = {}
        self._arb_channel: dict[int, _ArbSequence] = {}
        self._arb_players: dict[int, tuple[threading.Thread, threading.Event]] = {}
        super().__init__(ranges)

    # ------------------------------------------------------------------ the general output
    def output(self, channel: int) -> OutputState:
        if not self._general:
            self._check_channel(channel)
            return OutputState(0.0, 0.0, False)
        return super().output(channel)

    def is_on(self, channel: int) -> bool:
        return self._general and super().is_on(channel)

    def set_general(self, on: bool) -> None:
        """`OUTP:GEN ON|OFF`: every activated channel follows."""
        with self._change_lock:
            self._general = on
            for ch in self.ranges:
                self._protect(ch)
                self._notify(ch)

    def set_output(self, channel: int, on: bool) -> None:
        """`OUTP ON` activates the channel and switches the general output on; `OUTP OFF` deactivates it."""
        with self._change_lock:
            super().set_output(channel, on)
            if on and not self._general:
                self.set_general(True)

    def power_on(self, channel: int, volts: float, amps: float) -> None:
        with self._change_lock:
            super().power_on(channel, volts, amps)
            self.set_general(True)

    def reset(self) -> None:
        self.stop_sequences()
        with self._change_lock:
            self._general = False
            self._fuse_delay_ms = 0.0
            self._ovp_mode = "MEAS"
            self._arb_editor = _ArbSequence([])
            self._arb_channel.clear()
            super().reset()

    def close(self) -> None:
        """The instrument goes away (its server stops): running sequences end."""
        self.stop_sequences()

    def _protect(self, channel: int) -> None:
        if self._general:
            super()._protect(channel)

    # ------------------------------------------------------------------ arbitrary sequences
    def start_sequence(self, channel: int) -> None:
        """`ARB:STAR <ch>`: play the channel's transferred sequence (setpoints change at each point's dwell)."""
        self._check_channel(channel)
        sequence = self._arb_channel.get(channel)
        if sequence is None or not sequence.points:
            raise ScpiError(SETTINGS_CONFLICT, f"no sequence transferred to channel {channel} (ARB:TRAN first)")
        self.stop_sequence(channel)
        stop = threading.Event()
        thread = threading.Thread(target=self._play, args=(channel, sequence, stop), name=f"hmp-arb-{channel}", daemon=True)
        self._arb_players[channel] = (thread, stop)
        thread.start()

    def stop_sequence(self, channel: int) -> None:
        """`ARB:STOP <ch>`."""
        player = self._arb_players.pop(channel, None)
        if player is not None:
            player[1].set()
            if player[0] is not threading.current_thread():
                player[0].join(2.0)

    def stop_sequences(self) -> None:
        for ch in list(self._arb_players):
            self.stop_sequence(ch)

    def sequence_running(self, channel: int) -> bool:
        player = self._arb_players.get(channel)
        return player is not None and player[0].is_alive()

    def _play(self, channel: int, sequence: _ArbSequence, stop: threading.Event) -> None:
        played = 0
        while not stop.is_set() and (sequence.repetitions == 0 or played < sequence.repetitions):
            for volts, amps, dwell in sequence.points:
                if stop.is_set():
                    return
                self._change(channel, voltage=volts, current=amps)
                if stop.wait(dwell):
                    return
            played += 1

    # ------------------------------------------------------------------ SCPI
    def commands(self) -> list[ScpiCommand]:
        level = "[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]"
        curr = "[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]"
        sel = lambda: self._selected  # noqa: E731 - the channel every plain command acts on
        flag = lambda p, value: self._no_params_query(p, "1" if value else "0")  # noqa: E731
        return [
            ScpiCommand(level, False, lambda p: self._hmp_one(p, lambda v: self._set_level(sel(), v, "volt"))),
            ScpiCommand(level, True, lambda p: self._hmp_query(p, self.voltage_setpoint, "volt")),
            ScpiCommand(curr, False, lambda p: self._hmp_one(p, lambda v: self._set_level(sel(), v, "curr"))),
            ScpiCommand(curr, True, lambda p: self._hmp_query(p, self.current_limit, "curr")),
            ScpiCommand("[SOURce:]VOLTage[:LEVel]:STEP[:INCRement]", False,
                        lambda p: self._hmp_one(p, lambda v: self.set_step(sel(), volts=self._step_value(sel(), v, "volt")))),
            ScpiCommand("[SOURce:]VOLTage[:LEVel]:STEP[:INCRement]", True,
                        lambda p: self._hmp_query(p, lambda ch: self._setting(ch).volt_step)),
            ScpiCommand("[SOURce:]CURRent[:LEVel]:STEP[:INCRement]", False,
                        lambda p: self._hmp_one(p, lambda v: self.set_step(sel(), amps=self._step_value(sel(), v, "curr")))),
            ScpiCommand("[SOURce:]CURRent[:LEVel]:STEP[:INCRement]", True,
                        lambda p: self._hmp_query(p, lambda ch: self._setting(ch).curr_step)),
            ScpiCommand("[SOURce:]VOLTage:PROTection[:LEVel]", False, lambda p: self._hmp_one(
                p, lambda v: self.set_protection(sel(), ovp=parse_number(
                    v, minimum=0.0, maximum=self.ranges[sel()].max_ovp, default=self.ranges[sel()].max_ovp)))),
            ScpiCommand("[SOURce:]VOLTage:PROTection[:LEVel]", True,
                        lambda p: self._hmp_query(p, lambda ch: self._setting(ch).ovp, "ovp")),
            ScpiCommand("[SOURce:]VOLTage:PROTection:TRIPped", True, lambda p: flag(p, self.tripped(sel()) == "OV")),
            ScpiCommand("[SOURce:]VOLTage:PROTection:CLEar", False,
                        lambda p: self._no_param_action(p, lambda: self._clear_kind("OV")(sel()))),
            ScpiCommand("[SOURce:]VOLTage:PROTection:MODE", False, self._hmp_ovp_mode),
            ScpiCommand("[SOURce:]VOLTage:PROTection:MODE", True, lambda p: self._no_params_query(p, self._ovp_mode)),
            ScpiCommand("FUSE[:STATe]", False, lambda p: self._hmp_one(p, lambda v: self.set_protection(sel(), ocp_on=parse_bool(v)))),
            ScpiCommand("FUSE[:STATe]", True, lambda p: flag(p, self._setting(sel()).ocp_on)),
            ScpiCommand("FUSE:TRIPped", True, lambda p: flag(p, self.tripped(sel()) == "OC")),
            ScpiCommand("FUSE:DELay", False, self._hmp_fuse_delay),
            ScpiCommand("FUSE:DELay", True, lambda p: self._no_params_query(p, f"{self._fuse_delay_ms:g}")),
            ScpiCommand("OUTPut[:STATe]", False, lambda p: self._hmp_one(p, lambda v: self.set_output(sel(), parse_bool(v)))),
            ScpiCommand("OUTPut[:STATe]", True, lambda p: flag(p, self.is_on(sel()))),
            ScpiCommand("OUTPut:SELect", False, lambda p: self._hmp_one(p, lambda v: self._activate(sel(), parse_bool(v)))),
            ScpiCommand("OUTPut:SELect", True, lambda p: flag(p, SupplyModel.is_on(self, sel()))),
            ScpiCommand("OUTPut:GENeral", False, lambda p: self._hmp_one(p, lambda v: self.set_general(parse_bool(v)))),
            ScpiCommand("OUTPut:GENeral", True, lambda p: flag(p, self._general)),
            ScpiCommand("MEASure[:SCALar]:VOLTage[:DC]", True,
                        lambda p: self._no_params_query(p, format_number(self.measure_voltage(sel())))),
            ScpiCommand("MEASure[:SCALar]:CURRent[:DC]", True,
                        lambda p: self._no_params_query(p, format_number(self.measure_current(sel())))),
            ScpiCommand("INSTrument:NSELect", False, self._scpi_nselect),
            ScpiCommand("INSTrument:NSELect", True, lambda p: self._no_params_query(p, str(self._selected))),
            ScpiCommand("INSTrument[:SELect]", False, self._hmp_select),
            ScpiCommand("INSTrument[:SELect]", True, lambda p: self._no_params_query(p, f"OUTP{self._selected}")),
            ScpiCommand("APPLy", False, self._hmp_apply),
            ScpiCommand("APPLy", True, lambda p: self._no_params_query(
                p, f"{format_number(self.voltage_setpoint(sel()))},{format_number(self.current_limit(sel()))}")),
            *[ScpiCommand(f"SYSTem:{mode}", False, self._hmp_remote(short))
              for mode, short in (("REMote", "REM"), ("LOCal", "LOC"), ("MIXed", "MIX"), ("RWLock", "RWL"))],
            ScpiCommand("SYSTem:BEEPer[:IMMediate]", False, lambda p: self._no_param_action(p, self._beep)),
            ScpiCommand("ARBitrary:DATA", False, self._arb_data),
            ScpiCommand("ARBitrary:DATA", True, lambda p: self._no_params_query(
                p, ",".join(f"{v:g},{c:g},{t:g}" for v, c, t in self._arb_editor.points))),
            ScpiCommand("ARBitrary:CLEar", False, self._arb_clear),
            ScpiCommand("ARBitrary:REPetitions", False, self._arb_repetitions),
            ScpiCommand("ARBitrary:REPetitions", True, lambda p: self._no_params_query(p, str(self._arb_editor.repetitions))),
            ScpiCommand("ARBitrary:SAVE", False, lambda p: self._arb_slot(p, save=True)),
            ScpiCommand("ARBitrary:RESTore", False, lambda p: self._arb_slot(p, save=False)),
            ScpiCommand("ARBitrary:TRANsfer", False, lambda p: self._arb_channel_op(p, self._arb_transfer)),
            ScpiCommand("ARBitrary:STARt", False, lambda p: self._arb_channel_op(p, self.start_sequence)),
            ScpiCommand("ARBitrary:STOP", False, lambda p: self._arb_channel_op(p, self.stop_sequence)),
        ]

    def _activate(self, channel: int, on: bool) -> None:
        if on and self.tripped(channel):
            raise ScpiError(SETTINGS_CONFLICT, f"OUT{channel} {self.tripped(channel)} protection tripped; clear it first")
        SupplyModel.set_output(self, channel, on)

    @staticmethod
    def _hmp_one(params: list[str], apply: Callable[[str], None]) -> None:
        """One value for the selected channel; a channel list is not HMP syntax (-108)."""
        _count(params, 1, 1, "<value>")
        apply(params[0])

    def _hmp_query(self, params: list[str], fn: Callable[[int], float], limits: str | None = None) -> str:
        """`<query>? [MIN|MAX]` on the selected channel."""
        _count(params, 0, 1 if limits else 0, "[MIN|MAX]")
        if params:
            word = _word(params[0])
            if word not in _MIN_MAX:
                raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"{params[0]!r} is not MIN|MAX")
            assert limits is not None
            return format_number(self._limit_answer(self._selected, limits, word))
        return format_number(fn(self._selected))

    def _hmp_select(self, params: list[str]) -> None:
        _count(params, 1, 1, "INST OUT1..OUT4")
        name = _word(params[0])
        for prefix in ("OUTPUT", "OUTP", "OUT"):
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                ch = self._check_channel(int(name[len(prefix):]))
                with self._lock:
                    self._selected = ch
                return
        raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"{params[0]!r} is not OUT1..OUT{max(self.ranges)}")

    def _hmp_apply(self, params: list[str]) -> None:
        _count(params, 2, 2, "APPL <volts>,<amps>")
        self._apply(self._selected, params[0], params[1])

    def _hmp_remote(self, mode: str) -> Callable[[list[str]], None]:
        """`SYST:REM|LOC|MIX|RWL`: remote, local, mixed, remote with the front panel locked."""
        def handler(params: list[str]) -> None:
            _count(params, 0, 0, "")
            self.remote = mode
        return handler

    def _beep(self) -> None:
        self.beeps += 1

    def _hmp_ovp_mode(self, params: list[str]) -> None:
        _count(params, 1, 1, "MEAS|PROT")
        word = _word(params[0])
        modes = {"MEAS": "MEAS", "MEASURED": "MEAS", "PROT": "PROT", "PROTECTED": "PROT"}
        if word not in modes:
            raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"{params[0]!r} is not MEAS|PROT")
        self._ovp_mode = modes[word]

    def _hmp_fuse_delay(self, params: list[str]) -> None:
        _count(params, 1, 1, "<ms>")
        self._fuse_delay_ms = parse_number(params[0], minimum=0.0, maximum=250.0, default=0.0)

    def _arb_data(self, params: list[str]) -> None:
        """`ARB:DATA v1,c1,t1,...`: the editor's sequence, checked whole before it replaces the old one."""
        if not params or not params[0]:
            raise ScpiError(MISSING_PARAMETER, "ARB:DATA <volts>,<amps>,<seconds>[,...]")
        if len(params) % 3 or len(params) // 3 > self.ARB_MAX_POINTS:
            raise ScpiError(PARAMETER_NOT_ALLOWED if len(params) % 3 == 0 else MISSING_PARAMETER,
                            f"{len(params)} values: triplets of volts, amps, seconds, at most {self.ARB_MAX_POINTS}")
        rng = self.ranges[self._selected]
        points = []
        for i in range(0, len(params), 3):
            points.append((parse_number(params[i], minimum=0.0, maximum=rng.max_voltage),
                           parse_number(params[i + 1], minimum=0.0, maximum=rng.max_current),
                           parse_number(params[i + 2], minimum=self.ARB_DWELL_S[0], maximum=self.ARB_DWELL_S[1])))
        self._arb_editor = _ArbSequence(points, self._arb_editor.repetitions)

    def _arb_clear(self, params: list[str]) -> None:
        _count(params, 0, 1, "[<channel>]")
        if params:
            self._check_channel(int(parse_number(params[0], minimum=1, maximum=max(self.ranges))))
        self._arb_editor = _ArbSequence([], self._arb_editor.repetitions)

    def _arb_repetitions(self, params: list[str]) -> None:
        _count(params, 1, 1, "0..255")
        value = parse_number(params[0], minimum=0, maximum=255)
        self._arb_editor = _ArbSequence(self._arb_editor.points, int(value))

    def _arb_slot(self, params: list[str], *, save: bool) -> None:
        _count(params, 1, 1, "1|2|3")
        slot = int(parse_number(params[0], minimum=1, maximum=3))
        if save:
            self._arb_saved[slot] = _ArbSequence(list(self._arb_editor.points), self._arb_editor.repetitions)
        elif slot in self._arb_saved:
            saved = self._arb_saved[slot]
            self._arb_editor = _ArbSequence(list(saved.points), saved.repetitions)
        else:
            raise ScpiError(SETTINGS_CONFLICT, f"nothing saved in ARB slot {slot}")

    def _arb_channel_op(self, params: list[str], op: Callable[[int], None]) -> None:
        _count(params, 1, 1, "<channel>")
        op(self._check_channel(int(parse_number(params[0], minimum=1, maximum=max(self.ranges)))))

    def _arb_transfer(self, channel: int) -> None:
        self._arb_channel[channel] = _ArbSequence(list(self._arb_editor.points), self._arb_editor.repetitions)


class GenericSupplyModel(SupplyModel):
    """A single-output SCPI supply (dialect `scpi`): `VOLT 12`, `OUTP ON`, `MEAS:VOLT?`, `APPL 10,1`, SCPI's
    DC-supply protection and step commands (the Keysight forms, channel lists optional)."""

    idn = GENERIC_PSU_IDN
    signed_nr1 = False

    def __init__(self, ranges: Mapping[int, ChannelRange] = GENERIC_RANGES) -> None:
        super().__init__(ranges)

    def _scpi_apply(self, params: list[str]) -> None:
        """`APPL <volts>[,<amps>]`."""
        _count(params, 1, 2, "APPL <volts>[,<amps>]")
        self._apply(self._selected, params[0], params[1] if len(params) == 2 else None)

    def _scpi_apply_query(self, params: list[str]) -> str:
        return self._no_params_query(params, f"{format_number(self.voltage_setpoint(self._selected))},"
                                             f"{format_number(self.current_limit(self._selected))}")


#: The emulated supply per `psu.dialect` of a bench file.
SUPPLY_MODELS: Mapping[str, Callable[[], SupplyModel]] = types.MappingProxyType({
    "keysight_e36300": SupplyModel,
    "rigol_dp800": RigolDP800Model,
    "rs_hmp": HmpModel,
    "scpi": GenericSupplyModel,
})


# --------------------------------------------------------------------------- battery emulator
#: Battery emulator ranges.
PACK_CURRENT_RANGE_A = 500.0
TEMPERATURE_RANGE_C = (-40.0, 150.0)
CELL_VOLTAGE_RANGE_V = (0.0, 5.0)
RESET_TEMPERATURE_C = 25.0
RESET_CELL_VOLTAGE_V = 3.70


class BatteryEmulatorModel(ScpiInstrument):
    """Battery/load emulator of a 12S pack: pack current, 8 temperature sensors, 12 cell voltages.

    Pack current is positive when charging, negative when discharging.
    """

    idn = contract.LOAD_IDN_SIM

    def __init__(self, n_cells: int = contract.N_CELLS, n_temps: int = contract.N_TEMPS) -> None:
        self.n_cells = n_cells
        self.n_temps = n_temps
        self._lock = threading.Lock()
        self._current = 0.0
        self._temps = [RESET_TEMPERATURE_C] * n_temps
        self._cells = [RESET_CELL_VOLTAGE_V] * n_cells
        super().__init__()

    # ------------------------------------------------------------------ Python API (board)
    def pack_current(self) -> float:
        """Pack current in A (positive = charging)."""
        with self._lock:
            return self._current

    def temperatures(self) -> list[float]:
        """Sensor temperatures, degC, sensor 1 first."""
        with self._lock:
            return list(self._temps)

    def cell_voltages(self) -> list[float]:
        """Cell voltages, V, cell 1 first."""
        with self._lock:
            return list(self._cells)

    def set_pack_current(self, amps: float) -> None:
        """Pack current; outside +-500 A -> ScpiError(-222)."""
        value = parse_number(repr(float(amps)), minimum=-PACK_CURRENT_RANGE_A, maximum=PACK_CURRENT_RANGE_A)
        with self._lock:
            self._current = value

    def set_temperature(self, celsius: float, sensors: list[int] | None = None) -> None:
        """Temperature of the given sensors (1-based; all when None)."""
        value = parse_number(repr(float(celsius)), minimum=TEMPERATURE_RANGE_C[0], maximum=TEMPERATURE_RANGE_C[1])
        with self._lock:
            for n in sensors or range(1, self.n_temps + 1):
                self._temps[n - 1] = value

    def set_cell_voltage(self, volts: float, cells: list[int] | None = None) -> None:
        """Voltage of the given cells (1-based; all when None)."""
        value = parse_number(repr(float(volts)), minimum=CELL_VOLTAGE_RANGE_V[0], maximum=CELL_VOLTAGE_RANGE_V[1])
        with self._lock:
            for n in cells or range(1, self.n_cells + 1):
                self._cells[n - 1] = value

    def reset(self) -> None:
        """`*RST`: 0 A, 25 degC, 3.70 V per cell."""
        with self._lock:
            self._current = 0.0
            self._temps = [RESET_TEMPERATURE_C] * self.n_temps
            self._cells = [RESET_CELL_VOLTAGE_V] * self.n_cells

    # ------------------------------------------------------------------ SCPI
    def commands(self) -> list[ScpiCommand]:
        return [
            ScpiCommand("[SOURce:]CURRent[:LEVel]", False, self._scpi_current),
            ScpiCommand("[SOURce:]CURRent[:LEVel]", True, self._scpi_current_query),
            ScpiCommand("TEMPerature:ALL", False, self._scpi_all(self.set_temperature)),
            ScpiCommand("TEMPerature[:LEVel]", False, self._scpi_channel_set(self.set_temperature, self.n_temps)),
            ScpiCommand("TEMPerature[:LEVel]", True, self._scpi_channel_query(self.temperatures, self.n_temps)),
            ScpiCommand("TEMPerature:ALL", True, self._scpi_channel_query(self.temperatures, self.n_temps)),
            ScpiCommand("CELL:VOLTage:ALL", False, self._scpi_all(self.set_cell_voltage)),
            ScpiCommand("CELL:VOLTage[:LEVel]", False, self._scpi_channel_set(self.set_cell_voltage, self.n_cells)),
            ScpiCommand("CELL:VOLTage[:LEVel]", True, self._scpi_channel_query(self.cell_voltages, self.n_cells)),
            ScpiCommand("CELL:VOLTage:ALL", True, self._scpi_channel_query(self.cell_voltages, self.n_cells)),
        ]

    def _scpi_current(self, params: list[str]) -> None:
        if len(params) != 1 or not params[0]:
            raise ScpiError(MISSING_PARAMETER if not params or not params[0] else PARAMETER_NOT_ALLOWED, "CURR <amps>")
        value = parse_number(params[0], minimum=-PACK_CURRENT_RANGE_A, maximum=PACK_CURRENT_RANGE_A, default=0.0)
        with self._lock:
            self._current = value

    def _scpi_current_query(self, params: list[str]) -> str:
        if params:
            raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params))
        return format_number(self.pack_current())

    @staticmethod
    def _scpi_all(setter: Callable[[float, list[int] | None], None]) -> Callable[[list[str]], None]:
        def handler(params: list[str]) -> None:
            if len(params) != 1 or not params[0]:
                raise ScpiError(MISSING_PARAMETER if not params or not params[0] else PARAMETER_NOT_ALLOWED, "<value>")
            setter(_parse_float(params[0]), None)

        return handler

    @staticmethod
    def _scpi_channel_set(setter: Callable[[float, list[int] | None], None], count: int) -> Callable[[list[str]], None]:
        def handler(params: list[str]) -> None:
            if len(params) < 2 or not params[0]:
                raise ScpiError(MISSING_PARAMETER, f"<value>,(@1..{count}) (use :ALL for every channel)")
            if len(params) > 2:
                raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params[2:]))
            channels = parse_channel_list(params[1], 1, count)
            setter(_parse_float(params[0]), channels)

        return handler

    @staticmethod
    def _scpi_channel_query(getter: Callable[[], list[float]], count: int) -> Callable[[list[str]], str]:
        def handler(params: list[str]) -> str:
            if len(params) > 1:
                raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params[1:]))
            values = getter()
            channels = parse_channel_list(params[0], 1, count) if params else range(1, count + 1)
            return ",".join(format_number(values[ch - 1]) for ch in channels)

        return handler


def _parse_float(text: str) -> float:
    """A plain number; range checks happen in the setter."""
    return parse_number(text, minimum=float("-inf"), maximum=float("inf"))


# --------------------------------------------------------------------------- other battery-emulator dialects
KEYSIGHT_EL34143A_IDN = "Keysight Technologies,EL34143A,MY-HILSIM-0002,1.0.0-sim"
#: EL34143A: 0..60 A in constant-current mode.
EL34143A_MAX_CURRENT_A = 60.0


class KeysightEL30000Model(BatteryEmulatorModel):
    """Keysight EL30000 DC electronic load (EL34143A) as the pack's load: it sinks current only.

    `[SOUR:]FUNC CURR|VOLT|POW|RES`, `[SOUR:]CURR <A>[,(@1)]`, `INP ON|OFF`, `MEAS:CURR?`. The pack
    current the board sees is minus the programmed level while the input is on in CC mode (a
    discharge); cells and temperatures stay at their reset values (not this instrument's).
    """

    idn = KEYSIGHT_EL34143A_IDN

    def __init__(self, n_cells: int = contract.N_CELLS, n_temps: int = contract.N_TEMPS) -> None:
        self._function = "CURR"
        self._level = 0.0
        self._input = False
        super().__init__(n_cells, n_temps)

    def pack_current(self) -> float:
        with self._lock:
            return -self._level if self._input and self._function == "CURR" else 0.0

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._function, self._level, self._input = "CURR", 0.0, False

    def commands(self) -> list[ScpiCommand]:
        curr = "[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]"
        return [
            ScpiCommand("[SOURce:]FUNCtion", False, self._el_function),
            ScpiCommand("[SOURce:]FUNCtion", True, lambda p: self._el_answer(p, self._function)),
            ScpiCommand(curr, False, self._el_level),
            ScpiCommand(curr, True, lambda p: self._el_answer(p, format_number(self._level))),
            ScpiCommand("INPut[:STATe]", False, self._el_input),
            ScpiCommand("INPut[:STATe]", True, lambda p: self._el_answer(p, "1" if self._input else "0")),
            ScpiCommand("MEASure[:SCALar]:CURRent[:DC]", True,
                        lambda p: self._el_answer(p, format_number(-self.pack_current()))),
        ]

    @staticmethod
    def _el_channel(params: list[str], index: int) -> None:
        if len(params) > index:
            parse_channel_list(params[index], 1, 1)  # a single-channel load: (@1) only
        if len(params) > index + 1:
            raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params[index + 1:]))

    def _el_answer(self, params: list[str], answer: str) -> str:
        self._el_channel(params, 0)
        return answer

    def _el_function(self, params: list[str]) -> None:
        if not params or not params[0]:
            raise ScpiError(MISSING_PARAMETER, "FUNC CURR|VOLT|POW|RES")
        self._el_channel(params, 1)
        word = params[0].strip().upper()
        names = {"CURR": "CURR", "CURRENT": "CURR", "VOLT": "VOLT", "VOLTAGE": "VOLT", "POW": "POW", "POWER": "POW",
                 "RES": "RES", "RESISTANCE": "RES"}
        if word not in names:
            raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"{params[0]!r} is not CURR|VOLT|POW|RES")
        with self._lock:
            self._function = names[word]

    def _el_level(self, params: list[str]) -> None:
        if not params or not params[0]:
            raise ScpiError(MISSING_PARAMETER, "CURR <amps>")
        self._el_channel(params, 1)
        value = parse_number(params[0], minimum=0.0, maximum=EL34143A_MAX_CURRENT_A, default=0.0)
        with self._lock:
            self._level = value

    def _el_input(self, params: list[str]) -> None:
        if not params or not params[0]:
            raise ScpiError(MISSING_PARAMETER, "INP ON|OFF")
        self._el_channel(params, 1)
        on = parse_bool(params[0])
        with self._lock:
            self._input = on


#: The emulated battery emulator per `load.dialect` of a bench file.
#: Each takes the pack's cell and temperature-sensor counts (the DUT profile's `soc_core`).
BATTERY_MODELS: Mapping[str, Callable[..., BatteryEmulatorModel]] = types.MappingProxyType({
    "hil_sim": BatteryEmulatorModel,
    "keysight_el30000": KeysightEL30000Model,
})
