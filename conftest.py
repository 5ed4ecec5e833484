"""The bms-ota-hil pytest plugin (fixtures bench, dut, can, uds, psu, console, load, flasher, images).

An installed package registers it as a pytest entry point named `hil.plugin`; this line only loads
it when entry points are off (PYTEST_DISABLE_PLUGIN_AUTOLOAD). Same name: never registered twice.
"""

pytest_plugins = ["hil.plugin"]
