"""Model files: checkpoints read without unpickling,
and timm local-dirs (``config.json`` + ``model.safetensors``) written and read."""

from __future__ import annotations

import json
import os
from pathlib import Path

from learngene.core.errors import UserError
from learngene.core.io import as_os_errors, check_finite, staged_folder

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
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


# --------------------------------------------------------------------------- timm local-dir


def json_safe(d: dict) -> dict:
    """A config dict as JSON can hold it (tuples -> lists, anything else -> str)."""
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o)))


def save_local_dir(
    model,
    folder: str | os.PathLike,
    architecture: str,
    model_args: dict,
    pretrained_cfg: dict,
    extra: dict | None = None,
    write_more=None,
    replace: bool = True,
) -> Path:
    """Write a timm local-dir folder (config.json + model.safetensors) atomically: it is
    built in a temp folder beside the target and renamed into place. ``write_more(tmp)``
    may add files before the rename and returns more metadata for config.json."""
    from safetensors.torch import save_file

    folder = Path(folder)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    check_finite(sd, f"model {folder.name}")
    with staged_folder(folder, replace=replace) as tmp:
        with as_os_errors(folder / "model.safetensors"):
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


def read_json(path: str | os.PathLike, what: str = ""):
    """A JSON file's content, with one-line errors naming it (``what``: what it is)."""
    f = Path(path)
    name = f"{what} {f}".strip()
    try:
        return json.loads(f.read_text())
    except OSError as e:
        raise UserError(f"cannot read {name}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{name} is not text") from None
    except json.JSONDecodeError as e:
        raise UserError(f"corrupt {name}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:  # a crafted file nested thousands deep
        raise UserError(f"{name} is nested too deeply to be a file learngene wrote") from None
    except ValueError as e:  # e.g. numbers too long to convert
        raise UserError(f"corrupt {name}: {str(e).splitlines()[0][:120]}") from None


def read_local_dir_config(folder: str | os.PathLike) -> dict:
    """config.json of a timm local-dir folder, with one-line errors."""
    f = Path(folder) / "config.json"
    cfg = read_json(f)
    if not isinstance(cfg, dict):
        raise UserError(f"{f} is not a timm config (a JSON object)")
    return cfg
