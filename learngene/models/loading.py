"""Loading models: what a loaded model is, and the file formats it comes from (a timm name
with random init, timm's cache or a checkpoint; a timm local-dir folder). The resolver that
turns a user's reference into one of these is `learngene.models.refs`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from learngene.core.errors import UserError
from learngene.core.io import state_dict_sha256
from learngene.core.localdir import json_safe, load_state_file, read_local_dir_config
from learngene.core.vit import ViTView, is_timm_vit, is_vit, outline

DEFAULT_TIMM_ANCESTOR = "deit_base_patch16_224"


@dataclass
class LoadedModel:
    """A timm ViT and what is known of it: how to rebuild it (``architecture`` +
    ``model_args``), where it came from, the data config it reads, its metrics."""

    model: nn.Module
    name: str  # timm architecture name, or 'embedded'
    source: str  # random-init | timm-cache | checkpoint:PATH | local-dir:PATH | embedded:PATH
    data_config: dict
    metrics: dict = field(default_factory=dict)
    architecture: str | None = None  # the timm entry point that rebuilds it
    model_args: dict | None = None
    _checksum: str | None = None

    def __post_init__(self):
        if self.architecture is None:
            self.architecture = (
                self.model.pretrained_cfg.get("architecture", self.name)
                if hasattr(self.model, "pretrained_cfg")
                else self.name
            )
        if self.model_args is None:
            # a stitched descendant has no ViTView; its model_args come from its config.json
            self.model_args = ViTView(self.model).model_args() if is_vit(self.model) else {}

    @property
    def param_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def checksum(self) -> str:
        """sha256 of the weights (names, dtypes, shapes and bytes), not of any file."""
        if self._checksum is None:
            self._checksum = state_dict_sha256(self.model.state_dict())
        return self._checksum

    @property
    def view(self) -> ViTView:
        return ViTView(self.model)

    @property
    def pretrained_cfg(self) -> dict:
        """timm's pretrained_cfg of the model with this model's data config in it."""
        cfg = dict(getattr(self.model, "pretrained_cfg", {}) or {})
        cfg.update({k: v for k, v in self.data_config.items()})
        cfg.update(architecture=self.architecture, num_classes=self.model.num_classes)
        return json_safe(cfg)

    def info(self) -> dict:
        """What the model is (any timm ViT, a stitched descendant too) and its metrics."""
        out = {
            "name": self.name,
            "source": self.source,
            "architecture": self.architecture,
            "params": self.param_count,
            "params_m": round(self.param_count / 1e6, 2),
            **outline(self.model),
            "sha256": self.checksum,
        }
        out.update(self.metrics)
        return out


def load_weights(model: nn.Module, sd: dict[str, torch.Tensor], culprit: str, what: str) -> None:
    """Strict load with a one-line account of what does not fit."""
    own = model.state_dict()
    missing = sorted(own.keys() - sd.keys())
    unexpected = sorted(sd.keys() - own.keys())
    mismatched = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(own.keys() & sd.keys())
        if sd[k].shape != own[k].shape
    ]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (first: {mismatched[0]})")
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
    if problems:
        raise UserError(f"checkpoint {culprit} does not fit {what}: " + "; ".join(problems))
    model.load_state_dict(sd, strict=True)


# --------------------------------------------------------------------------- timm models


def _check_timm_name(name: str) -> str:
    import timm
    from timm.models import split_model_name_tag

    arch, _ = split_model_name_tag(name)
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:3]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown timm model: {name}{hint}")
    return arch


def _pretrained_cached(name: str) -> bool:
    """Are `name`'s pretrained weights in timm's cache? Looks, never downloads."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise UserError(f"timm has no pretrained weights for {name}")
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        for fname in (cfg.hf_hub_filename, "model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"):
            if fname and isinstance(try_to_load_from_cache(repo, fname), str):
                return True
    if cfg.url:
        hub = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url.split("?")[0])
        if hub.is_file():
            return True
    return bool(cfg.file and Path(cfg.file).is_file())


def _offline_hub():
    """Make huggingface_hub answer from its cache only (no hang on a closed network)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    except Exception:  # pragma: no cover - old hub versions
        pass


def load_timm(
    name: str = DEFAULT_TIMM_ANCESTOR,
    *,
    pretrained: bool = False,
    checkpoint: str | os.PathLike | None = None,
    num_classes: int | None = None,
    allow_download: bool = False,
) -> LoadedModel:
    """A timm ViT by name (random init, timm's cache, or a checkpoint) or from a local-dir."""
    import timm
    from timm.data import resolve_data_config

    if pretrained and checkpoint:
        raise UserError("give either --pretrained or --checkpoint, not both")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if name.startswith("local-dir:"):
        folder = Path(name[len("local-dir:") :]).expanduser()
        if not (folder / "config.json").is_file():
            raise UserError(f"not a timm local-dir model folder (no config.json): {folder}")
        cfg = read_local_dir_config(folder)
        if not any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
            raise UserError(f"no model.safetensors in {folder}")
        try:
            model = timm.create_model(f"local-dir:{folder}", pretrained=checkpoint is None, **kwargs)
        except UserError:
            raise
        except Exception as e:
            raise UserError(
                f"cannot load timm local-dir {folder}: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
            ) from None
        arch, source = cfg.get("architecture") or model.pretrained_cfg.get("architecture", name), f"local-dir:{folder}"
        model_args = cfg.get("model_args") or None
    else:
        model_args = None
        arch = _check_timm_name(name)
        if pretrained:
            if not allow_download:
                if not _pretrained_cached(name):
                    raise UserError(
                        f"pretrained weights for {name} are not in timm's cache and learngene does not "
                        "download at run time: pass --allow-download once, or --checkpoint FILE"
                    )
                _offline_hub()
            try:
                model = timm.create_model(name, pretrained=True, **kwargs)
            except Exception as e:
                raise UserError(
                    f"cannot load pretrained {name}: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
                ) from None
            source = "timm-cache" if not allow_download else "timm-hub"
        else:
            sd = None
            if checkpoint is not None:
                sd = load_state_file(checkpoint)
                head = sd.get("head.weight")
                # A fine-tuned checkpoint brings its own class count.
                if num_classes is None and head is not None and head.ndim == 2:
                    kwargs["num_classes"] = head.shape[0]
            model = timm.create_model(name, pretrained=False, **kwargs)
            source = "random-init"
    if not is_timm_vit(model):
        raise UserError(
            f"{name} is a {type(model).__name__}, not a ViT: learngene's ancestors are timm VisionTransformers"
        )
    if checkpoint is not None:
        load_weights(
            model, sd if not name.startswith("local-dir:") else load_state_file(checkpoint), str(checkpoint), name
        )
        source = f"checkpoint:{Path(checkpoint).expanduser()}"
    model.eval()
    data_config = {k: tuple(v) if isinstance(v, list) else v for k, v in resolve_data_config({}, model=model).items()}
    return LoadedModel(
        model=model,
        name=arch,
        source=source,
        data_config=data_config,
        architecture=arch,
        model_args=model_args or ViTView(model).model_args(),
    )
