"""`build_pool`: distil the ancestor into a recipe's auxiliary models and store their blocks as a pool."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from learngene.api._common import Request, _targs, verb
from learngene.pool.store import Pool
from learngene.zoo import resolve

if TYPE_CHECKING:
    from learngene.core.training import TrainerArgs
    from learngene.pool.recipe import Recipe


@dataclass(frozen=True)
class BuildPoolRequest(Request):
    recipe: str | Path | Recipe | None = None
    _: KW_ONLY
    model: str | None = None
    data: str | Path | None = None
    out: str | Path | None = None
    epochs: int | str | None = None
    overrides: Sequence[str] = ()
    lr: float | None = None
    batch_size: int | None = None
    seed: int | None = None
    resume: bool = False
    force: bool = False
    pretrained: bool = False
    checkpoint: str | Path | None = None
    allow_download: bool = False
    trainer_args: TrainerArgs | None = None
    workers: int | None = None
    progress: bool = True

    def check(self):
        from learngene.core import limits

        limits.workers(self.workers)
        if self.epochs is not None:
            self._set("epochs", limits.epochs(self.epochs))
        self._set("overrides", tuple(self.overrides or ()))


@verb(BuildPoolRequest)
def build_pool(r: BuildPoolRequest) -> Pool | None:
    """Distil the ancestor into the auxiliary models of a recipe and store their blocks as a pool.

    Args:
        recipe: a recipe name shipped in pools/ (``embedded``, ``animals``, ``deit-base-d6``), a
            YAML path, or a `Recipe`; default ``embedded``.
        model: the ancestor (default: the recipe's); ``pretrained`` / ``checkpoint`` /
            ``allow_download`` give a timm name its weights.
        data: a folder (default: the recipe's embedded data); the ancestor fitted to its
            classes (``ancestor(fine_tune=True)``) is taken by itself.
        out: the pool folder (default ``pools/<recipe name>``).
        epochs: every auxiliary model's epochs, or ``"auto"``.
        overrides: ``KEY=VALUE`` recipe overrides (``distill.alpha=0.2``); ``lr``, ``batch_size``,
            ``seed`` are shorthands for ``auxiliary.*.lr``, ``distill.batch_size``, ``distill.seed``.
        resume: continue an interrupted build (a plain rerun does too); ``force``: replace the pool.
        trainer_args, workers: Lightning's settings and the DataLoader's worker processes.

    Returns the opened `Pool` (None on a DDP rank other than 0).
    """
    from learngene.core.data import LearngeneDataModule
    from learngene.core.io import check_output
    from learngene.pool.build import build_pool as build
    from learngene.pool.build import resolve_recipe_path
    from learngene.pool.recipe import Recipe, load_recipe

    flags = [
        f"{k}={v}"
        for k, v in (("auxiliary.*.lr", r.lr), ("distill.batch_size", r.batch_size), ("distill.seed", r.seed))
        if v is not None
    ]
    rec = (
        r.recipe if isinstance(r.recipe, Recipe) else load_recipe(resolve_recipe_path(r.recipe), [*r.overrides, *flags])
    )
    out = Path(r.out).expanduser() if r.out else Path("pools") / rec.name
    if not r.resume:
        check_output(out, r.force, "pool")  # before loading (or training) any ancestor
    dm = LearngeneDataModule(r.data or rec.data or None, num_workers=r.workers)  # checks the folder now, too
    ref = r.model or (None if rec.ancestor == "embedded" else rec.ancestor)
    anc = resolve(
        ref, pretrained=r.pretrained, checkpoint=r.checkpoint, allow_download=r.allow_download, progress=r.progress
    ).load()
    return build(
        rec,
        out=out,
        ancestor=anc,
        data=dm,
        epochs=r.epochs,
        resume=r.resume,
        force=r.force,
        trainer_args=_targs(r.trainer_args, "build-pool", r.progress),
        num_workers=r.workers,
    )
