"""What learngene's processes share: one writer at a time (a lock file per pool or cache), and
workers that die with their parent."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from learngene.core.errors import UserError

# --------------------------------------------------------------------------- locks


def _umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def lock(path: str | os.PathLike, what: str, wait: bool = True, timeout: float = 3600.0):
    """An exclusive lock on ``path`` (a lock file, created if needed) for one writer at a
    time. ``wait``: block until the other writer is done (saying so once), else refuse at
    once in one line, and remove the lock file on the way out (no one waits on it, so no one
    can be left holding a lock on a removed file). The lock goes with the process, so a
    killed writer never leaves it held."""
    path = Path(path)
    for attempt in range(5):  # another writer's probe (check_output) may remove an empty parent meanwhile
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
            break
        except FileNotFoundError:
            if attempt == 4:
                raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if not wait:
                raise UserError(
                    f"{what} is being written by another learngene process (pid {holder}): wait for it to finish"
                ) from None
            print(f"learngene: waiting for another learngene process (pid {holder}) writing {what}", file=sys.stderr)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise UserError(f"{what} stayed locked by pid {holder} for {timeout:.0f} s") from None
                    time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        held = True
        yield
    finally:
        if not wait and locals().get("held"):
            path.unlink(missing_ok=True)
        os.close(fd)  # releases the lock


def is_locked(path: str | os.PathLike) -> bool:
    """Does another process hold the lock on ``path``?"""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def die_with_parent(parent: int) -> None:
    """In a worker: exit when the parent dies, even by SIGKILL (Linux's parent-death signal;
    elsewhere a thread that watches the parent's pid)."""
    import signal
    import threading
    import time

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()
