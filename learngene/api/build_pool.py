"""`build_pool`: distil the ancestor into a recipe's auxiliary models and store their blocks as a pool."""

from __future__ import annotations

from pathlib import Path

from learngene.api._common import _targs
from learngene.pool.store import Pool
from learngene.zoo import resolve


def build_pool(
    recipe=None,
    *,
    model: str | None = None,
    data=None,
    out=None,
    epochs=None,
    overrides=(),
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    resume: bool = False,
    force: bool = False,
    pretrained: bool = False,
    checkpoint=None,
    allow_download: bool = False,
    trainer_args=None,
    workers: int | None = None,
    progress: bool = True,
) -> Pool | None:
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
    from learngene.core import limits
    from learngene.core.data import LearngeneDataModule
    from learngene.core.io import check_output
    from learngene.pool.build import build_pool as build
    from learngene.pool.build import resolve_recipe_path
    from learngene.pool.recipe import Recipe, load_recipe

    flags = [
        f"{k}={v}"
        for k, v in (("auxiliary.*.lr", lr), ("distill.batch_size", batch_size), ("distill.seed", seed))
        if v is not None
    ]
    limits.workers(workers)
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(resolve_recipe_path(recipe), [*overrides, *flags])
    out = Path(out).expanduser() if out else Path("pools") / rec.name
    if not resume:
        check_output(out, force, "pool")  # before loading (or training) any ancestor
    dm = LearngeneDataModule(data or rec.data or None, num_workers=workers)  # checks the folder now, too
    ref = model or (None if rec.ancestor == "embedded" else rec.ancestor)
    anc = resolve(
        ref, pretrained=pretrained, checkpoint=checkpoint, allow_download=allow_download, progress=progress
    ).load()
    return build(
        rec,
        out=out,
        ancestor=anc,
        data=dm,
        epochs=epochs,
        resume=resume,
        force=force,
        trainer_args=_targs(trainer_args, "build-pool", progress),
        num_workers=workers,
    )
