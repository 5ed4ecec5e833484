"""Timing and measurements: `Measurement` with its limits (`measure`), streamed SOC cycle
statistics (`soc_timing`).
"""
