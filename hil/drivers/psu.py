"""Programmable supply driver: SCPI over pyvisa (`@py`), one dialect per vendor family.

Safety first: every setting is checked against the bench file's `psu.limits` (and the model's
channel range) before anything is sent, read back afterwards, and every write (channel selections
included) is followed by `SYST:ERR?`.
Every command and answer goes to the supply log with a timestamp; settings and measurements
are also kept as `events` for reports.

`ScpiSession` (the VISA session with log and error checks) is shared with the battery
emulator driver in hil/drivers/load.py.
"""

from __future__ import annotations

import datetime as _dt
import math
import socket
import threading
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, ContextManager, Iterator, Mapping

import pyvisa
import pyvisa.constants
import pyvisa.errors

from hil.bench.config import PsuConfig
from hil.errors import BenchConfigError, InstrumentError, LimitViolation, ReadbackMismatch

#: A SYST:ERR? answer meaning "no error": `+0,"No error"` (some vendors: `0,"No error"`).
_NO_ERROR_CODES = ("+0", "0", "-0")
#: How many queued errors are drained after one setting before giving up.
_MAX_ERRORS_DRAINED = 32


# --------------------------------------------------------------------------- session + log
@dataclass(frozen=True)
class InstrumentEvent:
    """One setting, measurement or action of an instrument, for reports."""

    time: float  # wall clock, seconds since the epoch
    kind: str  # "set" | "measure" | "action"
    name: str  # "voltage", "current", "output", "dropout", ...
    value: float | bool | str
    unit: str = ""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"time": self.time, "kind": self.kind, "name": self.name, "value": self.value, "unit": self.unit}


def _stamp(t: float) -> str:
    return _dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="microseconds")


class ScpiSession:
    """One VISA session to a SCPI instrument: writes, queries, error queue, and a timestamped log.

    Thread-safe: each call is one transaction; hold `lock` to make several calls one transaction.
    Transport failures become `InstrumentError` naming the resource and the command.
    """

    def __init__(self, resource: str, timeout_ms: int, *, name: str, log_path: Path | None = None,
                 visa_library: str = "@py") -> None:
        self.resource = resource
        self.name = name
        self.timeout_ms = timeout_ms
        self.lock = threading.RLock()
        self._log: IO[str] | None = None
        self._log_path: Path | None = None
        self._events: list[InstrumentEvent] = []
        self._unlogged = threading.local()  # per thread: commands and answers stay out of the text log
        self.start_log(log_path)
        try:
            # The bench's `visa_library`: pyvisa-py by default, a vendor VISA for USB-TMC/GPIB instruments.
            self._rm = pyvisa.ResourceManager(visa_library)
            self._inst: pyvisa.resources.MessageBasedResource = self._rm.open_resource(  # type: ignore[assignment]
                resource, read_termination="\n", write_termination="\n",
                                                timeout=timeout_ms, open_timeout=timeout_ms)
        except (pyvisa.errors.Error, OSError, ValueError, ImportError) as exc:
            self._write_log("!", f"open failed: {exc}")
            raise InstrumentError(f"{name} {resource}: cannot open the VISA resource: {exc}") from exc
        _set_nodelay(self._inst)

    # ------------------------------------------------------------------ log
    @property
    def log_path(self) -> Path | None:
        """Where the command log goes now (None: in memory only)."""
        return self._log_path

    def start_log(self, path: Path | None) -> None:
        """Append every command and answer to `path` from now on; None stops file logging."""
        with self.lock:
            if self._log is not None:
                self._log.close()
                self._log = None
            self._log_path = Path(path) if path is not None else None
            if self._log_path is not None:
                self._log_path.parent.mkdir(parents=True, exist_ok=True)
                self._log = open(self._log_path, "a", encoding="utf-8")

    @contextmanager
    def unlogged(self) -> Iterator[None]:
        """Meanwhile the calling thread's commands, answers and measurements stay out of the text log (a sampler
        that keeps its own record); failures (`!`) are still logged, events still kept."""
        self._unlogged.on = True
        try:
            yield
        finally:
            self._unlogged.on = False

    def _write_log(self, direction: str, text: str, t: float | None = None) -> None:
        if direction != "!" and getattr(self._unlogged, "on", False):
            return
        if self._log is not None:
            self._log.write(f"{_stamp(t or time.time())} {direction} {text}\n")
            self._log.flush()

    @property
    def events(self) -> list[InstrumentEvent]:
        """Settings, measurements and actions so far (a copy)."""
        with self.lock:
            return list(self._events)

    def record(self, kind: str, name: str, value: float | bool | str, unit: str = "") -> InstrumentEvent:
        """Add an event (and a log line) for reports."""
        event = InstrumentEvent(time.time(), kind, name, value, unit)
        with self.lock:
            self._events.append(event)
            self._write_log("#", f"{kind} {name} = {value}{' ' + unit if unit else ''}", event.time)
        return event

    def clear_events(self) -> None:
        """Forget the in-memory events."""
        with self.lock:
            self._events.clear()

    # ------------------------------------------------------------------ I/O
    def write(self, command: str) -> None:
        """Send one command."""
        with self.lock:
            self._write_log(">", command)
            try:
                self._inst.write(command)
            except (pyvisa.errors.Error, OSError) as exc:
                self._write_log("!", f"{type(exc).__name__}: {exc}")
                raise InstrumentError(f"{self.name} {self.resource}: sending {command!r} failed: {exc}") from exc

    def query(self, command: str) -> str:
        """Send a query and return its answer line (stripped)."""
        with self.lock:
            self._write_log(">", command)
            try:
                answer = self._inst.query(command).strip()
            except pyvisa.errors.VisaIOError as exc:
                self._write_log("!", f"no answer: {exc.abbreviation}")
                if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                    raise InstrumentError(f"{self.name} {self.resource} did not answer {command!r} within "
                                          f"{self.timeout_ms} ms") from exc
                raise InstrumentError(f"{self.name} {self.resource}: {command!r} failed: {exc}") from exc
            except (pyvisa.errors.Error, OSError) as exc:
                self._write_log("!", f"{type(exc).__name__}: {exc}")
                raise InstrumentError(f"{self.name} {self.resource}: {command!r} failed: {exc}") from exc
            self._write_log("<", answer)
            return answer

    def query_floats(self, command: str) -> list[float]:
        """A query answered with comma-separated numbers."""
        answer = self.query(command)
        try:
            return [float(part) for part in answer.strip('"').split(",")]
        except ValueError:
            raise InstrumentError(f"{self.name} {self.resource}: {command!r} answered {answer!r}, not a number") from None

    def query_float(self, command: str) -> float:
        """A query answered with one number."""
        values = self.query_floats(command)
        if len(values) != 1:
            raise InstrumentError(f"{self.name} {self.resource}: {command!r} answered {len(values)} values, expected 1")
        return values[0]

    def check_errors(self, after: str, error_query: str = "SYST:ERR?") -> None:
        """Drain the instrument's error queue; InstrumentError with every entry if it held any."""
        errors: list[str] = []
        with self.lock:
            for _ in range(_MAX_ERRORS_DRAINED):
                answer = self.query(error_query)
                if answer.split(",", 1)[0].strip() in _NO_ERROR_CODES:
                    break
                errors.append(answer)
        if errors:
            raise InstrumentError(f"{self.name} {self.resource} reported after {after!r}: {'; '.join(errors)}")

    def close(self) -> None:
        """Close this VISA session and the log.

        Never the resource manager: pyvisa shares one per VISA library in the process, and closing it
        closes every other instrument's session too (the virtual fleet runs many benches in one process:
        another board's supply then failed with "Invalid session handle" or a closed socket).
        """
        with self.lock:
            try:
                self._inst.close()
            except (pyvisa.errors.Error, OSError):
                pass  # closing a session to an instrument that went away must not fail
            self.start_log(None)


def _set_nodelay(inst: object) -> None:
    """TCP_NODELAY on a raw-socket session: Nagle would hold each query back until the previous
    command is ACKed (a delayed ACK, ~40 ms per setting).

    pyvisa-py 0.8 registers the wrong setter for VI_ATTR_TCPIP_NODELAY, so this reaches its
    session's socket directly; anything else (another backend, not TCP) is left as it is.
    """
    try:
        session = inst.visalib.sessions[inst.session]  # type: ignore[attr-defined]
        sock = getattr(session, "interface", None)
    except (AttributeError, KeyError, TypeError):
        return
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def check_readback(what: str, requested: float, readback: float, *, abs_tol: float, rel_tol: float = 1e-3) -> None:
    """ReadbackMismatch unless `readback` is within `abs_tol` + `rel_tol` of `requested`."""
    tolerance = abs_tol + rel_tol * abs(requested)
    if not abs(readback - requested) <= tolerance:
        raise ReadbackMismatch(f"{what}: commanded {requested:g}, instrument reads back {readback:g} "
                               f"(tolerance {tolerance:g})")


def _num(value: float) -> str:
    """A number as sent to an instrument: shortest form, no trailing zeros."""
    return f"{value:.6g}"


# --------------------------------------------------------------------------- dialects
class PsuDialect:
    """Generic SCPI supply with a single output: `VOLT 12`, `OUTP ON`, `MEAS:VOLT?`."""

    name = "scpi"
    multi_channel = False
    error_query = "SYST:ERR?"

    def select(self, channel: int) -> list[str]:
        """Commands that make `channel` the target of the plain commands below (none by default)."""
        return []

    def set_voltage(self, channel: int, volts: float) -> str:
        return f"VOLT {_num(volts)}"

    def query_voltage(self, channel: int) -> str:
        return "VOLT?"

    def set_current(self, channel: int, amps: float) -> str:
        return f"CURR {_num(amps)}"

    def query_current(self, channel: int) -> str:
        return "CURR?"

    def set_output(self, channel: int, on: bool) -> str:
        return f"OUTP {'ON' if on else 'OFF'}"

    def query_output(self, channel: int) -> str:
        return "OUTP?"

    def measure_voltage(self, channel: int) -> str:
        return "MEAS:VOLT?"

    def measure_current(self, channel: int) -> str:
        return "MEAS:CURR?"

    @staticmethod
    def parse_output(answer: str) -> bool:
        """`1`/`ON` -> True, `0`/`OFF` -> False; ValueError otherwise."""
        word = answer.strip().strip('"').upper()
        if word in ("1", "ON"):
            return True
        if word in ("0", "OFF"):
            return False
        raise ValueError(f"output state {answer!r} is not 1/0/ON/OFF")


class KeysightE36300Dialect(PsuDialect):
    """Keysight E36300 series: channel lists, `VOLT 12,(@2)`, `MEAS:VOLT? (@2)`."""

    name = "keysight_e36300"
    multi_channel = True

    def set_voltage(self, channel: int, volts: float) -> str:
        return f"VOLT {_num(volts)},(@{channel})"

    def query_voltage(self, channel: int) -> str:
        return f"VOLT? (@{channel})"

    def set_current(self, channel: int, amps: float) -> str:
        return f"CURR {_num(amps)},(@{channel})"

    def query_current(self, channel: int) -> str:
        return f"CURR? (@{channel})"

    def set_output(self, channel: int, on: bool) -> str:
        return f"OUTP {'ON' if on else 'OFF'},(@{channel})"

    def query_output(self, channel: int) -> str:
        return f"OUTP? (@{channel})"

    def measure_voltage(self, channel: int) -> str:
        return f"MEAS:VOLT? (@{channel})"

    def measure_current(self, channel: int) -> str:
        return f"MEAS:CURR? (@{channel})"


class RigolDP800Dialect(PsuDialect):
    """Rigol DP800: `:SOUR2:VOLT 12`, `:OUTP CH2,ON`, `:MEAS:VOLT? CH2`."""

    name = "rigol_dp800"
    multi_channel = True

    def set_voltage(self, channel: int, volts: float) -> str:
        return f":SOUR{channel}:VOLT {_num(volts)}"

    def query_voltage(self, channel: int) -> str:
        return f":SOUR{channel}:VOLT?"

    def set_current(self, channel: int, amps: float) -> str:
        return f":SOUR{channel}:CURR {_num(amps)}"

    def query_current(self, channel: int) -> str:
        return f":SOUR{channel}:CURR?"

    def set_output(self, channel: int, on: bool) -> str:
        return f":OUTP CH{channel},{'ON' if on else 'OFF'}"

    def query_output(self, channel: int) -> str:
        return f":OUTP? CH{channel}"

    def measure_voltage(self, channel: int) -> str:
        return f":MEAS:VOLT? CH{channel}"

    def measure_current(self, channel: int) -> str:
        return f":MEAS:CURR? CH{channel}"


class RsHmpDialect(PsuDialect):
    """Rohde & Schwarz HMP: `INST:NSEL n`, then the plain commands act on that channel."""

    name = "rs_hmp"
    multi_channel = True

    def select(self, channel: int) -> list[str]:
        return [f"INST:NSEL {channel}"]


#: Dialect per `psu.dialect` value of a bench file.
DIALECTS: Mapping[str, PsuDialect] = types.MappingProxyType({
    d.name: d for d in (KeysightE36300Dialect(), RigolDP800Dialect(), RsHmpDialect(), PsuDialect())
})

#: Programmable range (max V, max A) per output of models we know, by the `*IDN?` model field.
#: Unknown models are bounded by the bench file's limits only.
_E3631XA = ((1, (6.0, 5.0)), (2, (25.0, 1.0)), (3, (25.0, 1.0)))
_DP832 = ((1, (30.0, 3.0)), (2, (30.0, 3.0)), (3, (5.0, 3.0)))
CHANNEL_RANGES: Mapping[str, Mapping[int, tuple[float, float]]] = types.MappingProxyType({
    model: types.MappingProxyType(dict(ranges)) for model, ranges in {
        "E36311A": _E3631XA,
        "E36312A": _E3631XA,
        "E36313A": ((1, (6.0, 10.0)), (2, (25.0, 2.0)), (3, (25.0, 2.0))),
        "DP832": _DP832,
        "DP832A": _DP832,
        "HMP4040": tuple((ch, (32.0, 10.0)) for ch in range(1, 5)),
    }.items()
})


def channel_range(identity: str, channel: int) -> tuple[float, float] | None:
    """(max V, max A) of `channel` on the model named in `identity`; None for unknown models."""
    fields = [f.strip() for f in identity.split(",")]
    model = fields[1].upper() if len(fields) > 1 else ""
    ranges = CHANNEL_RANGES.get(model)
    if ranges is None:
        return None
    if channel not in ranges:
        raise BenchConfigError(f"psu.channel {channel}: {model} has outputs {', '.join(map(str, ranges))}")
    return ranges[channel]


# --------------------------------------------------------------------------- driver
class ScpiDriver:
    """What every SCPI instrument driver shares: a session opened with `*IDN?`, its log and events."""

    def _open_session(self, resource: str, timeout_ms: int, name: str, log_path: Path | None,
                      visa_library: str = "@py") -> None:
        self._session = ScpiSession(resource, timeout_ms, name=name, log_path=log_path, visa_library=visa_library)
        try:
            self._identity = self._session.query("*IDN?")
        except BaseException:
            self._session.close()
            raise

    def identity(self) -> str:
        """`*IDN?` as read when the driver opened."""
        return self._identity

    @property
    def events(self) -> list[InstrumentEvent]:
        """Settings, measurements and actions with their times (for reports)."""
        return self._session.events

    def start_log(self, path: Path | None) -> None:
        """Log every command and answer to `path` from now on (None: stop logging to a file)."""
        self._session.start_log(path)

    def unlogged(self) -> ContextManager[None]:
        """Queries of the calling thread stay out of the log meanwhile (a sampler with its own record, e.g. a CSV)."""
        return self._session.unlogged()

    def close(self) -> None:
        """Release the instrument."""
        self._session.close()

    def __enter__(self):  # noqa: ANN204 - returns the concrete driver
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ScpiPowerSupply(ScpiDriver):
    """The DUT supply of a bench (`PowerSupply` protocol) over SCPI.

    Opening queries `*IDN?` at once, so a silent or absent instrument fails here with
    `InstrumentError` naming the resource.
    """

    #: Readback tolerances: absolute part (V, A); a relative 0.1 % is added.
    VOLTAGE_TOLERANCE_V = 0.01
    CURRENT_TOLERANCE_A = 0.002

    def __init__(self, cfg: PsuConfig, log_path: Path | None = None, *, visa_library: str = "@py") -> None:
        self.cfg = cfg
        self.channel = cfg.channel
        self.dialect = DIALECTS[cfg.dialect]
        if not self.dialect.multi_channel and cfg.channel != 1:
            raise BenchConfigError(f"psu.channel {cfg.channel}: dialect {cfg.dialect!r} drives single-output "
                                   "supplies (channel 1); pick the vendor dialect for a multi-output supply")
        self._closing = threading.Event()
        self._open_session(cfg.resource, cfg.timeout_ms, "supply", log_path, visa_library)
        try:
            self.range = channel_range(self._identity, cfg.channel)
        except BaseException:
            self._session.close()
            raise
        self._setpoint: float | None = None

    # ------------------------------------------------------------------ basics
    def close(self) -> None:
        """Abort a running dropout/dip wait and release the instrument (the output is left as it is)."""
        self._closing.set()
        super().close()

    # ------------------------------------------------------------------ limits
    def _where(self) -> str:
        return f"supply {self.cfg.resource} channel {self.channel}"

    def _check(self, what: str, value: float, unit: str, bench_limit: float, limit_name: str,
               range_limit: float | None) -> None:
        """LimitViolation before anything is sent."""
        if not math.isfinite(value) or value < 0:
            raise LimitViolation(f"{self._where()}: requested {what} {value} {unit} is not a non-negative number; "
                                 "nothing was sent")
        if value > bench_limit:
            raise LimitViolation(f"{self._where()}: requested {what} {value:g} {unit} exceeds the bench limit "
                                 f"psu.limits.{limit_name} = {bench_limit:g} {unit}; nothing was sent")
        if range_limit is not None and value > range_limit:
            model = self._identity.split(",")[1].strip() if "," in self._identity else "instrument"
            raise LimitViolation(f"{self._where()}: requested {what} {value:g} {unit} exceeds the {model} channel "
                                 f"{self.channel} range of {range_limit:g} {unit}; nothing was sent")

    # ------------------------------------------------------------------ settings
    def _write(self, command: str) -> None:
        """Send one command, then read the error queue: every write is checked on its own, so an error
        names the command that caused it (a refused channel selection never lets a query read another channel)."""
        self._session.write(command)
        self._session.check_errors(command, self.dialect.error_query)

    def _setting(self, command: str) -> None:
        """Select the channel if the dialect needs it, send, and read the error queue after each."""
        with self._session.lock:
            for cmd in self.dialect.select(self.channel):
                self._write(cmd)
            self._write(command)

    def _query(self, command: str) -> str:
        with self._session.lock:
            for cmd in self.dialect.select(self.channel):
                self._write(cmd)
            return self._session.query(command)

    def _query_float(self, command: str) -> float:
        answer = self._query(command)
        try:
            return float(answer.split(",")[0])
        except ValueError:
            raise InstrumentError(f"{self._where()}: {command!r} answered {answer!r}, not a number") from None

    def set_voltage(self, volts: float) -> None:
        """Voltage setpoint: limit-checked, sent, error-checked, read back."""
        self._check("voltage", volts, "V", self.cfg.limits.max_voltage, "max_voltage", self.range and self.range[0])
        with self._session.lock:
            self._setting(self.dialect.set_voltage(self.channel, volts))
            readback = self._query_float(self.dialect.query_voltage(self.channel))
        check_readback(f"{self._where()} voltage setpoint (V)", volts, readback, abs_tol=self.VOLTAGE_TOLERANCE_V)
        self._setpoint = volts
        self._session.record("set", "voltage", volts, "V")

    def set_current_limit(self, amps: float) -> None:
        """Current limit: limit-checked, sent, error-checked, read back."""
        self._check("current limit", amps, "A", self.cfg.limits.max_current, "max_current", self.range and self.range[1])
        with self._session.lock:
            self._setting(self.dialect.set_current(self.channel, amps))
            readback = self._query_float(self.dialect.query_current(self.channel))
        check_readback(f"{self._where()} current limit (A)", amps, readback, abs_tol=self.CURRENT_TOLERANCE_A)
        self._session.record("set", "current_limit", amps, "A")

    def output(self, on: bool) -> None:
        """Output on or off, then read back."""
        with self._session.lock:
            self._setting(self.dialect.set_output(self.channel, on))
            state = self.is_on()
        if state != on:
            raise ReadbackMismatch(f"{self._where()}: output commanded {'ON' if on else 'OFF'}, "
                                   f"instrument reports {'ON' if state else 'OFF'}")
        self._session.record("set", "output", on)

    def is_on(self) -> bool:
        """Output state as the instrument reports it."""
        answer = self._query(self.dialect.query_output(self.channel))
        try:
            return self.dialect.parse_output(answer)
        except ValueError as exc:
            raise InstrumentError(f"{self._where()}: {exc}") from None

    # ------------------------------------------------------------------ measurements
    def measure_voltage(self) -> float:
        """Measured output voltage, V (also kept as an event)."""
        volts = self._query_float(self.dialect.measure_voltage(self.channel))
        self._session.record("measure", "voltage", volts, "V")
        return volts

    def measure_current(self) -> float:
        """Measured output current, A (also kept as an event)."""
        amps = self._query_float(self.dialect.measure_current(self.channel))
        self._session.record("measure", "current", amps, "A")
        return amps

    # ------------------------------------------------------------------ composite actions
    def power_on(self) -> None:
        """Current limit and nominal voltage from the bench file, then output on."""
        self.set_current_limit(self.cfg.current_limit)
        self.set_voltage(self.cfg.nominal_voltage)
        self.output(True)

    def power_off(self) -> None:
        """Output off."""
        self.output(False)

    def _hold(self, seconds: float, what: str) -> None:
        if seconds < 0:
            raise ValueError(f"{what} duration must be >= 0 s, got {seconds}")
        # An Event, not sleep: close() from another thread ends the hold at once.
        self._closing.wait(seconds)

    def power_cycle(self, off_s: float) -> None:
        """Off for `off_s`, then on with the settings unchanged."""
        self._session.record("action", "power_cycle", off_s, "s")
        self.output(False)
        self._hold(off_s, "power cycle")
        self.output(True)

    def dropout(self, duration_s: float) -> None:
        """Power cut: output off for `duration_s`, then on again."""
        self._session.record("action", "dropout", duration_s, "s")
        self.output(False)
        self._hold(duration_s, "dropout")
        self.output(True)

    def dip(self, volts: float, duration_s: float) -> None:
        """Brown-out: setpoint lowered to `volts` for `duration_s`, then the previous setpoint restored."""
        self._check("dip voltage", volts, "V", self.cfg.limits.max_voltage, "max_voltage", self.range and self.range[0])
        restore = self._setpoint if self._setpoint is not None else self.cfg.nominal_voltage
        self._session.record("action", "dip", f"{volts:g} V for {duration_s:g} s")
        self.set_voltage(volts)
        self._hold(duration_s, "dip")
        self.set_voltage(restore)

    def safe_state(self) -> None:
        """Output off first, then the nominal voltage and current limit restored (output stays off)."""
        self.output(False)
        self.set_current_limit(self.cfg.current_limit)
        self.set_voltage(self.cfg.nominal_voltage)
