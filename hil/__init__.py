"""bms-ota-hil: hardware-in-the-loop validation of BMS firmware updates."""

__version__ = "0.1.0"
