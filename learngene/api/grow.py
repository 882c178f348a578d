"""`grow`: a larger model that computes what a smaller one did (Net2Net, exact expansions, LiGO)."""

from __future__ import annotations

from learngene.api._common import _targs
from learngene.zoo import resolve


def grow(
    model: str,
    *,
    method: str,
    out,
    embed_dim: int | None = None,
    depth: int | None = None,
    heads: int | None = None,
    head_dim: int | None = None,
    mlp_ratio: float | None = None,
    data=None,
    steps: int = 100,
    noise: float = 0.0,
    seed: int = 0,
    force: bool = False,
    checkpoint=None,
    pretrained: bool = False,
    trainer_args=None,
    progress: bool = True,
) -> dict:
    """A larger model that computes what the smaller one did, as a timm local-dir.

    Args:
        model: any reference (``embedded``, a timm name, ``local-dir:DIR``, ``POOL:MEMBER``).
        method: ``net2net``, ``expand`` (the exact expansions) or ``ligo`` (a learned operator).
        out, force: the grown model's folder; replace one learngene wrote.
        embed_dim, depth, heads, head_dim, mlp_ratio: the grown sizes (the rest kept).
        data, steps: what LiGO trains its operator on, and how many steps.
        noise: net2net's relative noise on the copies; seed: the new weights' random init.

    Returns the record saved with the model (sizes, params, max logit change, seconds).
    """
    from learngene.growth import methods

    out = methods.check_request(method=method, out=out, force=force, steps=steps, noise=noise, data=data, seed=seed)
    src = resolve(model, checkpoint=checkpoint, pretrained=pretrained, progress=progress).load()
    target = methods.resolve_target(src.model, method, embed_dim, depth, heads, mlp_ratio, head_dim)
    dm = methods.datamodule(src, data, seed=seed) if method == "ligo" else None
    return methods.grow_to_dir(
        src,
        method,
        out,
        target,
        dm=dm,
        steps=steps,
        noise=noise,
        seed=seed,
        force=force,
        trainer_args=_targs(trainer_args, "grow", progress),
    )
