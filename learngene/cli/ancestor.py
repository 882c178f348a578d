"""`learngene ancestor`: what the ancestor is (training the embedded one when needed)."""

from __future__ import annotations

from learngene.cli.common import add_data_arg, add_model_args, add_trainer_args, data_arg, print_facts, trainer_args_from
from learngene.core.errors import UserError

HELP = "show the ancestor (training the embedded one when needed)"


def add_arguments(sp) -> None:
    add_model_args(sp)
    add_data_arg(sp, "an ImageFolder: evaluate the ancestor on its test split, or --fine-tune it to its classes", workers=False)
    sp.add_argument("--fine-tune", action="store_true",
                    help="fit the ancestor to --data's classes (a new head, DeiT's fine-tuning recipe scaled down), cached")
    sp.add_argument("--refit", action="store_true", help="--fine-tune again even if a fitted ancestor is cached")
    sp.add_argument("--retrain", action="store_true", help="retrain the embedded ancestor even if cached")
    sp.add_argument("--epochs", type=int, default=None,
                    help="epochs for the embedded ancestor, or for --fine-tune (default: their recipes')")
    sp.add_argument("--seed", type=int, default=None, help="seed for the embedded ancestor (default: its recipe's)")
    sp.add_argument("--json", action="store_true", help="print the facts as JSON")
    add_trainer_args(sp)


def run(ns) -> int:
    from learngene.core.ancestry import describe, embedded_ancestor, fit_ancestor
    from learngene.core.models import EMBEDDED, load_model, parse_ref

    ref = parse_ref(ns.ancestor, weights=ns.pretrained or ns.checkpoint is not None)
    data = data_arg(ns)
    if ns.fine_tune or ns.refit:
        if data is None:
            raise UserError("--fine-tune needs --data DIR: the folder whose classes the ancestor is fitted to")
        if ns.retrain or ns.seed is not None:
            raise UserError("--retrain/--seed are for the embedded ancestor's own training, not --fine-tune")
        base = load_model(ref, pretrained=ns.pretrained, checkpoint=ns.checkpoint, allow_download=ns.allow_download,
                          progress=not ns.quiet)
        anc = fit_ancestor(base, data, epochs=ns.epochs, trainer_args=trainer_args_from(ns, "ancestor (fitting)"),
                           progress=not ns.quiet, refit=ns.refit)
        info = {**describe(anc), "fitted_from": base.source, "fitted": anc.source.split(":", 1)[1]}
        print_facts(info, ns.json)
        if not ns.json:
            m = anc.metrics
            before = f"{m['before_top1']:.2f}% (its own head)" if "before_top1" in m else "n/a (its head has other classes)"
            print(f"test top1 before fitting {before}, after {m['test_top1']:.2f}%; kNN probe {m['before_knn_top1']:.2f}% -> "
                  f"{m['knn_top1']:.2f}%. build-pool / assemble / bench --data {ns.data} now use it.")
        return 0
    if ref.kind == EMBEDDED:
        if ns.pretrained or ns.checkpoint:
            raise UserError("the embedded ancestor takes no --pretrained/--checkpoint (use --retrain to retrain it)")
        anc = embedded_ancestor(retrain=ns.retrain, progress=not ns.quiet, trainer_args=trainer_args_from(ns, "ancestor (embedded)"),
                                epochs=ns.epochs, seed=ns.seed, name=ref.target)
    else:
        if ns.retrain or ns.epochs is not None or ns.seed is not None:
            raise UserError("--retrain/--epochs/--seed apply to the embedded ancestor only")
        anc = load_model(ref, pretrained=ns.pretrained, checkpoint=ns.checkpoint, allow_download=ns.allow_download)
    info = describe(anc, data)
    print_facts(info, ns.json)
    if not ns.json and "test_top1" not in info and "data_top1" not in info:
        print(f"{'accuracy':<{max(len(k) for k in info)}}  unknown (pass --data DIR to measure it)")
    return 0
