"""Restore strategies: the profile picks one; a command restore fills its placeholders and reports a
failing tool with its exit code and last output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hil.errors import BenchBroken, BenchConfigError
from hil.bench.dut_profile import RestoreProfile
from hil.dut.restore import CommandRestore, PyOcdRestore, UdsRestore, restore_strategy


def test_profile_chooses_the_strategy():
    assert isinstance(restore_strategy(RestoreProfile()), UdsRestore)
    assert isinstance(restore_strategy(RestoreProfile(method="command", command="true {image}")), CommandRestore)
    assert isinstance(restore_strategy(RestoreProfile(method="pyocd", target="stm32g474retx")), PyOcdRestore)


def test_command_gets_the_image_file_and_address(tmp_path):
    out = tmp_path / "seen.bin"
    script = f"import shutil,sys; shutil.copy(sys.argv[1], {str(out)!r}); print('flashed at', sys.argv[2])"
    cmd = CommandRestore(RestoreProfile(method="command", command=f'{sys.executable} -c "{script}" {{image}} {{address}}',
                                        address=0x08004000))
    assert "flashed at 0x08004000" in cmd.run(b"\x01\x02image", "bench-1")
    assert out.read_bytes() == b"\x01\x02image"


def test_failing_command_reports_exit_code_and_last_output():
    script = "import sys; print('probe not found'); sys.exit(3)"
    cmd = CommandRestore(RestoreProfile(method="command", command=f'{sys.executable} -c "{script}" {{image}}'))
    with pytest.raises(BenchBroken, match=r"(?s)exited with 3: .*probe not found"):
        cmd.run(b"x", "bench-1")


def test_unknown_placeholder_is_named():
    cmd = CommandRestore(RestoreProfile(method="command", command="flash {firmware}"))
    with pytest.raises(BenchConfigError, match=r"bad placeholder 'firmware'; accepted: \{image\}, \{address\}, \{bench\}"):
        cmd.argv(Path("/tmp/x.bin"), "b")


def test_command_that_hangs_is_stopped():
    cmd = CommandRestore(RestoreProfile(method="command", command=f"{sys.executable} -c \"import time; time.sleep(30)\"",
                                        timeout_s=0.5))
    with pytest.raises(BenchBroken, match="did not finish within 0.5 s"):
        cmd.run(b"x", "b")
