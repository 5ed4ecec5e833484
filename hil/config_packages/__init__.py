"""Configuration packages (what a fleet manager pushes: signed parameter sets per vehicle group):
container, signing and verification (`package`, shared with the board), recipes, the tester's
sequence (`loader`). Not the DUT profile (hil/bench/bench/dut_profile.py), which says what a board is.
"""
