"""The bench as data: the bench YAML (`config`), the DUT profile (`dut_profile`), the framework's
meanings (`contract`), validation messages, the bench lock; `bench.Bench` assembles the drivers.

Everything here but `bench` is importable by the virtual board (hil/sim): it describes a board, it
does not drive one.
"""
