"""The device under test as tests see it: `Dut` (UDS and CAN through the DUT profile), the verdict
checks, the `Flasher` (stage, activate, outcome) and the restore strategies.
"""
