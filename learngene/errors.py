"""Errors a user can fix. The CLI prints their message on one line and exits 2."""


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
