"""`learngene build-pool`: distil the ancestor into auxiliary models, store their blocks."""

from __future__ import annotations

from learngene.cli.common import add_data_arg, add_model_args, add_trainer_args, call

HELP = "distil the ancestor into auxiliary models and store their blocks as a pool"


def add_arguments(sp) -> None:
    sp.add_argument(
        "--recipe", default=None, metavar="YAML", help="a recipe file, or the name of one in pools/ (default: embedded)"
    )
    add_model_args(sp)
    add_data_arg(sp, "ImageFolder to distil on (default: the recipe's data, else the embedded digits)")
    sp.add_argument("--out", metavar="DIR", help="pool folder (default: pools/<recipe name>)")
    sp.add_argument(
        "--epochs", default=None, help="epochs for every auxiliary model, or auto (until validation stops improving)"
    )
    sp.add_argument(
        "--lr", type=float, default=None, help="peak learning rate of every auxiliary model (recipe: auxiliary.*.lr)"
    )
    sp.add_argument("--batch-size", type=int, default=None, help="distillation batch size (recipe: distill.batch_size)")
    sp.add_argument("--seed", type=int, default=None, help="distillation seed (recipe: distill.seed)")
    sp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. distill.alpha=0.2 or auxiliary.narrow.init=ancestor",
    )
    sp.add_argument("--resume", action="store_true", help="continue an interrupted build")
    sp.add_argument("--force", action="store_true", help="replace an existing pool / discard an interrupted build")
    add_trainer_args(sp)


def run(ns) -> int:
    from learngene.api import build_pool

    pool = call(
        build_pool,
        ns,
        ns.recipe,
        model=ns.ancestor,
        overrides=ns.set,
        progress=not ns.quiet,
    )
    if pool is None:  # a DDP rank other than 0
        return 0
    print(
        f"pool written: {pool.path} ({len(pool.instances)} instances, {pool.stored_params() / 1e6:.2f}M stored "
        f"parameters)"
    )
    for name, meta in pool.auxiliary.items():
        m = meta["metrics"]
        t = m.get("training") or {}
        run_ = f", {t['epochs_run']} epochs (best {t['best_epoch']})" if t.get("epochs") == "auto" else ""
        print(
            f"  {name}: width {meta['model_args']['embed_dim']}, {meta['model_args']['depth']} blocks, "
            f"{meta['params'] / 1e6:.2f}M params, test top1 {m['test_top1']:.2f}%, {m['seconds']:.0f} s{run_}"
        )
    if pool.ancestor.get("test_top1") is not None:
        print(f"  ancestor: test top1 {pool.ancestor['test_top1']:.2f}%")
    return 0
