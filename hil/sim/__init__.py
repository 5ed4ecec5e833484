"""The virtual bench: a simulated BMS board, supply, battery emulator and console."""
