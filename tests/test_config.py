"""Bench YAML validation: every bad file gives one clear error naming file, field, value and what is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hil.bench.config import load_bench, socket_resource_address
from hil.errors import BenchConfigError

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((ROOT / "benches/sim.yaml").read_text())
    mutate(data)
    p = tmp_path / "bench.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_shipped_bench_files_load():
    for f in sorted((ROOT / "benches").rglob("*.yaml")):
        if "profiles" in f.parts:
            continue  # DUT profiles: tests/test_dut_profile.py
        if f.parent == ROOT / "benches/racks":
            continue  # rack files (their bench files below them are bench files): tests/test_rack.py
        cfg = load_bench(f)
        assert cfg.bench and cfg.psu.limits.max_voltage >= cfg.psu.nominal_voltage


def test_missing_field_is_named(tmp_path):
    p = _write(tmp_path, lambda d: d["dut"].pop("hardware_number"))
    with pytest.raises(BenchConfigError) as err:
        load_bench(p)
    msg = str(err.value)
    assert str(p) in msg and "dut.hardware_number" in msg and "missing" in msg
    assert msg.count("\n") == 0, f"one error expected, got:\n{msg}"


def test_wrong_type_names_value_and_field(tmp_path):
    p = _write(tmp_path, lambda d: d["psu"].update(nominal_voltage="twelve"))
    with pytest.raises(BenchConfigError) as err:
        load_bench(p)
    msg = str(err.value)
    assert "psu.nominal_voltage" in msg and "'twelve'" in msg and "number" in msg


def test_unknown_key_lists_accepted_keys(tmp_path):
    p = _write(tmp_path, lambda d: d["can"].update(bitrat=250000))
    with pytest.raises(BenchConfigError) as err:
        load_bench(p)
    msg = str(err.value)
    assert "can.bitrat" in msg and "unknown key" in msg and "bitrate" in msg and "interface" in msg


def test_bad_choice_lists_accepted_values(tmp_path):
    p = _write(tmp_path, lambda d: d["psu"].update(dialect="agilent"))
    with pytest.raises(BenchConfigError) as err:
        load_bench(p)
    assert "psu.dialect" in str(err.value) and "keysight_e36300" in str(err.value)


def test_nominal_above_safety_limit_is_refused_at_load(tmp_path):
    p = _write(tmp_path, lambda d: d["psu"].update(nominal_voltage=20.0))
    with pytest.raises(BenchConfigError) as err:
        load_bench(p)
    assert "exceeds limits.max_voltage" in str(err.value)


def test_pacing_on_a_real_interface_is_refused(tmp_path):
    def real(d):
        d["virtual"] = False
        d["can"].update(interface="socketcan", channel="can0", pacing=True)
    with pytest.raises(BenchConfigError) as err:
        load_bench(_write(tmp_path, real))
    assert "pacing is for virtual buses" in str(err.value)


def test_not_a_mapping_and_not_yaml(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("- just\n- a list\n")
    with pytest.raises(BenchConfigError, match="top level must be a mapping"):
        load_bench(p)
    p.write_text("bench: [unclosed\n")
    with pytest.raises(BenchConfigError, match="not valid YAML"):
        load_bench(p)
    with pytest.raises(BenchConfigError, match="not found"):
        load_bench(tmp_path / "nope.yaml")


def test_relative_paths_resolve_against_the_bench_file():
    cfg = load_bench(ROOT / "benches/sim.yaml")
    assert cfg.can.dbc == ROOT / "benches/dbc/bms.dbc"
    assert cfg.sim is not None and cfg.sim.flash_file == ROOT / ".hil/sim-1.flash"


def test_socket_resource_parsing():
    assert socket_resource_address("TCPIP0::127.0.0.1::5025::SOCKET") == ("127.0.0.1", 5025)
    with pytest.raises(BenchConfigError, match="TCPIP0::<host>::<port>::SOCKET"):
        socket_resource_address("USB0::0x2A8D::0x1102::MY1234::INSTR")


def test_can_interface_is_checked_against_python_cans_registry(tmp_path):
    import can

    def real(name):
        def mutate(d):
            d["virtual"] = False
            d.pop("sim")
            d["can"].update(interface=name, channel="0", pacing=False)
        return mutate

    with pytest.raises(BenchConfigError) as err:
        load_bench(_write(tmp_path, real("peak-usb")))
    msg = str(err.value)
    assert "can.interface" in msg and "'peak-usb' is not a python-can interface" in msg
    assert all(name in msg for name in sorted(can.interfaces.VALID_INTERFACES)), msg
    # every interface python-can knows is accepted, not a fixed list of ours
    for name in sorted(can.interfaces.VALID_INTERFACES - {"udp_multicast", "virtual"}):
        assert load_bench(_write(tmp_path, real(name))).can.interface == name


def test_fd_bit_timing_from_sample_points(tmp_path):
    import can

    def fd(d):
        d["virtual"] = False
        d.pop("sim")
        d["can"] = {"interface": "pcan", "channel": "PCAN_USBBUS1", "bitrate": 500000, "fd": True,
                    "data_bitrate": 2000000, "timing": {"f_clock": 80000000, "sample_point": 80.0,
                                                        "data_sample_point": 75.0}}
    cfg = load_bench(_write(tmp_path, fd))
    timing = cfg.can.bit_timing()
    assert isinstance(timing, can.BitTimingFd)
    assert (timing.nom_bitrate, timing.data_bitrate) == (500000, 2000000)
    assert timing.nom_sample_point == pytest.approx(80.0) and timing.data_sample_point == pytest.approx(75.0)

    def no_data_point(d):
        fd(d)
        del d["can"]["timing"]["data_sample_point"]
    with pytest.raises(BenchConfigError, match="needs data_sample_point"):
        load_bench(_write(tmp_path, no_data_point))

    def impossible(d):
        fd(d)
        d["can"]["timing"]["f_clock"] = 1000
    with pytest.raises(BenchConfigError, match="no bit timing for f_clock 1000 Hz"):
        load_bench(_write(tmp_path, impossible))


def test_example_benches_give_fd_timing_as_sample_points():
    import can

    for name in ("kvaser-fd-hmp.yaml", "pcan-fd-e36300.yaml"):
        cfg = load_bench(ROOT / "benches/examples" / name)
        assert isinstance(cfg.can.bit_timing(), can.BitTimingFd), name
        assert "tseg1" not in cfg.can.args, f"{name}: register values instead of sample points"
