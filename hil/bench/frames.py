"""The board's periodic frames as data: where its cells and temperature sensors sit, which signal counts cycles.

Both ends read the same facts from the DUT profile and its DBC: the virtual board sends by them, the
tester decodes by them. Nothing here knows the default board's names - they come through the profile
(`can.messages`, `can.signals`, `soc_core`).

- A **pack layout** (cells, temperatures): the message's non-multiplexer signals in DBC order - by
  multiplexer value, then by position in the frame - carry sensors 1..n; a multiplexed message sends
  one group per frame, a plain one all of them. The profile says how many sensors the pack has.
- The **cycle counter**: the SOC frame's signal named by `soc_core.counter`; its range is 2**bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from hil.bench import contract
from hil.bench.dut_profile import DutProfile, ProfileError


def _position(signal: Any) -> int:
    """Where a signal starts in the frame, in bits from its first byte (either byte order)."""
    start = int(signal.start)
    if signal.byte_order == "big_endian":  # cantools numbers Motorola start bits in sawtooth order
        return (start // 8) * 8 + (7 - start % 8)
    return start


@dataclass(frozen=True)
class PackLayout:
    """Sensors 1..n of one message: `slots[i]` = (multiplexer value or None, framework signal name) of sensor i+1."""

    message: str  # framework message name
    multiplexer: str | None  # framework name of the multiplexer signal (None: not multiplexed)
    slots: tuple[tuple[int | None, str], ...]
    count: int  # sensors the pack has (<= len(slots))

    def groups(self) -> list[tuple[int | None, list[tuple[int, str]]]]:
        """(multiplexer value, [(sensor index 0-based, framework signal)]) of every group that carries a sensor
        of the pack, in multiplexer order: what the board sends, one group per frame."""
        out: dict[int | None, list[tuple[int, str]]] = {}
        for index, (mux, name) in enumerate(self.slots):
            out.setdefault(mux, []).append((index, name))
        return [(mux, members) for mux, members in out.items() if any(i < self.count for i, _ in members)]

    def values(self, signals: Mapping[str, Any]) -> dict[int, float]:
        """Sensor number (1-based) -> value of one decoded frame (framework signal names), the pack's sensors only."""
        mux = signals.get(self.multiplexer) if self.multiplexer is not None else None
        mux = int(getattr(mux, "value", mux)) if mux is not None else None
        out = {}
        for index, (group, name) in enumerate(self.slots):
            if index < self.count and group == mux and name in signals:
                out[index + 1] = float(getattr(signals[name], "value", signals[name]))
        return out


def pack_layout(db: Any, profile: DutProfile, message: str, count: int) -> PackLayout:
    """The layout of framework message `message` (cell voltages or temperatures) in `db`; ProfileError when
    the DBC has fewer sensor signals than the profile's pack."""
    names = profile.can
    dbc_name = names.dbc_message(message)
    try:
        spec = db.get_message_by_name(dbc_name)
    except KeyError:
        raise ProfileError(f"profile {profile.name}: message {dbc_name!r} ({message}) is not in the DBC") from None
    to_fw = {s.name: next(iter(names.to_framework_signals(message, {s.name: 0}))) for s in spec.signals}
    mux_signal = next((s for s in spec.signals if s.is_multiplexer), None)
    sensors = [s for s in spec.signals if not s.is_multiplexer]
    slots: list[tuple[int | None, str]] = []
    if mux_signal is None:
        slots = [(None, to_fw[s.name]) for s in sorted(sensors, key=_position)]
    else:
        values = sorted({v for s in sensors for v in (s.multiplexer_ids or [])})
        for value in values:
            group = [s for s in sensors if value in (s.multiplexer_ids or [])]
            slots += [(value, to_fw[s.name]) for s in sorted(group, key=_position)]
    if count > len(slots):
        raise ProfileError(f"profile {profile.name}: the pack has {count} sensors for {dbc_name}, its DBC layout "
                           f"carries {len(slots)} ({', '.join(n for _, n in slots) or 'none'})")
    return PackLayout(message, to_fw[mux_signal.name] if mux_signal is not None else None, tuple(slots), count)


def cell_layout(db: Any, profile: DutProfile) -> PackLayout:
    """Cells 1..soc_core.cells in the cell-voltage message."""
    return pack_layout(db, profile, contract.MSG_CELL_VOLTAGES, profile.soc_core.cells)


def temperature_layout(db: Any, profile: DutProfile) -> PackLayout:
    """Sensors 1..soc_core.temperatures in the temperature message."""
    return pack_layout(db, profile, contract.MSG_TEMPERATURES, profile.soc_core.temperatures)


@dataclass(frozen=True)
class CounterSignal:
    """The SOC frame's cycle counter: its framework signal name and its range (2**bits)."""

    signal: str
    modulo: int


def cycle_counter(db: Any, profile: DutProfile) -> CounterSignal | None:
    """The SOC frame's counter as the profile names it (`soc_core.counter`); None when the profile says the
    board has none. ProfileError when the profile names a signal its DBC lacks."""
    name = profile.soc_core.counter
    if name is None:
        return None
    dbc_message = profile.can.dbc_message(contract.MSG_SOC_CORE)
    try:
        spec = db.get_message_by_name(dbc_message)
        signal = spec.get_signal_by_name(name)
    except KeyError:
        raise ProfileError(f"profile {profile.name}: soc_core.counter names {name!r}, which is not a signal of "
                           f"{dbc_message} in the DBC") from None
    fw = next(iter(profile.can.to_framework_signals(contract.MSG_SOC_CORE, {signal.name: 0})))
    return CounterSignal(fw, int(2 ** signal.length))


def dbc_problems(db: Any, profile: DutProfile) -> list[str]:
    """What the profile's frame facts ask of the DBC and it lacks (counter signal, enough sensor signals)."""
    problems = []
    for check in (lambda: cycle_counter(db, profile), lambda: cell_layout(db, profile),
                  lambda: temperature_layout(db, profile)):
        try:
            check()
        except ProfileError as exc:
            problems.append(str(exc))
    return problems
