"""Emulated bench instruments: a Keysight E36312A supply and a 12S battery emulator.

Both speak SCPI through `hil.sim.scpi.ScpiServer`; the board reads them through the thread-safe
Python API (`SupplyModel.add_listener`/`set_load`, `BatteryEmulatorModel.pack_current()` ...).
The command sets are documented in docs/instruments.md.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class ChannelRange:
    """Programmable range of one supply output."""

    max_voltage: float
    max_current: float


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


class SupplyModel(ScpiInstrument):
    """Keysight E36312A triple-output supply.

    Output on -> measured voltage = setpoint (less CC limiting), off -> 0 V; measured current is
    what the attached load draws. Listeners hear every change of a channel's output voltage, in
    order, outside the state lock (the board treats below-brown-out as power loss).
    """

    idn = contract.PSU_IDN_SIM

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
        """Output on or off."""
        self._check_channel(channel)
        self._change(channel, on=on)

    def power_on(self, channel: int, volts: float, amps: float) -> None:
        """Setpoint, current limit and output on in one change (`APPL` then `OUTP ON`)."""
        rng = self.ranges[self._check_channel(channel)]
        self._check_value(channel, volts, rng.max_voltage, "V")
        self._check_value(channel, amps, rng.max_current, "A")
        self._change(channel, voltage=volts, current=amps, on=True)

    def voltage_setpoint(self, channel: int) -> float:
        """Programmed voltage."""
        with self._lock:
            return self._channels[self._check_channel(channel)].voltage

    def current_limit(self, channel: int) -> float:
        """Programmed current limit."""
        with self._lock:
            return self._channels[self._check_channel(channel)].current

    def is_on(self, channel: int) -> bool:
        """Output state."""
        with self._lock:
            return self._channels[self._check_channel(channel)].on

    def output(self, channel: int) -> OutputState:
        """What the channel delivers now (the load callback runs outside the lock)."""
        with self._lock:
            setting = self._channels[self._check_channel(channel)]
            load = self._loads.get(channel)
        if self.ignore_output_off and not setting.on and setting.voltage > 0:
            setting = replace(setting, on=True)
        return solve_output(setting, load)

    def measure_voltage(self, channel: int) -> float:
        """`MEAS:VOLT?`: output voltage."""
        return self.output(channel).volts

    def measure_current(self, channel: int) -> float:
        """`MEAS:CURR?`: what the load draws (at most the limit)."""
        return self.output(channel).amps

    def reset(self) -> None:
        """`*RST`: every output off, 0 V, current limit at full range, channel 1 selected."""
        with self._change_lock:
            self._reset_state()
            for ch in self.ranges:
                self._notify(ch)

    # ------------------------------------------------------------------ internals
    def _reset_state(self) -> None:
        with self._lock:
            self._channels = {ch: _Channel(0.0, rng.max_current, False) for ch, rng in self.ranges.items()}
            self._selected = min(self.ranges)

    def _check_channel(self, channel: int) -> int:
        if channel not in self.ranges:
            raise ScpiError(DATA_OUT_OF_RANGE, f"channel {channel} outside {min(self.ranges)}..{max(self.ranges)}")
        return channel

    @staticmethod
    def _check_value(channel: int, value: float, maximum: float, unit: str) -> None:
        if value != value or not 0.0 <= value <= maximum:
            raise ScpiError(DATA_OUT_OF_RANGE, f"{value:g} {unit} outside 0..{maximum:g} {unit} of CH{channel}")

    def _change(self, channel: int, **fields: float | bool) -> None:
        with self._change_lock:
            with self._lock:
                self._channels[channel] = replace(self._channels[channel], **fields)  # type: ignore[arg-type]
            self._notify(channel)

    def _notify(self, channel: int) -> None:
        """Tell listeners if the output voltage changed (caller holds the change lock, not the state lock)."""
        volts = self.output(channel).volts
        if volts == self._notified[channel]:
            return
        self._notified[channel] = volts
        for fn in list(self._listeners[channel]):
            fn(volts)

    # ------------------------------------------------------------------ SCPI
    def commands(self) -> list[ScpiCommand]:
        return [
            ScpiCommand("[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]", False, self._scpi_set_voltage),
            ScpiCommand("[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]", True,
                        self._scpi_query(lambda ch: format_number(self.voltage_setpoint(ch)))),
            ScpiCommand("[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]", False, self._scpi_set_current),
            ScpiCommand("[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]", True,
                        self._scpi_query(lambda ch: format_number(self.current_limit(ch)))),
            ScpiCommand("OUTPut[:STATe]", False, self._scpi_output),
            ScpiCommand("OUTPut[:STATe]", True, self._scpi_query(lambda ch: "1" if self.is_on(ch) else "0")),
            ScpiCommand("MEASure[:SCALar]:VOLTage[:DC]", True,
                        self._scpi_query(lambda ch: format_number(self.measure_voltage(ch)))),
            ScpiCommand("MEASure[:SCALar]:CURRent[:DC]", True,
                        self._scpi_query(lambda ch: format_number(self.measure_current(ch)))),
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

    def _scpi_set(self, params: list[str], limit_of: Callable[[ChannelRange], float], what: str,
                  setter: Callable[[int, float], None]) -> None:
        if not params or not params[0]:
            raise ScpiError(MISSING_PARAMETER, f"{what} needs a value")
        if len(params) > 2:
            raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params[2:]))
        channels = self._channels_of(params, 1)
        # Every channel is checked before any changes: an error leaves all settings unchanged.
        values = {ch: parse_number(params[0], minimum=0.0, maximum=limit_of(self.ranges[ch]), default=0.0)
                  for ch in channels}
        for ch, value in values.items():
            setter(ch, value)  # through the public setter, so a subclass can model quirks

    def _scpi_set_voltage(self, params: list[str]) -> None:
        self._scpi_set(params, lambda r: r.max_voltage, "voltage", self.set_voltage)

    def _scpi_set_current(self, params: list[str]) -> None:
        self._scpi_set(params, lambda r: r.max_current, "current", self.set_current_limit)

    def _scpi_output(self, params: list[str]) -> None:
        if not params or not params[0]:
            raise ScpiError(MISSING_PARAMETER, "OUTP needs ON|OFF")
        if len(params) > 2:
            raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params[2:]))
        on = parse_bool(params[0])
        for ch in self._channels_of(params, 1):
            self.set_output(ch, on)

    def _scpi_query(self, fn: Callable[[int], str]) -> Callable[[list[str]], str]:
        def handler(params: list[str]) -> str:
            if len(params) > 1:
                raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params[1:]))
            return ",".join(fn(ch) for ch in self._channels_of(params, 0))

        return handler

    @staticmethod
    def _no_params_query(params: list[str], answer: str) -> str:
        if params:
            raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params))
        return answer

    def _scpi_nselect(self, params: list[str]) -> None:
        if len(params) != 1 or not params[0]:
            raise ScpiError(MISSING_PARAMETER if not params or not params[0] else PARAMETER_NOT_ALLOWED, "INST:NSEL n")
        channel = int(parse_number(params[0], minimum=min(self.ranges), maximum=max(self.ranges)))
        with self._lock:
            self._selected = channel

    def _channel_name(self, text: str) -> int:
        name = text.strip().upper()
        if not name.startswith("CH") or not name[2:].isdigit():
            raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"{text!r} is not CH1..CH{max(self.ranges)}")
        return self._check_channel(int(name[2:]))

    def _scpi_select(self, params: list[str]) -> None:
        if len(params) != 1 or not params[0]:
            raise ScpiError(MISSING_PARAMETER if not params or not params[0] else PARAMETER_NOT_ALLOWED, "INST CHn")
        channel = self._channel_name(params[0])
        with self._lock:
            self._selected = channel

    def _scpi_apply(self, params: list[str]) -> None:
        if len(params) < 2:
            raise ScpiError(MISSING_PARAMETER, "APPL CHn,<volts>[,<amps>]")
        if len(params) > 3:
            raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params[3:]))
        channel = self._channel_name(params[0])
        rng = self.ranges[channel]
        volts = parse_number(params[1], minimum=0.0, maximum=rng.max_voltage, default=0.0)
        amps = (parse_number(params[2], minimum=0.0, maximum=rng.max_current, default=rng.max_current)
                if len(params) == 3 else self.current_limit(channel))
        self._change(channel, voltage=volts, current=amps)

    def _scpi_apply_query(self, params: list[str]) -> str:
        if len(params) > 1:
            raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params[1:]))
        channel = self._channel_name(params[0]) if params else self._selected
        return f'"{format_number(self.voltage_setpoint(channel))},{format_number(self.current_limit(channel))}"'


# --------------------------------------------------------------------------- other supply dialects
#: Rigol DP832: CH1 and CH2 30 V / 3 A, CH3 5 V / 3 A.
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


class RigolDP800Model(SupplyModel):
    """Rigol DP800 (DP832) command set: `:SOURn:VOLT 12`, `:OUTP CH2,ON`, `:MEAS:VOLT? CH2`, `:APPL CH2,12,1`.

    A header without its channel (`:SOUR:VOLT`, `:OUTP ON`, `:MEAS?`) acts on the selected channel
    (`:INST CH2` / `:INST:NSEL 2`), as on the instrument.
    """

    idn = RIGOL_DP832_IDN

    def __init__(self, ranges: Mapping[int, ChannelRange] = DP832_RANGES) -> None:
        super().__init__(ranges)

    def _suffix_channel(self) -> int:
        n = self.suffixes[0] if self.suffixes else 0
        return self._check_channel(n) if n else self._selected

    def _ch_param(self, params: list[str], index: int) -> int:
        return self._channel_name(params[index]) if len(params) > index else self._selected

    def commands(self) -> list[ScpiCommand]:
        level = "[:SOURce#]:VOLTage[:LEVel][:IMMediate][:AMPLitude]"
        curr = "[:SOURce#]:CURRent[:LEVel][:IMMediate][:AMPLitude]"
        return [
            ScpiCommand(level, False, lambda p: self._rigol_set(p, lambda r: r.max_voltage, self.set_voltage)),
            ScpiCommand(level, True, lambda p: self._rigol_query(p, lambda ch: format_number(self.voltage_setpoint(ch)))),
            ScpiCommand(curr, False, lambda p: self._rigol_set(p, lambda r: r.max_current, self.set_current_limit)),
            ScpiCommand(curr, True, lambda p: self._rigol_query(p, lambda ch: format_number(self.current_limit(ch)))),
            ScpiCommand(":OUTPut[:STATe]", False, self._rigol_output),
            ScpiCommand(":OUTPut[:STATe]", True,
                        lambda p: "ON" if self.is_on(self._only_channel(p)) else "OFF"),
            ScpiCommand(":MEASure[:VOLTage][:DC]", True,
                        lambda p: format_number(self.measure_voltage(self._only_channel(p)))),
            ScpiCommand(":MEASure:CURRent[:DC]", True,
                        lambda p: format_number(self.measure_current(self._only_channel(p)))),
            ScpiCommand(":INSTrument[:SELect]", False, self._scpi_select),
            ScpiCommand(":INSTrument[:SELect]", True, lambda p: self._no_params_query(p, f"CH{self._selected}")),
            ScpiCommand(":INSTrument:NSELect", False, self._scpi_nselect),
            ScpiCommand(":INSTrument:NSELect", True, lambda p: self._no_params_query(p, str(self._selected))),
            ScpiCommand(":APPLy", False, self._scpi_apply),
            ScpiCommand(":APPLy", True, self._scpi_apply_query),
        ]

    def _rigol_set(self, params: list[str], limit_of: Callable[[ChannelRange], float],
                   setter: Callable[[int, float], None]) -> None:
        if len(params) != 1 or not params[0]:
            raise ScpiError(MISSING_PARAMETER if not params or not params[0] else PARAMETER_NOT_ALLOWED, "<value>")
        ch = self._suffix_channel()
        setter(ch, parse_number(params[0], minimum=0.0, maximum=limit_of(self.ranges[ch]), default=0.0))

    def _rigol_query(self, params: list[str], fn: Callable[[int], str]) -> str:
        if params:
            raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params))
        return fn(self._suffix_channel())

    def _only_channel(self, params: list[str]) -> int:
        if len(params) > 1:
            raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params[1:]))
        return self._ch_param(params, 0)

    def _rigol_output(self, params: list[str]) -> None:
        if not params or not params[-1]:
            raise ScpiError(MISSING_PARAMETER, ":OUTP [CHn,]ON|OFF")
        if len(params) > 2:
            raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params[2:]))
        channel = self._channel_name(params[0]) if len(params) == 2 else self._selected
        self.set_output(channel, parse_bool(params[-1]))


class HmpModel(SupplyModel):
    """Rohde & Schwarz HMP4040: select a channel (`INST:NSEL 2` or `INST OUT2`), then plain commands act on it.

    A channel delivers when it is activated (`OUTP:SEL ON`, or `OUTP ON` which also switches the
    general output on) and the general output is on (`OUTP:GEN ON`). No channel lists.
    """

    idn = RS_HMP4040_IDN

    def __init__(self, ranges: Mapping[int, ChannelRange] = HMP4040_RANGES) -> None:
        self._general = False
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
        with self._change_lock:
            self._general = False
            super().reset()

    def commands(self) -> list[ScpiCommand]:
        level = "[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]"
        curr = "[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]"
        sel = lambda: self._selected  # noqa: E731 - the channel every plain command acts on
        return [
            ScpiCommand(level, False, lambda p: self._hmp_set(p, self.ranges[sel()].max_voltage, self.set_voltage)),
            ScpiCommand(level, True, lambda p: self._no_params_query(p, format_number(self.voltage_setpoint(sel())))),
            ScpiCommand(curr, False, lambda p: self._hmp_set(p, self.ranges[sel()].max_current, self.set_current_limit)),
            ScpiCommand(curr, True, lambda p: self._no_params_query(p, format_number(self.current_limit(sel())))),
            ScpiCommand("OUTPut[:STATe]", False, lambda p: self.set_output(sel(), self._one_bool(p))),
            ScpiCommand("OUTPut[:STATe]", True, lambda p: self._no_params_query(p, "1" if self.is_on(sel()) else "0")),
            ScpiCommand("OUTPut:SELect", False, lambda p: self._activate(sel(), self._one_bool(p))),
            ScpiCommand("OUTPut:SELect", True,
                        lambda p: self._no_params_query(p, "1" if SupplyModel.is_on(self, sel()) else "0")),
            ScpiCommand("OUTPut:GENeral", False, lambda p: self.set_general(self._one_bool(p))),
            ScpiCommand("OUTPut:GENeral", True, lambda p: self._no_params_query(p, "1" if self._general else "0")),
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
        ]

    def _activate(self, channel: int, on: bool) -> None:
        SupplyModel.set_output(self, channel, on)

    @staticmethod
    def _one_bool(params: list[str]) -> bool:
        if len(params) != 1 or not params[0]:
            raise ScpiError(MISSING_PARAMETER if not params or not params[0] else PARAMETER_NOT_ALLOWED, "ON|OFF")
        return parse_bool(params[0])

    def _hmp_set(self, params: list[str], maximum: float, setter: Callable[[int, float], None]) -> None:
        """`VOLT 12` / `CURR 1`: one value for the selected channel; a channel list is not HMP syntax (-108)."""
        if len(params) != 1 or not params[0]:
            raise ScpiError(MISSING_PARAMETER if not params or not params[0] else PARAMETER_NOT_ALLOWED, "<value>")
        setter(self._selected, parse_number(params[0], minimum=0.0, maximum=maximum, default=0.0))

    def _hmp_select(self, params: list[str]) -> None:
        if len(params) != 1 or not params[0]:
            raise ScpiError(MISSING_PARAMETER, "INST OUT1..OUT4")
        name = params[0].strip().upper()
        for prefix in ("OUTPUT", "OUTP", "OUT"):
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                ch = self._check_channel(int(name[len(prefix):]))
                with self._lock:
                    self._selected = ch
                return
        raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"{params[0]!r} is not OUT1..OUT{max(self.ranges)}")

    def _hmp_apply(self, params: list[str]) -> None:
        if len(params) != 2:
            raise ScpiError(MISSING_PARAMETER if len(params) < 2 else PARAMETER_NOT_ALLOWED, "APPL <volts>,<amps>")
        rng = self.ranges[self._selected]
        volts = parse_number(params[0], minimum=0.0, maximum=rng.max_voltage, default=0.0)
        amps = parse_number(params[1], minimum=0.0, maximum=rng.max_current, default=rng.max_current)
        self._change(self._selected, voltage=volts, current=amps)


class GenericSupplyModel(SupplyModel):
    """A single-output SCPI supply (dialect `scpi`): `VOLT 12`, `OUTP ON`, `MEAS:VOLT?`."""

    idn = GENERIC_PSU_IDN

    def __init__(self, ranges: Mapping[int, ChannelRange] = GENERIC_RANGES) -> None:
        super().__init__(ranges)


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
