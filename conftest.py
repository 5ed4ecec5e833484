"""Loads the bms-ota-hil pytest plugin (fixtures bench, dut, can, uds, psu, console, load, flasher, images).

Suites outside this repository load it with `-p hil.plugin`.
"""

pytest_plugins = ["hil.plugin"]
