"""`python -m fleetpy` runs the CLI."""

from .cli import main

main()
