"""Errors a user can fix (the CLI prints their message on one line and exits 2), and the one
way learngene warns."""

import sys


def warn(message: str) -> None:
    """One line on stderr: what the user should know, while the run goes on."""
    print(f"learngene: warning: {message}", file=sys.stderr)


class UserError(Exception):
    """Bad input: a missing path, a wrong size, a corrupt file. The message names the culprit."""

    def __init__(self, message: str):
        # A DataLoader worker re-raises our error with its traceback folded into the
        # message; keep only our own last line.
        if "Original Traceback" in message:
            message = message.strip().splitlines()[-1].split("UserError: ", 1)[-1]
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # one line, always
        return " ".join(self.message.split())


class Interrupted(BaseException):
    """SIGINT / SIGTERM: the run stops, staged work is cleaned up by the `finally` and
    `except BaseException` blocks it passes through, and the CLI exits 128 + the signal.
    A BaseException, not a KeyboardInterrupt: Lightning turns a KeyboardInterrupt into
    exit 1, and SIGTERM into a quiet early stop of training that returns normally."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class CheckFailed(Exception):
    """Something learngene made failed its own check before being written (an exported model
    whose outputs differ from the eager model's): one line naming it, exit 1, nothing written.
    Not the user's input: the CLI exits 1 as for any internal error, with this message."""
