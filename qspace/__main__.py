"""`python -m qspace ...`: the `qspace` command (how the embedded worker's child process is started)."""

from qspace.cli import main

main()
