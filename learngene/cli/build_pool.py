"""`learngene build-pool`: distil the ancestor into auxiliary models, store their blocks."""

from __future__ import annotations

from pathlib import Path

from learngene.cli.common import data_arg, add_data_arg, add_model_args, add_trainer_args, trainer_args_from

HELP = "distil the ancestor into auxiliary models and store their blocks as a pool"


def add_arguments(sp) -> None:
    sp.add_argument("--recipe", default=None, metavar="YAML", help="a recipe file, or the name of one in pools/ (default: embedded)")
    add_model_args(sp)
    add_data_arg(sp, "ImageFolder to distil on (default: the recipe's data, else the embedded digits)")
    sp.add_argument("--out", metavar="DIR", help="pool folder (default: pools/<recipe name>)")
    sp.add_argument("--epochs", default=None, help="epochs for every auxiliary model, or auto (until validation stops improving)")
    sp.add_argument("--lr", type=float, default=None, help="peak learning rate of every auxiliary model (recipe: auxiliary.*.lr)")
    sp.add_argument("--batch-size", type=int, default=None, help="distillation batch size (recipe: distill.batch_size)")
    sp.add_argument("--seed", type=int, default=None, help="distillation seed (recipe: distill.seed)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe field, e.g. distill.alpha=0.2 or auxiliary.narrow.init=ancestor")
    sp.add_argument("--resume", action="store_true", help="continue an interrupted build")
    sp.add_argument("--force", action="store_true", help="replace an existing pool / discard an interrupted build")
    add_trainer_args(sp)


def run(ns) -> int:
    from learngene.core.data import LearngeneDataModule
    from learngene.core.io import check_output
    from learngene.pool import build_pool, load_recipe, resolve_recipe_path
    from learngene.zoo import resolve

    flags = [f"{key}={v}" for key, v in (("auxiliary.*.lr", ns.lr), ("distill.batch_size", ns.batch_size),
                                        ("distill.seed", ns.seed)) if v is not None]
    targs = trainer_args_from(ns)  # bad Lightning flags, threads: refused before any work
    recipe = load_recipe(resolve_recipe_path(ns.recipe), [*ns.set, *flags])
    out = Path(ns.out).expanduser() if ns.out else Path("pools") / recipe.name
    if not ns.resume:
        check_output(out, ns.force, "pool")  # before loading (or training) any ancestor
    data = LearngeneDataModule(data_arg(ns) or recipe.data or None, num_workers=ns.workers)  # checks the folder now, too
    ref = ns.ancestor or (None if recipe.ancestor == "embedded" else recipe.ancestor)
    ancestor = resolve(ref, pretrained=ns.pretrained, checkpoint=ns.checkpoint, allow_download=ns.allow_download,
                       progress=not ns.quiet).load()
    pool = build_pool(recipe, out=out, ancestor=ancestor, data=data, epochs=ns.epochs, resume=ns.resume,
                      force=ns.force, trainer_args=targs, num_workers=ns.workers)
    if pool is None:  # a DDP rank other than 0
        return 0
    print(f"pool written: {pool.path} ({len(pool.instances)} instances, {pool.stored_params() / 1e6:.2f}M stored parameters)")
    for name, meta in pool.auxiliary.items():
        m = meta["metrics"]
        print(f"  {name}: width {meta['model_args']['embed_dim']}, {meta['model_args']['depth']} blocks, "
              f"{meta['params'] / 1e6:.2f}M params, test top1 {m['test_top1']:.2f}%, {m['seconds']:.0f} s")
    if pool.ancestor.get("test_top1") is not None:
        print(f"  ancestor: test top1 {pool.ancestor['test_top1']:.2f}%")
    return 0
