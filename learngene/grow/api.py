"""`learngene grow`: sizes in, a grown timm local-dir out.

Sources: ``embedded`` (the embedded ancestor), a timm name (random init, ``--pretrained``
from timm's cache, or ``--checkpoint``), ``local-dir:DIR`` or a folder with a timm
``config.json``, or ``POOL:AUX`` for a pool's auxiliary model (e.g. pools/embedded:narrow).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from learngene.errors import UserError
from learngene.grow import surgery

METHODS = ("net2net", "expand", "ligo")


@dataclass
class Source:
    model: nn.Module
    architecture: str  # the timm entry point the grown model is created with
    model_args: dict
    pretrained_cfg: dict
    name: str


@dataclass(frozen=True)
class Target:
    embed_dim: int
    depth: int
    num_heads: int
    head_dim: int
    mlp_hidden: int


def _json_safe(d: dict) -> dict:
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o)))


def shape_args(model: nn.Module) -> dict:
    from learngene.vit import ViTView

    s = ViTView(model).shape
    return dict(img_size=s.img_size, patch_size=s.patch_size, embed_dim=s.embed_dim, depth=s.depth,
                num_heads=s.num_heads, mlp_ratio=s.mlp_hidden / s.embed_dim, num_classes=s.num_classes)


def load_source(spec: str, checkpoint: str | None = None, pretrained: bool = False) -> Source:
    from learngene.ancestry import EMBEDDED, embedded_ancestor, load_timm

    if checkpoint and pretrained:
        raise UserError("give either --pretrained or --checkpoint, not both")
    if spec == EMBEDDED:
        spec = f"local-dir:{embedded_ancestor(progress=False).source.split(':', 1)[1]}"
    head, _, aux = spec.rpartition(":")
    if head and (Path(head) / "pool.json").is_file():
        from learngene.pool.store import Pool

        pool = Pool.open(head)
        model = pool.aux_model(aux, revision=None)
        meta = pool.auxiliary[aux]
        return Source(model, meta["architecture"], dict(meta["model_args"]), _json_safe(dict(model.pretrained_cfg)), spec)
    folder = Path(spec[len("local-dir:"):] if spec.startswith("local-dir:") else spec)
    if spec.startswith("local-dir:") or (folder / "config.json").is_file():
        anc = load_timm(f"local-dir:{folder}", checkpoint=checkpoint)
        try:
            cfg = json.loads((folder / "config.json").read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{folder}/config.json is not valid JSON: {e}") from None
        args = cfg.get("model_args") or shape_args(anc.model)
        return Source(anc.model, cfg.get("architecture", anc.name), dict(args), _json_safe(cfg.get("pretrained_cfg", {})), spec)
    if Path(spec).exists():
        raise UserError(f"not a timm local-dir folder (no config.json) nor a pool: {spec}")
    anc = load_timm(spec, pretrained=pretrained, checkpoint=checkpoint)
    return Source(anc.model, anc.name, shape_args(anc.model), _json_safe(dict(anc.model.pretrained_cfg)), spec)


def resolve_target(model: nn.Module, method: str, embed_dim=None, depth=None, heads=None, mlp_ratio=None, head_dim=None) -> Target:
    """The grown sizes from what the user gave (the rest kept as the model has it)."""
    if method not in METHODS:
        raise UserError(f"unknown growth method {method!r} (choose from {', '.join(METHODS)})")
    d = surgery.dims(model)
    for name, v in (("--embed-dim", embed_dim), ("--depth", depth), ("--heads", heads), ("--head-dim", head_dim)):
        if v is not None and v < 1:
            raise UserError(f"{name} must be >= 1, got {v}")
    E = embed_dim or d["embed_dim"]
    if heads and head_dim:
        if heads * head_dim != E:
            raise UserError(f"--heads {heads} x --head-dim {head_dim} = {heads * head_dim}, not the embed dim {E} (timm's ViT needs them equal)")
    elif heads:
        if E % heads:
            raise UserError(f"--heads {heads} does not divide the embed dim {E}")
        head_dim = E // heads
    elif head_dim:
        if E % head_dim:
            raise UserError(f"--head-dim {head_dim} does not divide the embed dim {E}")
        heads = E // head_dim
    elif E % d["qk_dim"] == 0:  # keep the head size, as the DeiT family does
        heads, head_dim = E // d["qk_dim"], d["qk_dim"]
    elif E % d["num_heads"] == 0:
        heads, head_dim = d["num_heads"], E // d["num_heads"]
    else:
        raise UserError(f"embed dim {E} keeps neither the head size {d['qk_dim']} nor the {d['num_heads']} heads: give --heads")
    if mlp_ratio is not None and mlp_ratio <= 0:
        raise UserError(f"--mlp-ratio must be > 0, got {mlp_ratio}")
    mlp = int(E * mlp_ratio) if mlp_ratio else round(E * d["mlp_hidden"] / d["embed_dim"])
    t = Target(E, depth or d["depth"], heads, head_dim, mlp)
    old = Target(d["embed_dim"], d["depth"], d["num_heads"], d["qk_dim"], d["mlp_hidden"])
    for field_, flag in (("embed_dim", "--embed-dim"), ("depth", "--depth"), ("num_heads", "--heads"),
                         ("head_dim", "--head-dim"), ("mlp_hidden", "--mlp-ratio")):
        new_v, old_v = getattr(t, field_), getattr(old, field_)
        if new_v < old_v:
            raise UserError(f"{field_.replace('_', ' ')} {new_v} ({flag}) is smaller than the model's {old_v}: "
                            "grow makes models larger, it does not shrink them")
    if t == old:
        raise UserError("nothing to grow: give a larger --embed-dim, --depth, --heads, --head-dim or --mlp-ratio")
    if method == "net2net" and t.head_dim != old.head_dim:
        raise UserError(f"net2net copies whole heads and keeps their size {old.head_dim}; use --method expand or ligo to change it")
    return t


def grow(model: nn.Module, method: str, target: Target, dm=None, steps: int = 100, noise: float = 0.0,
         seed: int = 0, trainer_args=None, ligo_lr: float = 1e-3) -> nn.Module:
    """The grown model (a new module; ``model`` is left as it is). ``steps`` and ``ligo_lr``:
    LiGO's operator training."""
    torch.manual_seed(seed)  # the new weights' random init
    kw = dict(embed_dim=target.embed_dim, depth=target.depth, num_heads=target.num_heads)
    if method == "net2net":
        from learngene.grow.net2net import net2net

        return net2net(model, mlp_hidden=target.mlp_hidden, noise=noise, seed=seed, **kw)
    if method == "expand":
        from learngene.grow.expand import expand

        return expand(model, qk_dim=target.head_dim, v_dim=target.head_dim, mlp_hidden_size=target.mlp_hidden, **kw)
    if method == "ligo":
        from learngene.grow.ligo import ligo

        if dm is None:
            raise UserError("LiGO trains its operator on data: give a data module")
        return ligo(model, dm, steps=steps, qk_dim=target.head_dim, v_dim=target.head_dim, mlp_hidden=target.mlp_hidden,
                    lr=ligo_lr, seed=seed, trainer_args=trainer_args, **kw)
    raise UserError(f"unknown growth method {method!r} (choose from {', '.join(METHODS)})")


def datamodule(model: nn.Module, data: str | None, batch_size: int = 64, seed: int = 0):
    """The data LiGO trains its operator on: an ImageFolder, or the embedded digits."""
    from timm.data import resolve_data_config

    from learngene.data import LearngeneDataModule, digits_data_config

    img = int(model.patch_embed.img_size[0])
    cfg = digits_data_config(img) if data is None else resolve_data_config({}, model=model)
    dm = LearngeneDataModule(data, data_config=cfg, batch_size=batch_size, seed=seed)
    if dm.num_classes != model.num_classes:
        raise UserError(f"{data or 'the embedded digits'} has {dm.num_classes} classes but the model's head has {model.num_classes}")
    return dm


def max_logit_change(before: nn.Module, after: nn.Module, img_size: int, n: int = 8, seed: int = 0) -> float:
    """max |logit difference| on random inputs: ~1e-6 for the exact methods."""
    x = torch.randn(n, 3, img_size, img_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return float((before.eval()(x) - after.eval()(x)).abs().max())


def mlp_ratio_for(embed_dim: int, hidden: int) -> float:
    """A ratio timm turns back into exactly ``hidden`` (it takes int(dim * ratio))."""
    r = hidden / embed_dim
    return r if int(embed_dim * r) == hidden else (hidden + 0.5) / embed_dim


def save_grown(model: nn.Module, out: Path, source: Source, target: Target, meta: dict) -> Path:
    """A timm local-dir folder that plain ``timm.create_model('local-dir:OUT', pretrained=True)`` loads."""
    import timm

    from learngene.ancestry import save_local_dir

    args = {**source.model_args, "embed_dim": target.embed_dim, "depth": target.depth, "num_heads": target.num_heads,
            "mlp_ratio": mlp_ratio_for(target.embed_dim, target.mlp_hidden)}
    check = timm.create_model(source.architecture, **args)
    check.load_state_dict(model.state_dict(), strict=True)  # the config really describes these weights
    return save_local_dir(model, out, source.architecture, args, source.pretrained_cfg, extra=meta)


def grow_to_dir(source: Source, method: str, out: str | Path, target: Target, dm=None, steps: int = 100,
                noise: float = 0.0, seed: int = 0, force: bool = False, trainer_args=None) -> dict:
    from learngene.ancestry import state_dict_sha256
    from learngene.assemble.export import check_child_dir

    out = Path(out)
    check_child_dir(out, force)
    t0 = time.perf_counter()
    grown = grow(source.model, method, target, dm=dm, steps=steps, noise=noise, seed=seed, trainer_args=trainer_args)
    wall = time.perf_counter() - t0
    img = int(source.model.patch_embed.img_size[0])
    meta = {
        "grown_from": source.name,
        "source_checksum": state_dict_sha256(source.model.state_dict()),
        "method": method,
        "target": asdict(target),
        "params": sum(p.numel() for p in grown.parameters()),
        "source_params": sum(p.numel() for p in source.model.parameters()),
        "max_logit_change": max_logit_change(source.model, grown, img),
        "seconds": round(wall, 2),
        "steps": steps if method == "ligo" else 0,
        "noise": noise,
        "seed": seed,
    }
    save_grown(grown, out, source, target, meta)
    return {"out": str(out), **meta}
