"""`learngene adapt`: a small stored delta for a new task; apply / merge it; list them."""

from __future__ import annotations

import json

from learngene.cli.common import (
    add_data_arg,
    add_pool_arg,
    add_trainer_args,
    call,
    print_table,
)
from learngene.core.errors import UserError
from learngene.core.registries import DELTA_METHODS

HELP = "fit a model to a new task with a small stored delta (LoRA / adapters)"
DESCRIPTION = (
    "`adapt --model M --data D --name TASK`: train and store a delta; "
    "`adapt apply --model M --delta TASK [--merge --out DIR]`; `adapt ls`"
)


def add_arguments(sp) -> None:
    sp.add_argument("action", nargs="?", default="train", choices=["train", "apply", "ls"])
    add_pool_arg(sp)
    sp.add_argument(
        "--model", metavar="M", help="a child or member of the pool, a timm local-dir, 'embedded', or a timm name"
    )
    sp.add_argument("--checkpoint", metavar="FILE", help="weights for a timm name")
    add_data_arg(sp, "ImageFolder of the new task, or digits:rot90 (embedded)", workers=False)
    sp.add_argument("--method", default="lora", choices=DELTA_METHODS.names)
    sp.add_argument("--rank", type=int, default=8, help="LoRA rank / adapter bottleneck (default 8)")
    sp.add_argument("--targets", default="qkv,proj,fc1,fc2", help="block linears to adapt (default all four)")
    sp.add_argument("--train-head", action="store_true", help="train the classifier too (stored in the delta)")
    sp.add_argument("--epochs", default=10, help="epochs, or auto (until validation top1 stops improving; default 10)")
    sp.add_argument("--lr", type=float, default=None, help="peak learning rate (default: lora 3e-3, adapter 1e-2)")
    sp.add_argument("--fraction", type=float, default=1.0, help="fraction of the training split to use")
    sp.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--name", metavar="TASK", help="the task: the delta goes to POOL/adapters/TASK")
    sp.add_argument("--delta", metavar="TASK_OR_DIR", help="apply: a task of the pool or a delta folder")
    sp.add_argument("--merge", action="store_true", help="apply: fold the delta into the weights (LoRA)")
    sp.add_argument("--out", metavar="DIR", help="apply --merge: write the merged model as a timm local-dir")
    sp.add_argument("--force", action="store_true", help="replace an existing delta / output folder")
    sp.add_argument("--json", action="store_true")
    add_trainer_args(sp)


def run(ns) -> int:
    from learngene.api import adapt

    if ns.action == "ls":
        rows = adapt.ls(ns.pool)
        if not rows and not ns.json:
            print(f"no deltas in {ns.pool}/adapters")
            return 0
        print_table(
            rows,
            ["task", "method", "r", "base", "data", "test_top1", "trainable_params", "delta_bytes", "delta_fraction"],
            ns.json,
        )
        return 0
    if not ns.model:
        raise UserError(f"adapt {ns.action}: give --model")
    if ns.action == "apply":
        if not ns.delta:
            raise UserError("adapt apply: give --delta (a task of the pool or a delta folder)")
        res = call(adapt.apply, ns, ns.model, ns.delta)
        print(json.dumps(res, indent=2) if ns.json else ", ".join(f"{k}: {v}" for k, v in res.items()))
        return 0
    if ns.delta or ns.merge or ns.out:
        raise UserError("--delta / --merge / --out belong to `adapt apply`")
    if not ns.name:
        raise UserError("adapt: give --name TASK (the delta is stored as POOL/adapters/TASK)")
    res = call(adapt, ns, ns.model, progress=not ns.quiet)

    if ns.json:
        print(json.dumps(res, indent=2))
    else:
        print(
            f"{res['method']} delta for {res['task']} on {res['base']}: test top1 {res['test_top1']}%, "
            f"{res['trainable_params']:,} trainable params, {res['delta_bytes']:,} bytes "
            f"({100 * res['delta_fraction']:.2f}% of the model) in {res['seconds']} s -> {res['path']}"
        )
    return 0
