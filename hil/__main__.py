"""`python -m hil` runs the hil command."""

from hil.cli.main import main

main()
