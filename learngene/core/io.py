"""The one I/O module: where learngene keeps its caches, how it writes (staged folders,
atomic files), checksums, checkpoints read without unpickling, timm local-dir folders, and
the one check every writer makes of its output folder.

torch and safetensors are imported where used, so the CLI can refuse bad input fast.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from learngene.core.errors import UserError
from learngene.core.processes import _umask, is_locked

# What a name that becomes a file or folder may be (a recipe, an auxiliary model, a task, a
# member id, a device pick name): no separators, no leading dot, no control characters.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


def check_name(name, what: str = "name") -> str:
    """``name`` if it is safe to use as one path component, else a one-line error."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise UserError(
            f"{what} {name!r} must be letters, digits, '.', '_', '-', '@' or '+' (it names a file or folder)"
        )
    return name


def inside(root: str | os.PathLike, rel: str, what: str = "path") -> Path:
    """``root / rel`` for a relative path read from a manifest or a name, refused (one line)
    when it is absolute, climbs out with '..', or leads through a symlink out of ``root``."""
    root = Path(root)
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in Path(rel).parts or "\x00" in rel:
        raise UserError(f"{what} {rel!r} is not a path inside {root}")
    path = root / rel
    real_root = os.path.realpath(root)
    if os.path.commonpath([os.path.realpath(path), real_root]) != real_root:
        raise UserError(f"{what} {rel!r} leads out of {root} (through a symlink)")
    return path


def real_folder(path: str | os.PathLike, what: str = "folder") -> Path:
    """A folder learngene writes into, refused when it is a symlink (it would redirect the
    writes elsewhere)."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{what} {path} is a symlink: learngene does not write through it")
    return path


@functools.lru_cache(maxsize=1)
def publish(path: str | os.PathLike) -> None:
    """Give ``path`` (and, for a folder, all it holds) the permissions the umask allows:
    temp files and folders are born 0600 / 0700, and a model server running as another
    user could not read an exported child."""
    path = Path(path)
    todo = [path] + (list(path.rglob("*")) if path.is_dir() and not path.is_symlink() else [])
    for p in todo:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~_umask())


WRITE_ERRORS = (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.EPERM, errno.EFBIG)
_ERRNO_TEXT = {
    "no space left on device": errno.ENOSPC,
    "read-only file system": errno.EROFS,
    "permission denied": errno.EACCES,
    "disk quota exceeded": errno.EDQUOT,
    "file too large": errno.EFBIG,
}


def _errno_in(text: str) -> int | None:
    m = re.search(r"(?:os error|code:)\s*(\d+)", text)
    if m and int(m.group(1)) in WRITE_ERRORS:
        return int(m.group(1))
    low = text.lower()
    return next((code for phrase, code in _ERRNO_TEXT.items() if phrase in low), None)


@contextmanager
def as_os_errors(path):
    """A library writer's failure (safetensors' SafetensorError, torch.export's or ONNX's
    RuntimeError) on a full disk or a read-only folder, turned into the OSError it is, so the
    CLI says it in one line naming the file (exit 2) instead of an internal error."""
    try:
        yield
    except OSError:
        raise
    except Exception as e:
        code = _errno_in(str(e))
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from None


def ensure_space(folder: str | os.PathLike, nbytes: int) -> None:
    """Refuse (as a full disk, before writing) when ``folder``'s filesystem has less than
    ``nbytes`` free: some writers (torch.export's) abort the process on a full disk instead
    of raising."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return
    if st.f_bavail * st.f_frsize < nbytes:
        raise OSError(errno.ENOSPC, f"No space left on device (needs {nbytes / 2**20:.0f} MiB)", str(folder))


def home() -> Path:
    """Cache root: $LEARNGENE_HOME, else $XDG_CACHE_HOME/learngene, else ~/.cache/learngene."""
    if os.environ.get("LEARNGENE_HOME"):
        return Path(os.environ["LEARNGENE_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "learngene"


# --------------------------------------------------------------------------- writing


@contextmanager
def staged_folder(target: str | os.PathLike, replace: bool = True):
    """Build ``target`` in a temp folder beside it (``.NAME.*.partial``). On success the
    folder takes target's place in one rename (with ``replace``, a folder already there is
    moved aside first, then removed; without, a folder that appeared meanwhile, another
    process's, is refused and kept); on any failure it is removed and target is untouched."""
    target = Path(target)
    real_folder(target.parent, "output folder").mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    # a lock held inside the stage while it is being written: `pool verify --clean` (and any
    # other cleaner) leaves a live writer's stage alone (`is_live_stage`)
    owner = os.open(stage / OWNER, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(owner, fcntl.LOCK_EX)
    try:
        yield stage
        os.unlink(stage / OWNER)
        os.close(owner)
        owner = None
        publish(stage)
        if not replace:
            try:
                os.rename(stage, target)  # fails on a non-empty folder there: never replaced
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                raise UserError(
                    f"{target} appeared while this run was writing it (another process?): "
                    "left as it is, pass --force to replace it"
                ) from None
            return
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
    finally:
        if owner is not None:
            os.close(owner)


OWNER = ".owner.lock"


def is_live(path: str | os.PathLike) -> bool:
    """Is this leftover-looking path still being written by a live process? A staged folder
    whose owner lock is held, or a temp file ``.NAME.tmp-PID`` whose process runs."""
    path = Path(path)
    if path.is_dir():
        return is_locked(path / OWNER)
    m = re.search(r"\.tmp-(\d+)$", path.name)
    if m:
        try:
            os.kill(int(m.group(1)), 0)
            return True
        except (ProcessLookupError, ValueError, OverflowError):
            return False
        except PermissionError:
            return True
    return False


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=2))
        publish(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_tensors(path: str | os.PathLike, tensors: dict) -> str:
    """Write a safetensors file via temp + rename; return its sha256."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_finite(tensors, path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with as_os_errors(path):
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        publish(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return file_sha256(path)


def nonfinite(tensors: dict) -> tuple[str, int] | None:
    """(first key, count) of the floating-point tensors holding NaN or inf; None when all are finite."""
    import torch

    for k, v in tensors.items():
        if torch.is_floating_point(v):
            bad = int((~torch.isfinite(v)).sum())
            if bad:
                return k, bad
    return None


def check_finite(tensors: dict, what) -> None:
    """Refuse to write (or use) weights with NaN or inf: one line naming the tensor."""
    bad = nonfinite(tensors)
    if bad:
        raise UserError(f"{what}: {bad[1]} non-finite value(s) (NaN/inf) in {bad[0]}: refusing to write or use them")


def load_tensors(path: str | os.PathLike) -> dict:
    """A safetensors file's tensors (never pickle), a one-line error naming the file."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:
        raise UserError(f"cannot read {path}: {type(e).__name__}") from None


# What learngene writes, recognised by the file each kind of output holds: --force replaces
# only these (a folder of documents named by mistake is never deleted).
OUTPUT_MARKS = (
    ("pool.json", "format", "learngene-pool", "pool"),
    ("kit.json", "format", "learngene-kit", "kit"),
    ("frontier.json", "meta", None, "report"),
    ("learngene.json", "delta_sha256", None, "delta"),
    ("config.json", "learngene", None, "model folder"),
)
_ANNOUNCED: set[str] = set()


def learngene_output(folder: str | os.PathLike) -> str | None:
    """What learngene output ``folder`` is ('pool', 'kit', 'report', 'delta', 'model folder'),
    None when learngene did not write it."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return None
    for name, key, value, kind in OUTPUT_MARKS:
        f = folder / name
        if not f.is_file() or f.stat().st_size > 64 << 20:
            continue
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(d, dict) and key in d and (value is None or d[key] == value):
            return kind
    return None


def _check_replaceable(out: Path, what: str) -> None:
    """--force replaces only what learngene wrote, never a pool (but by build-pool), never the
    current folder or a folder that holds it; says in one line what it replaces."""
    real, cwd = os.path.realpath(out), os.path.realpath(os.getcwd())
    if os.path.commonpath([real, cwd]) == real:
        raise UserError(
            f"{what} {out} is the current folder or holds it: --force never replaces that; choose another --out"
        )
    kind = learngene_output(out)
    if kind is None:
        raise UserError(
            f"{what} {out} exists and is not something learngene wrote (no pool.json, kit.json, "
            "frontier.json, learngene.json or learngene config.json): --force replaces only learngene's "
            "own outputs; choose another --out or remove it yourself"
        )
    if kind == "pool" and what != "pool":
        raise UserError(
            f"{what} {out} is a pool: --force never replaces a pool with a {what} "
            "(build-pool --force rebuilds one); choose another --out"
        )
    if real not in _ANNOUNCED:
        _ANNOUNCED.add(real)
        print(f"learngene: --force replaces the {kind} {out}", file=sys.stderr)


def check_output(out: str | os.PathLike, force: bool, what: str = "output", cache: bool = False) -> Path:
    """The check every writer makes before any work: ``out`` must not exist (unless
    ``force``, and then only a learngene output: `_check_replaceable`) and its parent must be
    creatable and writable. ``cache``: a folder of learngene's own cache, replaced as needed."""
    out = Path(out)
    if str(out).strip() in ("", ".", "..") or out.name in ("", ".", ".."):
        raise UserError(f"{what} {str(out)!r} names no folder of its own: give a new folder's path")
    if out.exists() or out.is_symlink():
        if not force:
            raise UserError(f"{what} exists: {out} (pass --force to replace it)")
        if not cache:
            _check_replaceable(out, what)
    # the folders up to it must be creatable: made and removed again now, so a run refused
    # or interrupted later leaves no empty folder behind
    missing, parent = [], out.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    # Another writer may be making (or probing) the same folders at this moment: only what
    # this call made is removed, and only while still empty.
    made = []
    try:
        for d in reversed(missing):
            try:
                d.mkdir(parents=True)  # parents: another probe may have removed one meanwhile
                made.append(d)
            except FileExistsError:
                pass
        if not os.access(out.parent, os.W_OK | os.X_OK):
            raise UserError(f"output folder is not writable: {out.parent}")
    except OSError as e:
        raise UserError(f"cannot create {out.parent}: {e.strerror}") from None
    finally:
        for d in reversed(made):
            try:
                d.rmdir()
            except OSError:  # not empty, or gone: another writer's now
                pass
    return out


# --------------------------------------------------------------------------- checksums


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def state_dict_sha256(sd: dict) -> str:
    """sha256 of weights (names, dtypes, shapes and bytes), not of any file."""
    import torch

    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
