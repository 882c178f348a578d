"""`learngene <verb>`: a thin layer over the Python API.

Exit codes: 0 ok, 2 bad input (one line on stderr, no traceback), 1 internal error
(set LEARNGENE_DEBUG=1 for the traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from learngene.errors import UserError

VERBS = {
    "ancestor": "show the ancestor (training the embedded one when needed)",
    "build-pool": "distil the ancestor into auxiliary models and store their blocks as a pool",
    "pool": "inspect a pool: `pool info PATH`, `pool verify PATH`",
    "assemble": "stitch pool instances into a descendant of the size you need",
    "bench": "measure accuracy / params / FLOPs / latency of every descendant on this device",
    "target": "pick the best descendant under a latency / size budget",
    "grow": "make a model larger without changing what it computes",
    "adapt": "fit a model to a new task with a small stored delta (LoRA / adapters)",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2."""

    def error(self, message: str):
        verb = self.prog.removeprefix("learngene").strip()
        raise UserError(f"{verb}: {message}" if verb else message)


def add_ancestor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ancestor", default=None, metavar="NAME",
                   help="timm ViT name or local-dir:FOLDER (default: the embedded ancestor; "
                   "deit_base_patch16_224 when --pretrained/--checkpoint is given)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--pretrained", action="store_true", help="timm's pretrained weights, from its cache")
    w.add_argument("--checkpoint", metavar="FILE", help="weights file: .safetensors or a torch file (weights only)")
    p.add_argument("--allow-download", action="store_true", help="let timm download pretrained weights (otherwise cache only)")


def add_pool_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool", default="pools/embedded", metavar="DIR", help="the pool (default: pools/embedded)")


def add_device_args(p: argparse.ArgumentParser) -> None:
    """Where bench / target measure, and on what data."""
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--data", metavar="DIR", help="ImageFolder (default: the embedded digits)")


def add_trainer_args(p: argparse.ArgumentParser) -> None:
    """Lightning's own flags, passed through (GPUs, several nodes, precision)."""
    g = p.add_argument_group("Lightning")
    g.add_argument("--accelerator", default="auto")
    g.add_argument("--devices", default="auto")
    g.add_argument("--strategy", default="auto")
    g.add_argument("--num-nodes", type=int, default=1)
    g.add_argument("--precision", default=None)


def trainer_args_from(ns: argparse.Namespace):
    from learngene.training import TrainerArgs

    devices = ns.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    # Progress bars only on a terminal: in a log file they are thousands of lines.
    return TrainerArgs(accelerator=ns.accelerator, devices=devices, strategy=ns.strategy, num_nodes=ns.num_nodes,
                       precision=ns.precision, progress=not ns.quiet and sys.stderr.isatty())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="learngene",
        description="Turn one pretrained ViT into a zoo of variable-sized models (Learngene Pool).",
        epilog="Run `learngene VERB --help` for a verb's options.",
    )
    from learngene import __version__

    parser.add_argument("--version", action="version", version=f"learngene {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for verb, helptext in VERBS.items():
        sp = sub.add_parser(verb, help=helptext, description=helptext)
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        if verb == "ancestor":
            add_ancestor_args(sp)
            sp.add_argument("--data", metavar="DIR", help="evaluate the ancestor on this ImageFolder's test split")
            sp.add_argument("--retrain", action="store_true", help="retrain the embedded ancestor even if cached")
            sp.add_argument("--epochs", type=int, default=None, help="epochs for the embedded ancestor (default: its recipe's)")
            sp.add_argument("--seed", type=int, default=None, help="seed for the embedded ancestor (default: its recipe's)")
            sp.add_argument("--json", action="store_true", help="print the facts as JSON")
            add_trainer_args(sp)
        elif verb == "build-pool":
            sp.add_argument("--recipe", default=None, metavar="YAML",
                            help="a recipe file, or the name of one in pools/ (default: embedded)")
            add_ancestor_args(sp)
            sp.add_argument("--data", metavar="DIR", help="ImageFolder to distil on (default: the embedded digits)")
            sp.add_argument("--out", metavar="DIR", help="pool folder (default: pools/<recipe name>)")
            sp.add_argument("--epochs", type=int, default=None, help="epochs for every auxiliary model")
            sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override a recipe field, e.g. distill.alpha=0.2 or auxiliary.narrow.init=ancestor")
            sp.add_argument("--resume", action="store_true", help="continue an interrupted build")
            sp.add_argument("--force", action="store_true", help="replace an existing pool / discard an interrupted build")
            sp.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 0 embedded, 8 ImageFolder)")
            add_trainer_args(sp)
        elif verb == "assemble":
            add_pool_arg(sp)
            pick = sp.add_argument_group("the child to export (one of)")
            pick.add_argument("--size", help="tiny | small | base: parameter budget scaled from DeiT-Ti/S/B to the ancestor")
            pick.add_argument("--params", type=float, metavar="N", help="at most N parameters")
            pick.add_argument("--flops", type=float, metavar="N", help="at most N FLOPs per image")
            pick.add_argument("--config", metavar="J,K", help="narrow blocks 0..J, stitch, wide blocks K..; or narrow / wide")
            t = sp.add_argument_group("training")
            t.add_argument("--all", action="store_true", help="train every descendant jointly (same as --train all)")
            t.add_argument("--train", default="auto", choices=["auto", "all", "target", "none"],
                           help="auto (default): whatever is not trained yet (everything, or the chosen child)")
            t.add_argument("--tune", default="all", choices=["all", "stitches"], help="train stitches and instances (all) or stitches only")
            t.add_argument("--init", default="lstsq", choices=["lstsq", "distill"], help="stitch initialisation for new stitches")
            t.add_argument("--sampling", default="uniform", choices=["uniform", "flops"], help="descendant sampling in joint training")
            t.add_argument("--epochs", type=int, default=None, help="epochs (default: 40 for --all, 10 for a target)")
            t.add_argument("--lr", type=float, default=None, help="learning rate of inherited weights (default 1e-4)")
            t.add_argument("--stitch-lr", type=float, default=None, help="learning rate of stitches (default 1e-3)")
            t.add_argument("--kl", type=float, default=None, help="weight of the KL to the ancestor (default 0.5; 0: no teacher)")
            t.add_argument("--seed", type=int, default=0)
            sp.add_argument("--revision", default="latest", help="pool revision to start from (r0: as distilled; default latest)")
            sp.add_argument("--data", metavar="DIR", help="ImageFolder (default: the embedded digits)")
            add_ancestor_args(sp)
            sp.add_argument("--out", metavar="DIR", help="child folder (default: POOL/children/<id>)")
            sp.add_argument("--force", action="store_true", help="replace an existing child folder")
            sp.add_argument("--no-program", action="store_true", help="skip the torch.export program (model.pt2)")
            sp.add_argument("--list", action="store_true", help="only list the pool's descendants")
            sp.add_argument("--json", action="store_true", help="print the result as JSON")
            sp.add_argument("--workers", type=int, default=None, help="DataLoader workers")
            add_trainer_args(sp)
        elif verb == "bench":
            add_pool_arg(sp)
            add_device_args(sp)
            sp.add_argument("--batch-sizes", default="1,32", help="latency batch sizes (default 1,32)")
            sp.add_argument("--include", default="", help="also measure: ancestor, children, adapted (the pool's deltas, each on its own task)")
            sp.add_argument("--revision", default="latest", help="pool revision to measure (default latest)")
            sp.add_argument("--min-run-time", type=float, default=0.3, help="seconds of timing per model and batch size")
            sp.add_argument("--out", metavar="DIR", help="report folder (default: POOL/reports/<device>-<time>)")
            sp.add_argument("--json", action="store_true", help="print the rows as JSON")
            sp.add_argument("--workers", type=int, default=None, help="DataLoader workers")
        elif verb == "target":
            add_pool_arg(sp)
            add_device_args(sp)
            sp.add_argument("--max-latency-ms", type=float, default=None, required=True, help="latency budget per batch, ms")
            sp.add_argument("--batch-size", type=int, default=1, help="batch size the budget is for (default 1)")
            sp.add_argument("--latency", default="p90", choices=["p90", "median"],
                            help="which measured latency must be within the budget (default p90: margin for noise)")
            sp.add_argument("--min-top1", type=float, default=None, help="lowest acceptable test top1, %%")
            sp.add_argument("--max-params", type=float, default=None, help="most parameters")
            sp.add_argument("--remeasure", action="store_true", help="measure now even if a report for this device exists")
            sp.add_argument("--out", metavar="DIR", help="child folder (default: POOL/children/<id>)")
            sp.add_argument("--force", action="store_true", help="replace an existing child folder")
            sp.add_argument("--json", action="store_true", help="print the result as JSON")
        elif verb == "grow":
            sp.add_argument("--from", dest="source", required=True, metavar="MODEL",
                            help="embedded | a timm name (with --checkpoint / --pretrained) | local-dir:DIR or DIR | POOL:AUX")
            sp.add_argument("--method", required=True, choices=["net2net", "expand", "ligo"])
            sp.add_argument("--embed-dim", type=int, default=None, help="residual width (default: the model's)")
            sp.add_argument("--depth", type=int, default=None, help="number of blocks (default: the model's)")
            sp.add_argument("--heads", type=int, default=None, help="attention heads (default: keep the head size)")
            sp.add_argument("--head-dim", type=int, default=None, help="size of each head (default: keep it)")
            sp.add_argument("--mlp-ratio", type=float, default=None, help="MLP hidden size / width (default: the model's)")
            w = sp.add_mutually_exclusive_group()
            w.add_argument("--checkpoint", metavar="FILE", help="weights for a timm name (.safetensors or weights-only torch file)")
            w.add_argument("--pretrained", action="store_true", help="timm's pretrained weights, from its cache")
            sp.add_argument("--data", metavar="DIR", help="ImageFolder LiGO trains its operator on (default: the embedded digits)")
            sp.add_argument("--steps", type=int, default=100, help="LiGO operator training steps (default 100)")
            sp.add_argument("--noise", type=float, default=0.0,
                            help="net2net: relative noise on the copies (breaks symmetry; no longer exact)")
            sp.add_argument("--seed", type=int, default=0)
            sp.add_argument("--out", required=True, metavar="DIR", help="the grown model's timm local-dir folder")
            sp.add_argument("--force", action="store_true", help="replace an existing folder")
            sp.add_argument("--json", action="store_true", help="print the result as JSON")
            add_trainer_args(sp)
        elif verb == "adapt":
            sp.description = ("`adapt --model M --data D --name TASK`: train and store a delta; "
                              "`adapt apply --model M --delta TASK [--merge --out DIR]`; `adapt ls`")
            sp.add_argument("action", nargs="?", default="train", choices=["train", "apply", "ls"])
            add_pool_arg(sp)
            sp.add_argument("--model", metavar="M", help="a child id of the pool, a timm local-dir, 'embedded', or a timm name")
            sp.add_argument("--checkpoint", metavar="FILE", help="weights for a timm name")
            sp.add_argument("--data", metavar="DIR", help="ImageFolder of the new task, or digits:rot90 (embedded)")
            sp.add_argument("--method", default="lora", choices=["lora", "adapter"])
            sp.add_argument("--rank", type=int, default=8, help="LoRA rank / adapter bottleneck (default 8)")
            sp.add_argument("--targets", default="qkv,proj,fc1,fc2", help="block linears to adapt (default all four)")
            sp.add_argument("--train-head", action="store_true", help="train the classifier too (stored in the delta)")
            sp.add_argument("--epochs", type=int, default=10)
            sp.add_argument("--lr", type=float, default=None, help="peak learning rate (default: lora 3e-3, adapter 1e-2)")
            sp.add_argument("--fraction", type=float, default=1.0, help="fraction of the training split to use")
            sp.add_argument("--seed", type=int, default=0)
            sp.add_argument("--name", metavar="TASK", help="the task: the delta goes to POOL/adapters/TASK")
            sp.add_argument("--delta", metavar="TASK_OR_DIR", help="apply: a task of the pool or a delta folder")
            sp.add_argument("--merge", action="store_true", help="apply: fold the delta into the weights (LoRA)")
            sp.add_argument("--out", metavar="DIR", help="apply --merge: write the merged model as a timm local-dir")
            sp.add_argument("--force", action="store_true", help="replace an existing delta / output folder")
            sp.add_argument("--json", action="store_true")
            add_trainer_args(sp)
        elif verb == "pool":
            sp.add_argument("action", choices=["info", "verify"])
            sp.add_argument("path", metavar="PATH")
            sp.add_argument("--json", action="store_true")
    return parser


def cmd_ancestor(ns: argparse.Namespace) -> int:
    from learngene.ancestry import EMBEDDED, embedded_ancestor, load_ancestor

    if ns.ancestor in (None, EMBEDDED) and not (ns.pretrained or ns.checkpoint):
        anc = embedded_ancestor(retrain=ns.retrain, progress=not ns.quiet, trainer_args=trainer_args_from(ns), epochs=ns.epochs, seed=ns.seed)
    else:
        if ns.retrain or ns.epochs is not None or ns.seed is not None:
            raise UserError("--retrain/--epochs/--seed apply to the embedded ancestor only")
        anc = load_ancestor(ns.ancestor, pretrained=ns.pretrained, checkpoint=ns.checkpoint,
                            allow_download=ns.allow_download)
    info = anc.info()
    if ns.data:
        from learngene.data import LearngeneDataModule
        from learngene.training import evaluate

        dm = LearngeneDataModule(ns.data, data_config=anc.data_config, augment=False)
        if dm.num_classes != info["num_classes"]:
            raise UserError(f"{ns.data} has {dm.num_classes} classes but the ancestor's head has {info['num_classes']}")
        acc = evaluate(anc.model, dm.test_dataloader())
        info.update({"data": str(ns.data), "data_top1": round(acc["top1"], 2), "data_top5": round(acc["top5"], 2)})
    if ns.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")
    if "test_top1" not in info and "data_top1" not in info:
        print(f"{'accuracy':<{width}}  unknown (pass --data DIR to measure it)")
    return 0


def cmd_build_pool(ns: argparse.Namespace) -> int:
    from learngene.ancestry import load_ancestor
    from learngene.data import LearngeneDataModule
    from learngene.pool import build_pool, load_recipe, resolve_recipe_path
    from learngene.pool.build import check_output

    recipe = load_recipe(resolve_recipe_path(ns.recipe), ns.set)
    out = Path(ns.out).expanduser() if ns.out else Path("pools") / recipe.name
    if not ns.resume:
        check_output(out, ns.force)  # before loading (or training) any ancestor
    data = LearngeneDataModule(ns.data, num_workers=ns.workers)  # checks the folder now, too
    name = ns.ancestor or (None if recipe.ancestor == "embedded" else recipe.ancestor)
    ancestor = load_ancestor(name, pretrained=ns.pretrained, checkpoint=ns.checkpoint,
                             allow_download=ns.allow_download, progress=not ns.quiet)
    if ancestor.source == "random-init":
        raise UserError(f"ancestor {ancestor.name} has no weights: pass --pretrained or --checkpoint FILE "
                        "(distilling a random-init model would build a meaningless pool)")
    pool = build_pool(recipe, out=out, ancestor=ancestor, data=data, epochs=ns.epochs, resume=ns.resume,
                      force=ns.force, trainer_args=trainer_args_from(ns), num_workers=ns.workers)
    if pool is None:  # a DDP rank other than 0
        return 0
    print(f"pool written: {pool.path} ({len(pool.instances)} instances, {pool.stored_params() / 1e6:.2f}M stored parameters)")
    anc_acc = pool.manifest["ancestor"].get("test_top1")
    for name, meta in pool.auxiliary.items():
        m = meta["metrics"]
        print(f"  {name}: width {meta['model_args']['embed_dim']}, {meta['model_args']['depth']} blocks, "
              f"{meta['params'] / 1e6:.2f}M params, test top1 {m['test_top1']:.2f}%, {m['seconds']:.0f} s")
    if anc_acc is not None:
        print(f"  ancestor: test top1 {anc_acc:.2f}%")
    return 0


def cmd_assemble(ns: argparse.Namespace) -> int:
    from learngene.assemble.api import Selection, assemble, load_pool_model, static_rows, _with_accuracy
    from learngene.assemble.train import AssembleSpec
    from learngene.pool import Pool

    sel = Selection(size=ns.size, params=ns.params, flops=ns.flops, config=ns.config)
    if ns.list:
        pool = Pool.open(ns.pool)
        pm, _ = load_pool_model(pool, ns.revision)
        rev = pool.revision(ns.revision)
        rows = _with_accuracy(static_rows(pm, pm.narrow_args["img_size"]), rev)
        print_table(rows, ["id", "blocks", "params", "flops", "val_top1", "test_top1"], ns.json)
        return 0
    spec = AssembleSpec(seed=ns.seed)
    for field, value in (("epochs", ns.epochs), ("lr", ns.lr), ("stitch_lr", ns.stitch_lr), ("kl_weight", ns.kl)):
        if value is not None:
            setattr(spec, field, value)
    spec.tune, spec.sampling = ns.tune, ns.sampling
    if ns.all and ns.train not in ("auto", "all"):
        raise UserError(f"--all contradicts --train {ns.train}")
    ancestor = None
    if ns.ancestor or ns.pretrained or ns.checkpoint:
        from learngene.ancestry import load_ancestor

        ancestor = load_ancestor(ns.ancestor, pretrained=ns.pretrained, checkpoint=ns.checkpoint, allow_download=ns.allow_download)
    say = (lambda m: None) if ns.quiet or ns.json else (lambda m: print(m, file=sys.stderr))
    res = assemble(ns.pool, selection=sel, train="all" if ns.all else ns.train, init=ns.init, spec=spec,
                   revision=ns.revision, data=ns.data, ancestor=ancestor, out=ns.out, force=ns.force,
                   export_program=not ns.no_program, trainer_args=trainer_args_from(ns), num_workers=ns.workers, progress=say)
    if ns.json:
        print(json.dumps({"revision": (res.revision or {}).get("id", "r0"), "descendants": res.rows, "chosen": res.chosen,
                          "child": str(res.child) if res.child else None, "seconds": round(res.seconds, 1)}, indent=2))
        return 0
    print_table(res.rows, ["id", "blocks", "params", "flops", "init_val_top1", "val_top1", "test_top1"], False,
                mark=(res.chosen or {}).get("id"))
    if res.child:
        c = res.chosen
        anc = res.pool.manifest["ancestor"]["params"]
        acc = f", test top1 {c['test_top1']:.2f}%" if c.get("test_top1") is not None else ""
        print(f"child {c['id']}: {c['params'] / 1e6:.3f}M params ({100 * c['params'] / anc:.1f}% of the ancestor), "
              f"{c['flops'] / 1e6:.1f} MFLOPs{acc} -> {res.child}")
    print(f"pool revision {(res.revision or {}).get('id', 'r0')}, {res.seconds:.1f} s")
    return 0


def cmd_bench(ns: argparse.Namespace) -> int:
    from learngene.bench import bench

    res = bench(ns.pool, device=ns.device, threads=ns.threads, batch_sizes=ns.batch_sizes, data=ns.data,
                include=[i.strip() for i in ns.include.split(",")], revision=ns.revision, out=ns.out,
                min_run_time=ns.min_run_time, num_workers=ns.workers, progress=not ns.quiet and not ns.json and sys.stderr.isatty())
    if ns.json:
        print(res.df.to_json(orient="records", indent=2))
        return 0
    m = res.meta
    print(f"{m['pool']} (revision {m['revision']}, stitches {m['stitches']}) on {m['device_name']}, {m['threads']} threads")
    for bs, g in res.df.groupby("infer_batch_size"):
        print(f"batch {bs}:")
        rows = [dict(r, id=r["model"], ms=r["infer_step_time"], params_m=r["param_count"], mflops=r["flops"] / 1e6,
                     img_per_s=r["infer_samples_per_sec"]) for r in g.sort_values("infer_step_time").to_dict("records")]
        print_table(rows, ["id", "top1", "knn_top1", "params_m", "mflops", "ms", "img_per_s"], False,
                    mark={r["id"] for r in rows if r["pareto"]})
    print(f"report: {res.report}/frontier.md (+ .csv .json .png), {res.seconds:.1f} s")
    return 0


def cmd_target(ns: argparse.Namespace) -> int:
    from learngene.bench.budget import LATENCY_STATS, target

    res = target(ns.pool, max_latency_ms=ns.max_latency_ms, batch_size=ns.batch_size, min_top1=ns.min_top1,
                 max_params=ns.max_params, latency=ns.latency, device=ns.device, threads=ns.threads, data=ns.data, out=ns.out,
                 force=ns.force, remeasure=ns.remeasure, progress=not ns.quiet and not ns.json and sys.stderr.isatty())
    if ns.json:
        print(json.dumps({"chosen": res.chosen, "alternatives": res.alternatives, "child": str(res.child),
                          "report": str(res.report), "measured_now": res.measured_now}, indent=2))
        return 0

    col = LATENCY_STATS[ns.latency]

    def say(r):
        return (f"{r['model']}: top1 {r['top1']:.2f}%, {r[col]:.2f} ms {ns.latency} per batch of {r['infer_batch_size']}, "
                f"{r['param_count']:.3f}M params")

    c = res.chosen
    print(f"chosen {say(c)}: the most accurate descendant within {ns.max_latency_ms:g} ms"
          f" ({'measured now' if res.measured_now else 'report'} {res.report})")
    for r in res.alternatives:
        why = "fits, less accurate" if r[col] <= ns.max_latency_ms else "more accurate, over budget"
        print(f"  alternative {say(r)} ({why})")
    print(f"child -> {res.child}")
    return 0


def print_table(rows: list[dict], cols: list[str], as_json: bool, mark: str | set | None = None) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return

    def cell(v):
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)

    widths = {c: max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in cols}
    print("  " + "  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        flag = "  " if mark is None else "* " if (r.get("id") in mark if isinstance(mark, set) else r.get("id") == mark) else "  "
        print(flag + "  ".join(cell(r.get(c)).ljust(widths[c]) for c in cols))


def cmd_grow(ns: argparse.Namespace) -> int:
    from learngene.grow import api

    if ns.steps < 0:
        raise UserError(f"--steps must be >= 0, got {ns.steps}")
    if ns.noise < 0:
        raise UserError(f"--noise must be >= 0, got {ns.noise}")
    if ns.method != "net2net" and ns.noise:
        raise UserError("--noise applies to --method net2net only")
    out = Path(ns.out)
    if out.exists() and not ns.force:  # before any loading or training
        raise UserError(f"output exists: {out} (pass --force to replace it)")
    src = api.load_source(ns.source, checkpoint=ns.checkpoint, pretrained=ns.pretrained)
    target = api.resolve_target(src.model, ns.method, ns.embed_dim, ns.depth, ns.heads, ns.mlp_ratio, ns.head_dim)
    dm = api.datamodule(src.model, ns.data, seed=ns.seed) if ns.method == "ligo" else None
    if ns.data and ns.method != "ligo":
        raise UserError("--data is for --method ligo (the other methods need no data)")
    res = api.grow_to_dir(src, ns.method, out, target, dm=dm, steps=ns.steps, noise=ns.noise, seed=ns.seed,
                          force=ns.force, trainer_args=trainer_args_from(ns))
    if ns.json:
        print(json.dumps(res, indent=2))
        return 0
    t = res["target"]
    print(f"grew {ns.source} ({res['source_params']:,} params) by {ns.method} to width {t['embed_dim']}, depth {t['depth']}, "
          f"{t['num_heads']} heads of {t['head_dim']}, MLP {t['mlp_hidden']}: {res['params']:,} params in {res['seconds']} s")
    print(f"max |logit change| on random images: {res['max_logit_change']:.2e}")
    print(f"saved {out} (timm.create_model('local-dir:{out}', pretrained=True))")
    return 0


def cmd_adapt(ns: argparse.Namespace) -> int:
    from learngene.adapt import api

    if ns.action == "ls":
        rows = api.ls(ns.pool)
        if not rows and not ns.json:
            print(f"no deltas in {api.adapters_dir(ns.pool)}")
            return 0
        print_table(rows, ["task", "method", "r", "base", "data", "test_top1", "trainable_params", "delta_bytes",
                           "delta_fraction"], ns.json)
        return 0
    if not ns.model:
        raise UserError(f"adapt {ns.action}: give --model")
    if ns.action == "apply":
        if not ns.delta:
            raise UserError("adapt apply: give --delta (a task of the pool or a delta folder)")
        if ns.out and not ns.merge:
            raise UserError("adapt apply: --out writes a merged model; add --merge")
        if ns.out and Path(ns.out).exists() and not ns.force:
            raise UserError(f"output exists: {ns.out} (pass --force to replace it)")
        model, ad, base = api.apply(ns.model, ns.delta, ns.pool, merge=ns.merge, checkpoint=ns.checkpoint)
        from learngene.training import evaluate

        dm = api.data_for(base, ns.data or ad.meta.get("data"))
        acc = evaluate(model, dm.test_dataloader())
        res = {"task": ad.meta.get("task"), "method": ad.method, "data": dm.name, "test_top1": round(acc["top1"], 2),
               "merged": ns.merge}
        if ns.merge:
            img = int(base.model.patch_embed.img_size[0])
            res["merge_max_logit_diff"] = api.max_diff(ad.model, model, img)
            if ns.out:
                res["out"] = str(api.export_merged(model, ad, base, Path(ns.out), ns.force))
        if ns.json:
            print(json.dumps(res, indent=2))
        else:
            print(", ".join(f"{k}: {v}" for k, v in res.items()))
        return 0
    if ns.delta or ns.merge or ns.out:
        raise UserError("--delta / --merge / --out belong to `adapt apply`")
    if not ns.name:
        raise UserError("adapt: give --name TASK (the delta is stored as POOL/adapters/TASK)")
    res = api.adapt(ns.model, ns.data, ns.name, ns.method, ns.rank, ns.targets, ns.train_head, ns.epochs, ns.lr,
                    ns.pool, ns.fraction, ns.seed, ns.force, ns.checkpoint, trainer_args_from(ns), progress=not ns.quiet)
    if ns.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['method']} delta for {res['task']} on {res['base']}: test top1 {res['test_top1']}%, "
              f"{res['trainable_params']:,} trainable params, {res['delta_bytes']:,} bytes "
              f"({100 * res['delta_fraction']:.2f}% of the model) in {res['seconds']} s -> {res['path']}")
    return 0


def cmd_pool(ns: argparse.Namespace) -> int:
    from learngene.pool import Pool

    if ns.action == "verify":
        pool = Pool.open(ns.path, verify=False)
        n = pool.verify()
        print(f"ok: {n} files in {pool.path} match their sha256")
        return 0
    pool = Pool.open(ns.path, verify=True)
    rows = pool.info_rows()
    if ns.json:
        print(json.dumps({"path": str(pool.path), "ancestor": pool.manifest["ancestor"], "instances": rows,
                          "auxiliary": pool.auxiliary, "stored_params": pool.stored_params(),
                          "revisions": [{k: r[k] for k in ("id", "parent", "created", "train", "trained", "files")} for r in pool.revisions]},
                         indent=2))
        return 0
    anc = pool.manifest["ancestor"]
    print(f"pool {pool.path}: ancestor {anc['name']} ({anc['params'] / 1e6:.2f}M, sha256 {anc['sha256'][:12]}), "
          f"{len(rows)} instances, {pool.stored_params() / 1e6:.2f}M stored parameters")
    print_table(rows, ["id", "source", "width", "heads", "block", "params", "file"], False)
    for rev in pool.revisions:
        print(f"revision {rev['id']} (from {rev['parent']}): {rev['train']} training of {len(rev['trained'])} descendant(s), "
              f"{len(rev['files'])} files, {rev['created']}")
    return 0


def run(argv: list[str] | None = None) -> int:
    import logging

    # torch.utils.benchmark / torch.export import cpp_extension, which warns about a missing
    # CUDA toolkit on CPU machines: noise that would break "one line on error"
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    parser = build_parser()
    ns, unknown = parser.parse_known_args(argv)
    if ns.verb is None and not unknown:
        parser.print_help()
        return 0
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return {"ancestor": cmd_ancestor, "build-pool": cmd_build_pool, "pool": cmd_pool, "assemble": cmd_assemble,
            "bench": cmd_bench, "target": cmd_target, "grow": cmd_grow,
            "adapt": cmd_adapt}[ns.verb](ns)


def main(argv: list[str] | None = None) -> int:
    try:
        code = run(argv)
    except UserError as e:
        print(f"learngene: error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("learngene: interrupted", file=sys.stderr)
        code = 130
    except Exception as e:  # anything else is our bug, not the user's input
        if os.environ.get("LEARNGENE_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:200]
        print(f"learngene: internal error: {type(e).__name__}: {first} (LEARNGENE_DEBUG=1 shows the traceback)", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
