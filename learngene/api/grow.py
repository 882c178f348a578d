"""`grow`: a larger model that computes what a smaller one did (Net2Net, exact expansions, LiGO)."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from learngene.api._common import Request, _targs, verb
from learngene.zoo import resolve

if TYPE_CHECKING:
    from learngene.core.training import TrainerArgs


@dataclass(frozen=True)
class GrowRequest(Request):
    model: str
    _: KW_ONLY
    method: str
    out: str | Path
    embed_dim: int | None = None
    depth: int | None = None
    heads: int | None = None
    head_dim: int | None = None
    mlp_ratio: float | None = None
    data: str | Path | None = None
    steps: int = 100
    noise: float = 0.0
    seed: int = 0
    force: bool = False
    checkpoint: str | Path | None = None
    pretrained: bool = False
    trainer_args: TrainerArgs | None = None
    progress: bool = True

    def check(self):
        from learngene.growth import methods

        out = methods.check_request(
            method=self.method,
            out=self.out,
            force=self.force,
            steps=self.steps,
            noise=self.noise,
            data=self.data,
            seed=self.seed,
        )
        self._set("out", out)


@verb(GrowRequest)
def grow(r: GrowRequest) -> dict:
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

    src = resolve(r.model, checkpoint=r.checkpoint, pretrained=r.pretrained, progress=r.progress).load()
    target = methods.resolve_target(src.model, r.method, r.embed_dim, r.depth, r.heads, r.mlp_ratio, r.head_dim)
    dm = methods.datamodule(src, r.data, seed=r.seed) if r.method == "ligo" else None
    return methods.grow_to_dir(
        src,
        r.method,
        r.out,
        target,
        dm=dm,
        steps=r.steps,
        noise=r.noise,
        seed=r.seed,
        force=r.force,
        trainer_args=_targs(r.trainer_args, "grow", r.progress),
    )
