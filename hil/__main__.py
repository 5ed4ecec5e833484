"""`python -m hil` runs the hil command."""

from hil.cli import main

main()
