"""`learngene assemble`: stitch pool instances into descendants, train, export a child."""

from __future__ import annotations

import argparse
import json

from learngene.cli.common import (
    Deprecated,
    add_data_arg,
    add_model_args,
    add_pool_arg,
    add_trainer_args,
    call,
    print_table,
    say,
)
from learngene.core.registries import FORMATS, SAMPLING, STITCH_INITS, TRAIN_MODES, TUNE

HELP = "stitch pool instances into a descendant of the size you need"


def add_arguments(sp) -> None:
    add_pool_arg(sp)
    pick = sp.add_argument_group("the child to export (one of)")
    pick.add_argument("--size", help="tiny | small | base: parameter budget scaled from DeiT-Ti/S/B to the ancestor")
    pick.add_argument("--params", type=float, metavar="N", help="at most N parameters")
    pick.add_argument("--flops", type=float, metavar="N", help="at most N FLOPs per image")
    pick.add_argument(
        "--descendant",
        dest="config",
        metavar="J,K",
        help="narrow blocks 0..J, stitch, wide blocks K..; or narrow / wide (or an id: stitch-J-K)",
    )
    pick.add_argument("--config", dest="config", action=Deprecated, new="--descendant", help=argparse.SUPPRESS)
    t = sp.add_argument_group("training")
    t.add_argument("--all", action="store_true", help="train every descendant jointly (same as --train all)")
    t.add_argument(
        "--train",
        default="auto",
        choices=TRAIN_MODES,
        help="auto (default): whatever is not trained yet (everything, or the chosen child)",
    )
    t.add_argument("--tune", default="all", choices=TUNE, help="train stitches and instances (all) or stitches only")
    t.add_argument("--init", default="lstsq", choices=STITCH_INITS.names, help="stitch initialisation for new stitches")
    t.add_argument(
        "--stitch-kind",
        metavar="SPEC",
        default=None,
        help="stitch kinds: KIND for every stitch, jN=KIND after narrow block N, ID=KIND for one descendant, "
        "comma-separated (kinds: linear, mlp; default: as the pool has them, linear at first); "
        "a changed stitch is made afresh and trained",
    )
    t.add_argument("--sampling", default="uniform", choices=SAMPLING, help="descendant sampling in joint training")
    t.add_argument(
        "--epochs",
        default=None,
        help="epochs, or auto (until the mean validation top1 stops improving); default 40 for --all, 10 for a target",
    )
    t.add_argument("--lr", type=float, default=None, help="learning rate of inherited weights (default 1e-4)")
    t.add_argument("--stitch-lr", type=float, default=None, help="learning rate of stitches (default 1e-3)")
    t.add_argument(
        "--kl", type=float, default=None, help="weight of the KL to the ancestor (default 0.5; 0: no teacher)"
    )
    t.add_argument("--batch-size", type=int, default=None, help="training batch size (default 64)")
    t.add_argument("--seed", type=int, default=0)
    sp.add_argument(
        "--revision", default="latest", help="pool revision to start from (r0: as distilled; default latest)"
    )
    add_data_arg(sp)
    add_model_args(
        sp, help="the pool's ancestor, when it cannot be reloaded from where the pool recorded it", aliases=()
    )
    sp.add_argument("--out", metavar="DIR", help="child folder (default: POOL/children/<id>)")
    sp.add_argument("--force", action="store_true", help="replace an existing child folder")
    sp.add_argument(
        "--no-program", action="store_true", help="skip the torch.export program (model.pt2): --format timm"
    )
    sp.add_argument("--format", default=None, choices=FORMATS.names, help="child format (default pt2)")
    sp.add_argument(
        "--export-precision",
        default="fp32",
        help="with --format onnx: fp32 | int8 | int8-static (default fp32; --precision takes the same values)",
    )
    sp.add_argument("--list", action="store_true", help="only list the pool's descendants")
    sp.add_argument("--json", action="store_true", help="print the result as JSON")
    add_trainer_args(sp, precision_alias="either")


def run(ns) -> int:
    from learngene.api import assemble, descendants
    from learngene.assembly import AssembleSpec, Selection
    from learngene.core.errors import UserError
    from learngene.core.limits import epochs

    if ns.list:
        print_table(
            descendants(ns.pool, ns.revision), ["id", "blocks", "params", "flops", "val_top1", "test_top1"], ns.json
        )
        return 0
    if ns.all and ns.train not in ("auto", "all"):
        raise UserError(f"--all contradicts --train {ns.train}")
    given = {
        "epochs": None if ns.epochs is None else epochs(ns.epochs, low=0),
        "lr": ns.lr,
        "stitch_lr": ns.stitch_lr,
        "kl_weight": ns.kl,
        "batch_size": ns.batch_size,
    }
    spec = AssembleSpec(
        seed=ns.seed,
        tune=ns.tune,
        sampling=ns.sampling,
        train="all" if ns.all else ns.train,
        init=ns.init,
        stitch_kinds=ns.stitch_kind,
        revision=ns.revision,
        fmt="timm" if ns.no_program else ns.format,
        precision=ns.export_precision,
        **{k: v for k, v in given.items() if v is not None},
    )
    res = call(
        assemble,
        ns,
        ns.pool,
        Selection(size=ns.size, params=ns.params, flops=ns.flops, config=ns.config),
        spec=spec,
        model=ns.ancestor,
        progress=say(ns),
    )
    if ns.json:
        print(json.dumps(res.to_dict(), indent=2))
        return 0
    print_table(
        res.rows,
        ["id", "blocks", "params", "flops", "init_val_top1", "val_top1", "test_top1"],
        False,
        mark=(res.chosen or {}).get("id"),
    )
    if res.child:
        c = res.chosen
        anc = res.pool.ancestor["params"]
        acc = f", test top1 {c['test_top1']:.2f}%" if c.get("test_top1") is not None else ""
        print(
            f"child {c['id']}: {c['params'] / 1e6:.3f}M params ({100 * c['params'] / anc:.1f}% of the ancestor), "
            f"{c['flops'] / 1e6:.1f} MFLOPs{acc} -> {res.child}"
        )
    print(f"pool revision {res.revision_id}, {res.seconds:.1f} s")
    return 0
