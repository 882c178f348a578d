"""`learngene adapt`: a small stored delta for a new task; apply / merge it; list them."""

from __future__ import annotations

import json
from pathlib import Path

from learngene.cli.common import add_data_arg, add_pool_arg, add_trainer_args, data_arg, print_table, trainer_args_from
from learngene.core.errors import UserError
from learngene.registries import DELTA_METHODS

HELP = "fit a model to a new task with a small stored delta (LoRA / adapters)"
DESCRIPTION = ("`adapt --model M --data D --name TASK`: train and store a delta; "
               "`adapt apply --model M --delta TASK [--merge --out DIR]`; `adapt ls`")


def add_arguments(sp) -> None:
    sp.add_argument("action", nargs="?", default="train", choices=["train", "apply", "ls"])
    add_pool_arg(sp)
    sp.add_argument("--model", metavar="M", help="a child or member of the pool, a timm local-dir, 'embedded', or a timm name")
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
    from learngene.adapt import api

    if ns.action == "ls":
        adapters = Path(ns.pool) / "adapters"
        rows = api.ls(adapters)
        if not rows and not ns.json:
            print(f"no deltas in {adapters}")
            return 0
        print_table(rows, ["task", "method", "r", "base", "data", "test_top1", "trainable_params", "delta_bytes",
                           "delta_fraction"], ns.json)
        return 0
    if not ns.model:
        raise UserError(f"adapt {ns.action}: give --model")
    adapters = api.adapters_for(ns.model, ns.pool)
    if ns.action == "apply":
        return apply(ns, api, adapters)
    if ns.delta or ns.merge or ns.out:
        raise UserError("--delta / --merge / --out belong to `adapt apply`")
    if not ns.name:
        raise UserError("adapt: give --name TASK (the delta is stored as POOL/adapters/TASK)")
    api.check_request(name=ns.name, method=ns.method, lr=ns.lr, rank=ns.rank, adapters=adapters, force=ns.force)
    from learngene.zoo import resolve

    member = resolve(ns.model, pool=ns.pool, checkpoint=ns.checkpoint, progress=False)
    res = api.adapt(member.load(), data_arg(ns), name=ns.name, adapters=adapters, ref=api.base_ref(ns.model, member),
                    method=ns.method, rank=ns.rank, targets=ns.targets, train_head=ns.train_head, epochs=ns.epochs,
                    lr=ns.lr, train_fraction=ns.fraction, seed=ns.seed, force=ns.force, trainer_args=trainer_args_from(ns),
                    batch_size=ns.batch_size,
                    progress=not ns.quiet)
    if ns.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['method']} delta for {res['task']} on {res['base']}: test top1 {res['test_top1']}%, "
              f"{res['trainable_params']:,} trainable params, {res['delta_bytes']:,} bytes "
              f"({100 * res['delta_fraction']:.2f}% of the model) in {res['seconds']} s -> {res['path']}")
    return 0


def apply(ns, api, adapters: Path) -> int:
    from learngene.core.data import data_for
    from learngene.core.io import check_output
    from learngene.core.training import evaluate
    from learngene.core.vit import input_size
    from learngene.zoo import resolve

    if not ns.delta:
        raise UserError("adapt apply: give --delta (a task of the pool or a delta folder)")
    if ns.out and not ns.merge:
        raise UserError("adapt apply: --out writes a merged model; add --merge")
    if ns.out:
        check_output(ns.out, ns.force)
    folder = api.resolve_delta(ns.delta, adapters)
    from learngene.adapt.delta import read_meta

    read_meta(folder)  # a broken delta is refused before the base is loaded (or trained)
    base = resolve(ns.model, pool=ns.pool, checkpoint=ns.checkpoint, progress=False).load()
    model, ad = api.apply(base, folder, merge=ns.merge)
    dm = data_for(data_arg(ns) or ad.meta.get("data"), base.data_config, augment=False)
    acc = evaluate(model, dm.test_dataloader())
    res = {"task": ad.meta.get("task"), "method": ad.method, "data": dm.name, "test_top1": round(acc["top1"], 2), "merged": ns.merge}
    if ns.merge:
        res["merge_max_logit_diff"] = api.max_diff(ad.model, model, input_size(base.model))
        if ns.out:
            res["out"] = str(api.export_merged(model, ad, base, Path(ns.out), ns.force))
    if ns.json:
        print(json.dumps(res, indent=2))
    else:
        print(", ".join(f"{k}: {v}" for k, v in res.items()))
    return 0
