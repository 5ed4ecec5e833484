"""Fault injection library: image, transport, power and firmware faults that test cases compose."""
