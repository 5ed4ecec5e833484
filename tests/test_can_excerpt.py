"""The CAN excerpt the report carries beside the .blf: decoded frames around each failure and injected fault."""

from __future__ import annotations

import re
from pathlib import Path

import can
import cantools
import pytest

from hil.bench import contract
from hil.report import can_excerpt
from hil.report.can_excerpt import Mark, excerpt, write_excerpt

ROOT = Path(__file__).resolve().parents[1]
DB = cantools.database.load_file(str(ROOT / "benches/dbc/bms.dbc"))
SOC = DB.get_message_by_name("BMS_SocCore")
T0 = 1_800_000_000.0


def _soc(t: float, counter: int) -> can.Message:
    data = SOC.encode({"SOC": 50.0, "PackVoltage": 48.0, "PackCurrent": 0.0, "RollingCounter": counter % 16,
                       "CycleExecTime": 2000})
    return can.Message(timestamp=t, arbitration_id=SOC.frame_id, data=data, is_extended_id=False)


def _uds(t: float) -> can.Message:
    return can.Message(timestamp=t, arbitration_id=contract.UDS_PHYS_REQUEST_ID, data=bytes([0x21] + [0xAA] * 7),
                       is_extended_id=False, is_rx=False)


def _trace(seconds: float = 20.0) -> list[can.Message]:
    """SOC frames every 100 ms, and a download burst (1000 UDS frames a second) from 9 s to 12 s."""
    frames = [_soc(T0 + i * 0.1, i) for i in range(int(seconds * 10))]
    frames += [_uds(T0 + 9.0 + i * 0.001) for i in range(3000)]
    return sorted(frames, key=lambda m: m.timestamp)


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("  ")]


def test_window_around_a_fault_is_decoded_and_bounded():
    text = excerpt(_trace(), [Mark(T0 + 10.0, "fault injected: supply dip to 7.5 V")], db=DB,
                   labels={contract.UDS_PHYS_REQUEST_ID: "UDS request"})
    assert "BMS_SocCore 200" in text and "UDS request 3,000" in text  # the summary counts the whole trace
    assert "== fault injected: supply dip to 7.5 V at" in text
    rows = _lines(text)
    mark = next(i for i, ln in enumerate(rows) if "---- fault injected" in ln)
    before, after = rows[:mark], rows[mark + 1:]
    assert len(before) == can_excerpt.MAX_BEFORE and len(after) == can_excerpt.MAX_AFTER
    # a download: the UDS runs between SOC frames keep their ends and count the rest, so the lines reach back
    # over several SOC cycles instead of a few milliseconds of ISO-TP frames
    folded = [ln for ln in before + after if " more UDS request frames ..." in ln]
    assert len(folded) >= 8 and all(int(ln.split("...")[1].split()[0]) > 0 for ln in folded), before + after
    before = [ln for ln in before if ln not in folded]
    after = [ln for ln in after if ln not in folded]
    shown = re.search(r"\((\d+) frames before, (\d+) after; runs of undecoded frames folded\): the (\d+) lines "
                      r"before it and the (\d+) after", text)
    assert shown is not None, text
    assert 1000 < int(shown[1]) < 1100 and 1000 < int(shown[2]) < 1100, shown[0]  # 1000 UDS frames a second
    assert int(shown[3]) == can_excerpt.MAX_BEFORE and int(shown[4]) == can_excerpt.MAX_AFTER, shown[0]
    assert all("UDS request" in ln or "BMS_SocCore" in ln for ln in before + after)
    soc_line = next(ln for ln in rows if "BMS_SocCore" in ln)
    assert "SOC=50.0" in soc_line and "RollingCounter=" in soc_line  # decoded with the DBC
    assert "21 aa aa aa aa aa aa aa" in before[-1] and " Tx " in before[-1]  # not in the DBC: raw bytes
    times = [float(ln.split()[0]) for ln in before + after]
    assert times == sorted(times) and -can_excerpt.BEFORE_S <= times[0] < -0.3 and 0 <= times[-1] <= can_excerpt.AFTER_S


def test_each_mark_has_its_window_and_many_marks_are_cut():
    marks = [Mark(T0 + 15.0, "fault injected: cut 1"), Mark(T0 + 15.5, "fault injected: cut 2"),
             Mark(T0 + 18.0, "test failed (call): AssertionError: boom")]
    text = excerpt(_trace(), marks, db=DB)
    assert text.count("\n== ") == 3 and text.count("---- fault injected: cut 1") == 1, text
    assert "== test failed (call): AssertionError: boom at" in text
    many = [Mark(T0 + 1.0 + i * 0.2, f"fault injected: cut {i}") for i in range(40)] + [marks[-1]]
    text = excerpt(_trace(), many, db=DB)
    assert f"41 marks: windows for the first {can_excerpt.MAX_MARKS - 1} and the last" in text
    assert text.count("\n== ") == can_excerpt.MAX_MARKS and "test failed (call)" in text and "cut 39" not in text


def test_a_clean_test_has_the_summary_only():
    text = excerpt(_trace(5.0), [], db=DB)
    assert "BMS_SocCore 50" in text and "no failure and no injected fault" in text
    assert _lines(text) == [] and "\n== " not in text


def test_written_from_a_blf_trace_and_small(tmp_path):
    blf = tmp_path / "can.blf"
    with can.Logger(str(blf)) as log:
        for msg in _trace():
            log.on_message_received(msg)
    out = write_excerpt(blf, tmp_path / "can-excerpt.txt", [Mark(T0 + 10.0, "fault injected: x")], db=DB)
    text = out.read_text()
    assert "BMS_SocCore 200" in text and "---- fault injected: x" in text
    assert out.stat().st_size < 20_000, out.stat().st_size


def test_an_unreadable_trace_is_said_so(tmp_path):
    bad = tmp_path / "can.blf"
    bad.write_bytes(b"not a blf file at all")
    text = write_excerpt(bad, tmp_path / "x.txt", [], db=DB).read_text()
    assert "could not be read" in text


@pytest.mark.parametrize("frames", [[]])
def test_an_empty_trace(frames):
    assert "holds no frames" in excerpt(frames, [Mark(T0, "x")], db=DB)
