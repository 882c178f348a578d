"""Where learngene keeps its caches. One place, so tests can point it at a temp dir."""

import os
from pathlib import Path


def home() -> Path:
    """Cache root: $LEARNGENE_HOME, else $XDG_CACHE_HOME/learngene, else ~/.cache/learngene."""
    if os.environ.get("LEARNGENE_HOME"):
        return Path(os.environ["LEARNGENE_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "learngene"
