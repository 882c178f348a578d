"""`learngene ancestor`: what the ancestor is (training the embedded one when needed)."""

from __future__ import annotations

from learngene.cli.common import (
    add_data_arg,
    add_model_args,
    add_trainer_args,
    call,
    print_facts,
)

HELP = "show the ancestor (training the embedded one when needed)"


def add_arguments(sp) -> None:
    add_model_args(sp)
    add_data_arg(
        sp, "an ImageFolder: evaluate the ancestor on its test split, or --fine-tune it to its classes", workers=False
    )
    sp.add_argument(
        "--fine-tune",
        action="store_true",
        help="fit the ancestor to --data's classes (a new head, DeiT's fine-tuning recipe scaled down), cached",
    )
    sp.add_argument("--refit", action="store_true", help="--fine-tune again even if a fitted ancestor is cached")
    sp.add_argument("--retrain", action="store_true", help="retrain the embedded ancestor even if cached")
    sp.add_argument(
        "--epochs", default=None, help="epochs for the embedded ancestor, or for --fine-tune (default: their recipes')"
    )
    sp.add_argument("--seed", type=int, default=None, help="seed for the embedded ancestor (default: its recipe's)")
    sp.add_argument("--json", action="store_true", help="print the facts as JSON")
    add_trainer_args(sp)


def run(ns) -> int:
    from learngene.api import ancestor

    info = call(
        ancestor,
        ns,
        ns.ancestor,
        progress=not ns.quiet,
    )
    print_facts(info, ns.json)
    if ns.json:
        return 0
    if "fitted" in info:
        before = (
            f"{info['before_top1']:.2f}% (its own head)"
            if "before_top1" in info
            else "n/a (its head has other classes)"
        )
        print(
            f"test top1 before fitting {before}, after {info['test_top1']:.2f}%; kNN probe "
            f"{info['before_knn_top1']:.2f}% "
            f"-> {info['knn_top1']:.2f}%. build-pool / assemble / bench --data {ns.data} now use it."
        )
    elif "test_top1" not in info and "data_top1" not in info:
        print(f"{'accuracy':<{max(len(k) for k in info)}}  unknown (pass --data DIR to measure it)")
    return 0
