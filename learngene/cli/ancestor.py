"""`learngene ancestor`: what the ancestor is (training the embedded one when needed)."""

from __future__ import annotations

from learngene.cli.common import add_model_args, add_trainer_args, print_facts, trainer_args_from
from learngene.core.errors import UserError

HELP = "show the ancestor (training the embedded one when needed)"


def add_arguments(sp) -> None:
    add_model_args(sp)
    sp.add_argument("--data", metavar="DIR", help="evaluate the ancestor on this ImageFolder's test split")
    sp.add_argument("--retrain", action="store_true", help="retrain the embedded ancestor even if cached")
    sp.add_argument("--epochs", type=int, default=None, help="epochs for the embedded ancestor (default: its recipe's)")
    sp.add_argument("--seed", type=int, default=None, help="seed for the embedded ancestor (default: its recipe's)")
    sp.add_argument("--json", action="store_true", help="print the facts as JSON")
    add_trainer_args(sp)


def run(ns) -> int:
    from learngene.core.ancestry import describe, embedded_ancestor
    from learngene.core.models import EMBEDDED, load_model, parse_ref

    ref = parse_ref(ns.ancestor, weights=ns.pretrained or ns.checkpoint is not None)
    if ref.kind == EMBEDDED:
        if ns.pretrained or ns.checkpoint:
            raise UserError("the embedded ancestor takes no --pretrained/--checkpoint (use --retrain to retrain it)")
        anc = embedded_ancestor(retrain=ns.retrain, progress=not ns.quiet, trainer_args=trainer_args_from(ns),
                                epochs=ns.epochs, seed=ns.seed)
    else:
        if ns.retrain or ns.epochs is not None or ns.seed is not None:
            raise UserError("--retrain/--epochs/--seed apply to the embedded ancestor only")
        anc = load_model(ref, pretrained=ns.pretrained, checkpoint=ns.checkpoint, allow_download=ns.allow_download)
    info = describe(anc, ns.data)
    print_facts(info, ns.json)
    if not ns.json and "test_top1" not in info and "data_top1" not in info:
        print(f"{'accuracy':<{max(len(k) for k in info)}}  unknown (pass --data DIR to measure it)")
    return 0
