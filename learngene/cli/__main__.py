"""`python -m learngene.cli` runs the command line (what the tests call)."""

from learngene.cli import main

main()
