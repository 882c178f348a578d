"""`python -m learngene.cli` runs the command line (what the tests call)."""

from learngene.cli import main

if __name__ == "__main__":  # not when a tool imports every module (the docs' inspection)
    main()
