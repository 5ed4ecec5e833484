"""A rack of benches: the rack file (`inventory`), leases (file lock, labgrid coordinator) and
the rack mode under pytest-xdist (`scheduling`).
"""
