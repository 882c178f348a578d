"""What every verb of the API shares: a pool opened once, the Trainer settings a verb trains with."""

from __future__ import annotations

from learngene.pool.store import Pool


def _open(pool) -> Pool:
    return pool if isinstance(pool, Pool) else Pool.open(pool)


def _targs(trainer_args, label: str, progress: bool = True):
    """The Trainer settings a verb trains with: the caller's, else quiet defaults (a bar on a
    terminal, a line per epoch in a log)."""
    import sys

    from learngene.core.training import TrainerArgs

    if trainer_args is not None:
        return trainer_args
    tty = sys.stderr.isatty()
    return TrainerArgs(progress=progress and tty, log_lines=progress and not tty, label=label)
