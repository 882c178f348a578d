"""Ancestors: the pretrained ViT a pool is distilled from.

Sources, all ending in a timm VisionTransformer:
- a timm name with random init (shapes only), ``pretrained=True`` (timm's cache, never a
  download unless asked), or ``checkpoint=FILE`` (safetensors, or a torch file loaded with
  ``weights_only=True``; never plain unpickling);
- ``local-dir:FOLDER`` (timm's own format: config.json + model.safetensors);
- ``embedded``: a DeiT-architecture ViT scaled to a 2-core CPU, trained on the embedded
  digits and cached under ``$LEARNGENE_HOME/ancestors/embedded`` as a timm local-dir, so plain
  ``timm.create_model('local-dir:...', pretrained=True)`` loads it too.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from learngene import paths
from learngene.errors import UserError
from learngene.vit import ViTView, is_vit

DEFAULT_TIMM_ANCESTOR = "deit_base_patch16_224"
EMBEDDED = "embedded"

# The embedded ancestor: DeiT-Ti's architecture (timm's deit_tiny_patch16_224 entry point)
# with the sizes overridden for 16x16 digits. Width 128 / 4 heads: the calibration saw
# width 192 gain nothing for 2.2x the time.
EMBEDDED_ARCH = "deit_tiny_patch16_224"
EMBEDDED_MODEL_ARGS = dict(img_size=16, patch_size=4, embed_dim=128, depth=12, num_heads=4, num_classes=10)
# Training recipe; part of the cache key, so changing it retrains.
EMBEDDED_RECIPE = dict(epochs=30, lr=1e-3, weight_decay=0.05, warmup_fraction=0.1, label_smoothing=0.1, batch_size=64, seed=0)


@dataclass
class Ancestor:
    model: nn.Module
    name: str  # timm architecture name, or 'embedded'
    source: str  # random-init | timm-cache | checkpoint:PATH | local-dir:PATH | embedded:PATH
    data_config: dict
    metrics: dict = field(default_factory=dict)
    _checksum: str | None = None

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

    def info(self) -> dict:
        s = self.view.shape
        out = {
            "name": self.name,
            "source": self.source,
            "params": self.param_count,
            "params_m": round(self.param_count / 1e6, 2),
            "embed_dim": s.embed_dim,
            "depth": s.depth,
            "heads": s.num_heads,
            "img_size": s.img_size,
            "patch_size": s.patch_size,
            "num_classes": s.num_classes,
            "sha256": self.checksum,
        }
        out.update(self.metrics)
        return out


def state_dict_sha256(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- checkpoints


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a torch file, never by plain unpickling.
    Common wrappers (Lightning's 'state_dict', timm/DeiT's 'model', DDP's 'module.') are undone."""
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
    pretrained: bool = False,
    checkpoint: str | os.PathLike | None = None,
    num_classes: int | None = None,
    allow_download: bool = False,
) -> Ancestor:
    """A timm ViT by name (random init, timm's cache, or a checkpoint) or from a local-dir."""
    import timm
    from timm.data import resolve_data_config

    if pretrained and checkpoint:
        raise UserError("give either --pretrained or --checkpoint, not both")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if name.startswith("local-dir:"):
        folder = Path(name[len("local-dir:"):]).expanduser()
        if not (folder / "config.json").is_file():
            raise UserError(f"not a timm local-dir model folder (no config.json): {folder}")
        if not any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
            raise UserError(f"no model.safetensors in {folder}")
        try:
            model = timm.create_model(f"local-dir:{folder}", pretrained=checkpoint is None, **kwargs)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"cannot load timm local-dir {folder}: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
        arch, source = model.pretrained_cfg.get("architecture", name), f"local-dir:{folder}"
    else:
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
                raise UserError(f"cannot load pretrained {name}: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
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
    if not is_vit(model):
        raise UserError(f"{name} is a {type(model).__name__}, not a ViT: learngene's ancestors are timm VisionTransformers")
    if checkpoint is not None:
        load_weights(model, sd if not name.startswith("local-dir:") else load_state_file(checkpoint), str(checkpoint), name)
        source = f"checkpoint:{Path(checkpoint).expanduser()}"
    model.eval()
    data_config = {k: tuple(v) if isinstance(v, list) else v for k, v in resolve_data_config({}, model=model).items()}
    return Ancestor(model=model, name=arch, source=source, data_config=data_config)


# --------------------------------------------------------------------------- embedded ancestor


def embedded_dir() -> Path:
    return paths.home() / "ancestors" / EMBEDDED


def _recipe(epochs: int | None = None, seed: int | None = None) -> dict:
    r = dict(EMBEDDED_RECIPE)
    if epochs is not None:
        if epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {epochs}")
        r["epochs"] = epochs
    if seed is not None:
        r["seed"] = seed
    return r


def _recipe_key(recipe: dict) -> str:
    from learngene.data import DIGITS_IMG_SIZE, DIGITS_SPLIT_SEED

    blob = json.dumps([EMBEDDED_ARCH, EMBEDDED_MODEL_ARGS, recipe, DIGITS_SPLIT_SEED, DIGITS_IMG_SIZE], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_local_dir(
    model: nn.Module,
    folder: str | os.PathLike,
    architecture: str,
    model_args: dict,
    pretrained_cfg: dict,
    extra: dict | None = None,
    write_more=None,
) -> Path:
    """Write a timm local-dir folder (config.json + model.safetensors) atomically: it is
    built in a temp folder beside the target and renamed into place. ``write_more(tmp)``
    may add files before the rename and returns more metadata for config.json."""
    from safetensors.torch import save_file

    folder = Path(folder)
    with paths.staged_folder(folder) as tmp:
        sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(sd, str(tmp / "model.safetensors"))
        if write_more is not None:
            extra = {**(extra or {}), **(write_more(tmp) or {})}
        cfg = {
            "architecture": architecture,
            "num_classes": model_args.get("num_classes", pretrained_cfg.get("num_classes")),
            "num_features": getattr(model, "num_features", None),
            "model_args": model_args,
            "pretrained_cfg": pretrained_cfg,
        }
        if extra:
            cfg["learngene"] = extra
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    return folder


def train_embedded(
    folder: Path | None = None,
    progress: bool = True,
    epochs: int | None = None,
    trainer_args=None,
    seed: int | None = None,
) -> Ancestor:
    """Train the embedded ancestor on the embedded digits and cache it as a timm local-dir."""
    import lightning as L
    import timm

    from learngene.data import LearngeneDataModule, digits_data_config
    from learngene.training import Classifier, OptimConfig, TrainerArgs, evaluate, make_trainer

    folder = Path(folder) if folder else embedded_dir()
    r = _recipe(epochs, seed)
    L.seed_everything(r["seed"], verbose=False)
    data_cfg = digits_data_config()
    dm = LearngeneDataModule(None, data_config=data_cfg, batch_size=r["batch_size"], seed=r["seed"])
    model = timm.create_model(EMBEDDED_ARCH, **EMBEDDED_MODEL_ARGS)
    optim = OptimConfig(lr=r["lr"], weight_decay=r["weight_decay"], warmup_fraction=r["warmup_fraction"], label_smoothing=r["label_smoothing"])
    targs = trainer_args or TrainerArgs()
    targs.max_epochs, targs.progress = r["epochs"], progress and targs.progress
    t0 = time.perf_counter()
    make_trainer(targs).fit(Classifier(model, optim), datamodule=dm)
    wall = time.perf_counter() - t0
    model = model.cpu().eval()
    test = evaluate(model, dm.test_dataloader())
    val = evaluate(model, dm.val_dataloader())
    metrics = {
        "test_top1": round(test["top1"], 2),
        "test_top5": round(test["top5"], 2),
        "val_top1": round(val["top1"], 2),
        "train_seconds": round(wall, 1),
        "epochs": r["epochs"],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    pretrained_cfg = {
        "architecture": EMBEDDED_ARCH,
        "num_classes": 10,
        "input_size": list(data_cfg["input_size"]),
        "interpolation": data_cfg["interpolation"],
        "mean": list(data_cfg["mean"]),
        "std": list(data_cfg["std"]),
        "crop_pct": data_cfg["crop_pct"],
        "crop_mode": data_cfg["crop_mode"],
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "label_names": [str(i) for i in range(10)],
    }
    extra = {"recipe": r, "recipe_key": _recipe_key(r), "data": dm.fingerprint(), "metrics": metrics}
    save_local_dir(model, folder, EMBEDDED_ARCH, EMBEDDED_MODEL_ARGS, pretrained_cfg, extra)
    return _load_embedded(folder)


def _load_embedded(folder: Path) -> Ancestor:
    anc = load_timm(f"local-dir:{folder}")
    meta = json.loads((folder / "config.json").read_text()).get("learngene", {})
    anc.name, anc.source = EMBEDDED, f"embedded:{folder}"
    anc.metrics = dict(meta.get("metrics", {}))
    return anc


def embedded_ancestor(
    retrain: bool = False,
    progress: bool = True,
    folder: Path | None = None,
    trainer_args=None,
    epochs: int | None = None,
    seed: int | None = None,
) -> Ancestor:
    """The cached embedded ancestor; trained when missing, stale (another recipe, e.g. other
    epochs) or asked."""
    folder = Path(folder) if folder else embedded_dir()
    cfg_file = folder / "config.json"
    if not retrain and cfg_file.is_file() and (folder / "model.safetensors").is_file():
        try:
            meta = json.loads(cfg_file.read_text()).get("learngene", {})
        except json.JSONDecodeError:
            meta = {}
        if meta.get("recipe_key") == _recipe_key(_recipe(epochs, seed)):
            return _load_embedded(folder)
    return train_embedded(folder, progress=progress, epochs=epochs, trainer_args=trainer_args, seed=seed)


def load_ancestor(
    name: str | None = None,
    pretrained: bool = False,
    checkpoint: str | os.PathLike | None = None,
    num_classes: int | None = None,
    allow_download: bool = False,
    retrain: bool = False,
    progress: bool = True,
) -> Ancestor:
    """Any ancestor by the CLI's rules: no name and no weights -> the embedded one;
    weights without a name -> DeiT-Base."""
    if name in (None, EMBEDDED):
        if name is None and (pretrained or checkpoint):
            name = DEFAULT_TIMM_ANCESTOR
        else:
            if pretrained or checkpoint:
                raise UserError("the embedded ancestor takes no --pretrained/--checkpoint (use --retrain to retrain it)")
            return embedded_ancestor(retrain=retrain, progress=progress)
    return load_timm(name, pretrained=pretrained, checkpoint=checkpoint, num_classes=num_classes, allow_download=allow_download)
