"""The one I/O module: where learngene keeps its caches, how it writes (staged folders,
atomic files), checksums, checkpoints read without unpickling, timm local-dir folders, and
the one check every writer makes of its output folder.

torch and safetensors are imported where used, so the CLI can refuse bad input fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from learngene.core.errors import UserError


def home() -> Path:
    """Cache root: $LEARNGENE_HOME, else $XDG_CACHE_HOME/learngene, else ~/.cache/learngene."""
    if os.environ.get("LEARNGENE_HOME"):
        return Path(os.environ["LEARNGENE_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "learngene"


# --------------------------------------------------------------------------- writing


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


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def save_tensors(path: str | os.PathLike, tensors: dict) -> str:
    """Write a safetensors file via temp + rename; return its sha256."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)
    return file_sha256(path)


def load_tensors(path: str | os.PathLike) -> dict:
    """A safetensors file's tensors (never pickle), a one-line error naming the file."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:
        raise UserError(f"cannot read {path}: {type(e).__name__}") from None


def check_output(out: str | os.PathLike, force: bool, what: str = "output") -> Path:
    """The check every writer makes before any work: ``out`` must not exist (unless
    ``force``) and its parent must be creatable and writable."""
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"{what} exists: {out} (pass --force to replace it)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out.parent}: {e.strerror}") from None
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"output folder is not writable: {out.parent}")
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


# --------------------------------------------------------------------------- checkpoints


def load_state_file(path: str | os.PathLike) -> dict:
    """A state dict from safetensors or a torch file, never by plain unpickling.
    Common wrappers (Lightning's 'state_dict', timm/DeiT's 'model', DDP's 'module.') are undone."""
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p), device="cpu")
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise UserError(f"cannot read checkpoint {p}: {type(e).__name__}: {first}") from None
    for key in ("state_dict_ema", "model_ema", "state_dict", "model", "module"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"checkpoint {p} holds no state dict of tensors")
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


# --------------------------------------------------------------------------- timm local-dir


def json_safe(d: dict) -> dict:
    """A config dict as JSON can hold it (tuples -> lists, anything else -> str)."""
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o)))


def save_local_dir(model, folder: str | os.PathLike, architecture: str, model_args: dict, pretrained_cfg: dict,
                   extra: dict | None = None, write_more=None) -> Path:
    """Write a timm local-dir folder (config.json + model.safetensors) atomically: it is
    built in a temp folder beside the target and renamed into place. ``write_more(tmp)``
    may add files before the rename and returns more metadata for config.json."""
    from safetensors.torch import save_file

    folder = Path(folder)
    with staged_folder(folder) as tmp:
        sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(sd, str(tmp / "model.safetensors"))
        if write_more is not None:
            extra = {**(extra or {}), **(write_more(tmp) or {})}
        cfg = {
            "architecture": architecture,
            "num_classes": model_args.get("num_classes", pretrained_cfg.get("num_classes")),
            "num_features": getattr(model, "num_features", None),
            "model_args": model_args,
            "pretrained_cfg": json_safe(pretrained_cfg),
        }
        if extra:
            cfg["learngene"] = json_safe(extra)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    return folder


def read_local_dir_config(folder: str | os.PathLike) -> dict:
    """config.json of a timm local-dir folder, with one-line errors."""
    f = Path(folder) / "config.json"
    try:
        cfg = json.loads(f.read_text())
    except OSError as e:
        raise UserError(f"cannot read {f}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{f} is not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{f} is not a timm config (a JSON object)")
    return cfg
