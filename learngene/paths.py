"""Where learngene keeps its caches (one place, so tests can point it at a temp dir), and
how it writes a folder so that readers never see half of it."""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def home() -> Path:
    """Cache root: $LEARNGENE_HOME, else $XDG_CACHE_HOME/learngene, else ~/.cache/learngene."""
    if os.environ.get("LEARNGENE_HOME"):
        return Path(os.environ["LEARNGENE_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "learngene"


@contextmanager
def staged_folder(target: str | os.PathLike):
    """Build ``target`` in a temp folder beside it (``.NAME.*.partial``). On success the
    folder takes target's place in one rename (a folder already there is moved aside
    first, then removed); on any failure it is removed and target is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield stage
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(stage, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
