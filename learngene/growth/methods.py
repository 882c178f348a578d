"""`learngene grow`: a model and sizes in, a grown timm local-dir out.

The model is a `learngene.models.loading.LoadedModel` (``learngene.zoo.resolve`` turns any
reference into one: ``embedded``, a timm name, a local-dir, ``POOL:MEMBER``). Methods are a
registry (`learngene.core.registries.GROWTH_METHODS`): a new one is a function
``(model, target, **options) -> grown model`` and one line.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from learngene.core.errors import UserError
from learngene.core.io import check_output, state_dict_sha256
from learngene.core.localdir import save_local_dir
from learngene.core.registries import GROWTH_METHODS
from learngene.growth import surgery
from learngene.models.loading import LoadedModel


@dataclass(frozen=True)
class Target:
    embed_dim: int
    depth: int
    num_heads: int
    head_dim: int
    mlp_hidden: int


def resolve_target(
    model: nn.Module, method: str, embed_dim=None, depth=None, heads=None, mlp_ratio=None, head_dim=None
) -> Target:
    """The grown sizes from what the user gave (the rest kept as the model has it)."""
    GROWTH_METHODS.check(method, "--method")
    from learngene.core import limits

    d = surgery.dims(model)
    for name, v, high in (
        ("--embed-dim", embed_dim, limits.MAX_WIDTH),
        ("--depth", depth, limits.MAX_DEPTH),
        ("--heads", heads, 1024),
        ("--head-dim", head_dim, limits.MAX_WIDTH),
    ):
        if v is not None:
            limits.int_in(v, name, 1, high)
    if mlp_ratio is not None:
        limits.float_in(mlp_ratio, "--mlp-ratio", 0.0, 64.0, low_open=True)
    E = embed_dim or d["embed_dim"]
    if heads and head_dim:
        if heads * head_dim != E:
            raise UserError(
                f"--heads {heads} x --head-dim {head_dim} = {heads * head_dim}, not the embed dim {E} (timm's "
                f"ViT needs them equal)"
            )
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
        raise UserError(
            f"embed dim {E} keeps neither the head size {d['qk_dim']} nor the {d['num_heads']} heads: give --heads"
        )
    if mlp_ratio is not None and mlp_ratio <= 0:
        raise UserError(f"--mlp-ratio must be > 0, got {mlp_ratio}")
    mlp = int(E * mlp_ratio) if mlp_ratio else round(E * d["mlp_hidden"] / d["embed_dim"])
    t = Target(E, depth or d["depth"], heads, head_dim, mlp)
    old = Target(d["embed_dim"], d["depth"], d["num_heads"], d["qk_dim"], d["mlp_hidden"])
    for field_, flag in (
        ("embed_dim", "--embed-dim"),
        ("depth", "--depth"),
        ("num_heads", "--heads"),
        ("head_dim", "--head-dim"),
        ("mlp_hidden", "--mlp-ratio"),
    ):
        new_v, old_v = getattr(t, field_), getattr(old, field_)
        if new_v < old_v:
            raise UserError(
                f"{field_.replace('_', ' ')} {new_v} ({flag}) is smaller than the model's {old_v}: "
                "grow makes models larger, it does not shrink them"
            )
    if t == old:
        raise UserError("nothing to grow: give a larger --embed-dim, --depth, --heads, --head-dim or --mlp-ratio")
    _check_fits_memory(t, d, method)
    if method == "net2net" and t.head_dim != old.head_dim:
        raise UserError(
            f"net2net copies whole heads and keeps their size {old.head_dim}; use --method expand or ligo to change it"
        )
    return t


def _check_fits_memory(t: Target, d: dict, method: str) -> None:
    """Refuse a grown model whose weights (and their copies while growing: ~4x, LiGO's
    operator more) would not fit this machine's available memory, before allocating them."""
    attn = t.num_heads * t.head_dim
    per_block = t.embed_dim * 3 * attn + attn * t.embed_dim + 2 * t.embed_dim * t.mlp_hidden + 6 * t.embed_dim
    params = t.depth * per_block + t.embed_dim * (d.get("patch_dim", 48) + 1000)
    need = params * 4 * (8 if method == "ligo" else 4)
    avail = _available_bytes()
    if avail is not None and need > avail:
        raise UserError(
            f"the grown model has ~{params / 1e6:,.0f}M parameters: growing it needs ~{need / 2**30:.1f} GiB, "
            f"and this machine has {avail / 2**30:.1f} GiB available"
        )


def _available_bytes() -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def grow_net2net(model, target, *, noise=0.0, seed=0, **_):
    from learngene.growth.net2net import net2net

    return net2net(
        model,
        embed_dim=target.embed_dim,
        depth=target.depth,
        num_heads=target.num_heads,
        mlp_hidden=target.mlp_hidden,
        noise=noise,
        seed=seed,
    )


def grow_expand(model, target, **_):
    from learngene.growth.expand import expand

    return expand(
        model,
        embed_dim=target.embed_dim,
        depth=target.depth,
        num_heads=target.num_heads,
        qk_dim=target.head_dim,
        v_dim=target.head_dim,
        mlp_hidden_size=target.mlp_hidden,
    )


def grow_ligo(model, target, *, dm=None, steps=100, seed=0, trainer_args=None, ligo_lr=1e-3, **_):
    from learngene.growth.ligo import ligo

    if dm is None:
        raise UserError("LiGO trains its operator on data: give a data module")
    return ligo(
        model,
        dm,
        steps=steps,
        embed_dim=target.embed_dim,
        depth=target.depth,
        num_heads=target.num_heads,
        qk_dim=target.head_dim,
        v_dim=target.head_dim,
        mlp_hidden=target.mlp_hidden,
        lr=ligo_lr,
        seed=seed,
        trainer_args=trainer_args,
    )


# the methods by name: learngene.core.registries.GROWTH_METHODS, each (model, target, **options) -> a new, grown module


def check_request(
    *, method: str, out, force: bool, steps: int = 100, noise: float = 0.0, data=None, seed: int = 0
) -> Path:
    """Everything about a growth request that can be refused before any model is loaded."""
    from learngene.core import limits

    GROWTH_METHODS.check(method, "--method")
    limits.int_in(steps, "--steps", 0, limits.MAX_STEPS)
    limits.float_in(noise, "--noise", 0.0, 10.0)
    limits.seed(seed)
    if method != "net2net" and noise:
        raise UserError("--noise applies to --method net2net only")
    if data and method != "ligo":
        raise UserError("--data is for --method ligo (the other methods need no data)")
    return check_output(out, force)


def grow(
    model: nn.Module,
    method: str,
    target: Target,
    *,
    dm=None,
    steps: int = 100,
    noise: float = 0.0,
    seed: int = 0,
    trainer_args=None,
    ligo_lr: float = 1e-3,
) -> nn.Module:
    """The grown model (a new module; ``model`` is left as it is). ``steps`` and ``ligo_lr``:
    LiGO's operator training."""
    GROWTH_METHODS.check(method, "--method")
    torch.manual_seed(seed)  # the new weights' random init
    return GROWTH_METHODS[method](
        model, target, dm=dm, steps=steps, noise=noise, seed=seed, trainer_args=trainer_args, ligo_lr=ligo_lr
    )


def datamodule(source: LoadedModel, data: str | None, batch_size: int = 64, seed: int = 0):
    """The data LiGO trains its operator on: an ImageFolder, or the embedded digits."""
    from learngene.core.data import data_for

    dm = data_for(data, source.data_config, batch_size=batch_size, seed=seed)
    n = source.model.num_classes
    if dm.num_classes != n:
        raise UserError(f"{data or 'the embedded digits'} has {dm.num_classes} classes but the model's head has {n}")
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


def save_grown(model: nn.Module, out: Path, source: LoadedModel, target: Target, meta: dict) -> Path:
    """A timm local-dir folder that plain ``timm.create_model('local-dir:OUT', pretrained=True)`` loads."""
    import timm

    args = {
        **source.model_args,
        "embed_dim": target.embed_dim,
        "depth": target.depth,
        "num_heads": target.num_heads,
        "mlp_ratio": mlp_ratio_for(target.embed_dim, target.mlp_hidden),
    }
    check = timm.create_model(source.architecture, **args)
    check.load_state_dict(model.state_dict(), strict=True)  # the config really describes these weights
    return save_local_dir(model, out, source.architecture, args, source.pretrained_cfg, extra=meta)


def grow_to_dir(
    source: LoadedModel,
    method: str,
    out: str | Path,
    target: Target,
    *,
    dm=None,
    steps: int = 100,
    noise: float = 0.0,
    seed: int = 0,
    force: bool = False,
    trainer_args=None,
) -> dict:
    out = check_output(out, force)
    t0 = time.perf_counter()
    grown = grow(source.model, method, target, dm=dm, steps=steps, noise=noise, seed=seed, trainer_args=trainer_args)
    wall = time.perf_counter() - t0
    img = int(source.model.patch_embed.img_size[0])
    meta = {
        "grown_from": source.source,
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
