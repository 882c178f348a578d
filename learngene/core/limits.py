"""Sane bounds on every number a user gives, and the machine's cores.

A count from the command line or a file reaches an allocator, a thread pool or a loop:
``--threads 10000`` once started 12,396 threads, ``--batch-sizes 100000`` asked for 2.2 GB,
``--seed -1`` died inside numpy. Each is refused here, before any work, in one line naming
the flag, the value and the bound. torch-free, so the CLI refuses fast.
"""

from __future__ import annotations

import math
import os

from learngene.core.errors import UserError

MAX_BATCH = 4096  # images in one batch (training, timing, calibration)
MAX_EPOCHS = 10_000
MAX_STEPS = 10_000_000
MAX_SEED = 2**32 - 1  # numpy's bound
MAX_WIDTH = 16_384  # embed dim / MLP hidden of a grown model
MAX_DEPTH = 1_024
MAX_RANK = 4_096
MAX_IMG = 4_096  # pixels per side
MAX_RUN_TIME_S = 600.0  # timing seconds per member and batch size
MAX_BATCH_PIXELS = 2**28  # batch x channels x height x width of one timed batch (1 GiB of float32)


def cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def int_in(value, flag: str, low: int, high: int) -> int:
    """``value`` as an int within [low, high], else a one-line error naming ``flag``."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            value = int(value)
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"{flag} must be an integer, got {value!r}") from None
    if not low <= value <= high:
        raise UserError(f"{flag} must be between {low:,} and {high:,}, got {value:,}")
    return value


def float_in(value, flag: str, low: float, high: float, low_open: bool = False) -> float:
    """``value`` as a finite float within [low, high] ((low, high] with ``low_open``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v > high or v < low or (low_open and v == low):
        lo = "(" if low_open else "["
        raise UserError(f"{flag} must be a finite number in {lo}{low:g}, {high:g}], got {value!r}")
    return v


def threads(value, flag: str = "--threads") -> int | None:
    """A thread count: 1 to the cores this process has (more only oversubscribes them)."""
    if value is None:
        return None
    return int_in(value, flag, 1, cores())


def workers(value, flag: str = "--workers") -> int | None:
    """DataLoader worker processes: 0 to the cores this process has."""
    if value is None:
        return None
    return int_in(value, flag, 0, max(1, cores()))


def seed(value, flag: str = "--seed") -> int:
    return int_in(value, flag, 0, MAX_SEED)


def batch_size(value, flag: str = "--batch-size") -> int:
    return int_in(value, flag, 1, MAX_BATCH)


def epochs(value, flag: str = "--epochs", low: int = 1):
    """An epoch count, or ``"auto"`` (train until the validation metric stops improving)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    return int_in(value, flag, low, MAX_EPOCHS)
