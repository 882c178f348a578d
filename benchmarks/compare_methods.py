"""The pool against its baselines on an embedded testbed, side by side, over seeds:
Learngene Pool, SN-Net stitching, vanilla learngene and scratch, at descendant-training
budgets. Writes benchmarks/results/methods.{md,csv,png} (+ methods.json, the raw figures) for
the digits, methods_animals.* for the animals.

    python benchmarks/compare_methods.py [--testbed digits|animals] [--seeds 0 1 2] [--budgets 3 40]

Testbeds (`TESTBEDS`): the digits (saturated: size buys nothing; budgets 3 and 40, the three
SN-Net anchors) and the animal silhouettes (the same ancestor recipe reaches ~9 points more
than the narrow auxiliary alone; budget 15 epochs x 47 batches = 705 steps, about the digits'
default 40 x 18 = 720; anchors (a) and (b): an animals epoch costs 2.5 digits epochs, and
this keeps three seeds near 1.5 hours on 2 cores). Per seed the slope is
measured too: the recipe's narrow auxiliary architecture trained alone from scratch with the
ancestor's 30-epoch recipe, against the ancestor.

Per seed, from the testbed's cached embedded ancestor and its data (shuffled with the seed):
- pool: `build_pool` (the embedded recipe, distillation seed = seed), then per budget
  `assemble --all` on a fresh copy of the distilled pool (lstsq init, joint training);
- SN-Net: a narrow anchor (width 48, the ancestor's 12 blocks) made each `--anchors` way
  (plateau: from scratch until validation stops improving; distilled: as the pool's narrow
  model; fixed: 30 epochs from scratch), then per budget stitched to the ancestor, lstsq init,
  joint training with assemble's recipe and the same number of epochs (sn_net.py);
- vanilla learngene: the ancestor's last 3 blocks under 1..6 new narrow blocks, CE, each
  member its 1/6 share of the pool's optimizer steps at that budget;
- scratch: each pool descendant architecture from random init, CE, each its 1/18 share.
So every method spends the same optimizer steps training its members at a budget; the
stages before (distillation, anchor training) are timed separately.

Latency: each member of the last seed's zoos at batch size 1, in one pass at the end
(torch.utils.benchmark medians; the weights do not change it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS, cpu_name, ensure_animals, quiet

KEPT = RESULTS  # the runs the overview lists (RESULTS may be moved with --out)

METHODS = (
    "pool",
    "pool-pruned",
    "pool-pruned-60",
    "snnet-plateau",
    "snnet-distilled",
    "snnet",
    "kd",
    "prune-kd",
    "kd-plateau",
    "vanilla",
    "scratch",
    "vanilla-each",
    "scratch-each",
)
SHORT = {"kd": "KD", "prune-kd": "Prune+KD", "kd-plateau": "KD to plateau"}  # table headings
# the methods that give a member per size from the same ancestor: what the pool must beat
ALTERNATIVES = ("snnet-plateau", "snnet-distilled", "snnet", "kd", "prune-kd", "kd-plateau")
LABEL = {
    "pool": "Learngene Pool",
    "pool-pruned": "Learngene Pool, narrow auxiliary from the pruned ancestor, distilled to its plateau",
    "pool-pruned-60": "Learngene Pool, narrow auxiliary from the pruned ancestor, distilled 60 epochs",
    "pool-pruned-60-deficit": "Learngene Pool, pruned start, narrow 60 epochs, joint steps by deficit",
    "snnet": "SN-Net (c), anchor 30 epochs from scratch",
    "snnet-plateau": "SN-Net (a), anchor from scratch to its plateau",
    "snnet-distilled": "SN-Net (b), anchor distilled like the pool's narrow",
    "vanilla": "vanilla learngene",
    "scratch": "scratch",
    "vanilla-each": "vanilla learngene, E epochs each",
    "scratch-each": "scratch, E epochs each",
    "kd": "KD per size, the pool's steps shared",
    "prune-kd": "Torch-Pruning + KD per size, the pool's steps shared",
    "kd-plateau": "KD per size, each to its plateau",
}
# the pool and its variants: each compared with the alternatives
POOLS = ("pool", "pool-pruned", "pool-pruned-60", "pool-pruned-60-deficit")
SNNET = {"plateau": "snnet-plateau", "distilled": "snnet-distilled", "fixed": "snnet"}  # anchor -> method
TESTBEDS = {
    "digits": dict(
        ancestor="embedded",
        data=None,
        recipe="embedded",
        stem="methods",
        budgets=[3, 40],
        anchors=list(SNNET),
        about="the cached embedded ancestor (12 blocks, width 128, 2.37M params) and "
        "the scikit-learn digits (16 px; test split, 450 images)",
    ),
    "animals": dict(
        ancestor="embedded:animals",
        data="animals",
        recipe="animals",
        stem="methods_animals",
        budgets=[15],
        anchors=["plateau", "distilled"],
        about="the animals' embedded ancestor (the digits' architecture "
        "and recipe, 12 blocks, width 128, 2.37M params) and the animal-mnist silhouettes (16 px; 3,000 "
        "train, 800 val, 2,000 test images)",
    ),
    "clutter": dict(
        ancestor="embedded:clutter",
        data="clutter",
        recipe="clutter",
        stem="methods_clutter",
        budgets=[15, 40],
        anchors=["plateau", "distilled"],
        variants={"pool-pruned": "clutter-pruned", "pool-pruned-60": "clutter-pruned-60"},  # method -> recipe
        # the same cached pool, joint training with --sampling deficit (steps to the members that a
        # cheaper member beats): method -> (pool method, AssembleSpec fields)
        joint_variants={"pool-pruned-60-deficit": ("pool-pruned-60", {"sampling": "deficit"})},
        per_size_steps="pool-pruned-60",  # kd / prune-kd share this pool method's steps (method_units.py)
        about="the clutter testbed's embedded ancestor (the digits' architecture and recipe, 12 blocks, width "
        "128, 2.39M params, trained to its plateau and shipped) and the animal silhouettes among clutter, drawn "
        "anew every epoch (16 px; 7,200 train, 800 val, 2,000 test images; learngene.core.clutter)",
    ),
}
for _name, _bed in TESTBEDS.items():
    _bed["name"] = _name


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def architectures(pool_dir: Path):
    """A pool's members, for their architectures (what scratch trains afresh)."""
    from learngene.pool import Pool
    from learngene.zoo import pool_zoo

    pool = Pool.open(pool_dir)
    return pool_zoo(pool, "r0", pm=pool.model("r0")[0])


def narrow_alone(ancestor, dm, recipe: str, seed: int, epochs: int | None) -> float:
    """Test top1 of the recipe's narrow auxiliary architecture trained alone from scratch with
    the ancestor's recipe (cross-entropy, 30 epochs): the low end of the testbed's slope."""
    from learngene.baselines.sn_net import ANCHOR_EPOCHS, train_anchor
    from learngene.core.evaluation import evaluate
    from learngene.pool import load_recipe, resolve_recipe_path

    narrow = min(load_recipe(resolve_recipe_path(recipe)).auxiliary, key=lambda a: a.embed_dim)
    model = train_anchor(
        ancestor.model,
        dm,
        narrow.embed_dim,
        narrow.num_heads,
        epochs or ANCHOR_EPOCHS,
        seed,
        trainer_args=quiet(),
        depth=narrow.depth,
    )[0]
    return round(evaluate(model, dm.test_dataloader())["top1"], 2)


def run_seed(
    seed: int,
    budgets: list[int],
    work: Path,
    pre_epochs: int | None = None,
    anchors: tuple[str, ...] = tuple(SNNET),
    bed: dict = TESTBEDS["digits"],
) -> tuple[dict, dict]:
    """{budget: {method: zoo record}, "narrow_alone": top1}, and the last budget's zoos (for latency)."""
    from learngene.assembly import AssembleSpec, assemble
    from learngene.baselines import make_anchor, scratch, snnet, vanilla
    from learngene.core.data import LearngeneDataModule
    from learngene.models.refs import load_model
    from learngene.pool import Pool, build_pool
    from learngene.zoo import pool_zoo

    ancestor = load_model(bed["ancestor"], progress=False)
    dm = LearngeneDataModule(bed["data"], batch_size=64, seed=seed)
    t0 = time.perf_counter()
    distilled = build_pool(
        bed["recipe"],
        out=work / f"pool-{seed}",
        ancestor=ancestor,
        data=dm,
        overrides=[f"distill.seed={seed}"],
        epochs=pre_epochs,
        trainer_args=quiet(),
    )
    build_s = time.perf_counter() - t0
    log(f"seed {seed}: pool built in {build_s:.0f} s")
    out, zoos = {}, {}
    out["narrow_alone"] = narrow_alone(ancestor, dm, bed["recipe"], seed, pre_epochs)
    log(f"seed {seed}: narrow auxiliary alone from scratch {out['narrow_alone']:.2f}")
    made = {}
    for how in anchors:
        t0 = time.perf_counter()
        made[how] = make_anchor(
            how, ancestor.model, dm, seed=seed, trainer_args=quiet(), epochs=pre_epochs, recipe=bed["recipe"]
        )
        made[how] += (time.perf_counter() - t0,)
        log(f"seed {seed}: SN-Net narrow anchor ({how}) made in {made[how][3]:.0f} s: {made[how][2]}")

    for budget in budgets:
        t0 = time.perf_counter()
        p = distilled.copy_as_distilled(work / f"pool-{seed}-e{budget}").path
        res = assemble(
            p,
            train="all",
            spec=AssembleSpec(seed=seed, epochs=budget),
            data=dm,
            trainer_args=quiet(),
            progress=lambda m: None,
        )
        steps = res.trained["steps"]
        pool = pool_zoo(Pool.open(p), static=True)
        pool.seconds, pool.steps = {"build-pool": build_s, "assemble --all": time.perf_counter() - t0}, steps
        log(f"seed {seed} budget {budget}: pool assembled ({steps} steps)")
        sns = []
        for how, (model, args, record, anchor_s) in made.items():
            sn = snnet(
                ancestor.model,
                dm,
                spec=AssembleSpec(seed=seed, epochs=budget),
                seed=seed,
                anchor=(model, args),
                trainer_args=quiet(),
                log=log,
            )
            sn.method, sn.seconds = SNNET[how], {"anchor": anchor_s, **sn.seconds}
            sns.append(sn)
        t0 = time.perf_counter()
        va = vanilla(ancestor.model, dm, steps_each=steps // 6, seed=seed, trainer_args=quiet())
        va.seconds = {"train": time.perf_counter() - t0}
        t0 = time.perf_counter()
        sc = scratch(architectures(p), dm, steps_each=steps // len(pool.rows), seed=seed, trainer_args=quiet())
        sc.seconds = {"train": time.perf_counter() - t0}
        zoos = {z.method: z for z in (pool, *sns, va, sc)}
        anchor_of = {SNNET[how]: rec for how, (_, _, rec, _) in made.items()}  # epochs run, best epoch
        out[str(budget)] = {
            m: {
                "rows": z.rows,
                "seconds": z.seconds,
                "stored_params": z.stored_params,
                "steps": z.steps,
                **({"anchor": anchor_of[m]} if m in anchor_of else {}),
            }
            for m, z in zoos.items()
        }
        log(
            f"seed {seed} budget {budget}: "
            + ", ".join(f"{m} {statistics.mean(r['test_top1'] for r in z.rows):.2f}" for m, z in zoos.items())
        )
    return out, zoos


def run_each(seed: int, budget: int, kinds: list[str], pool_dir: Path, bed: dict = TESTBEDS["digits"]) -> dict:
    """vanilla / scratch with E full epochs per member (6x / 18x the pool's steps): the
    calibration's reading of "the same budget"; scratch takes its architectures from any
    pool built with the embedded recipe (weights unused)."""
    from learngene.baselines import scratch, vanilla
    from learngene.core.data import LearngeneDataModule
    from learngene.models.refs import load_model

    dm = LearngeneDataModule(bed["data"], batch_size=64, seed=seed)
    steps = budget * len(dm.train_dataloader())
    out = {}
    for kind in kinds:
        t0 = time.perf_counter()
        if kind == "vanilla":
            z = vanilla(
                load_model(bed["ancestor"], progress=False).model, dm, steps_each=steps, seed=seed, trainer_args=quiet()
            )
        else:
            z = scratch(architectures(pool_dir), dm, steps_each=steps, seed=seed, trainer_args=quiet())
        out[f"{kind}-each"] = {
            "rows": z.rows,
            "seconds": {"train": time.perf_counter() - t0},
            "stored_params": z.stored_params,
            "steps": z.steps,
        }
        log(
            f"seed {seed} budget {budget}: {kind}, {budget} epochs each: "
            f"{statistics.mean(r['test_top1'] for r in z.rows):.2f}"
        )
    return out


def latencies(zoos: dict, img_size: int) -> dict:
    from learngene.measure.metrics import latency

    return {
        m: {sid: latency(model, 1, img_size, torch.device("cpu"))["median_s"] * 1e3 for sid, model in z.models.items()}
        for m, z in zoos.items()
    }


def main():
    global RESULTS
    ap = argparse.ArgumentParser()
    ap.add_argument("--testbed", choices=list(TESTBEDS), default="digits")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budgets", type=int, nargs="+", help="descendant-training epochs (default: the testbed's)")
    ap.add_argument("--md-only", action="store_true", help="rewrite the testbed's .md/.csv/.png from its .json")
    ap.add_argument("--pre-epochs", type=int, help="smoke runs only: epochs of distillation and anchor training")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--each",
        nargs="+",
        choices=["vanilla", "scratch"],
        help="add vanilla / scratch with --budgets epochs per member to the .json (a second, untimed run)",
    )
    ap.add_argument(
        "--pool", type=Path, default=Path("pools/embedded"), help="--each scratch: architectures from this pool"
    )
    ap.add_argument(
        "--slope-only",
        action="store_true",
        help="add the slope (the ancestor, the narrow auxiliary alone per seed) to an existing .json",
    )
    ap.add_argument(
        "--anchors",
        nargs="+",
        choices=list(SNNET),
        help="SN-Net narrow anchors: plateau (a), distilled (b), fixed (c: 30 epochs from scratch); default: "
        "the testbed's",
    )
    ap.add_argument(
        "--units",
        action="store_true",
        help="run as resumable units (testbed, method, budget, seed), each appended to "
        "results/units_TESTBED.jsonl when it finishes; a rerun skips them (method_units.py)",
    )
    ap.add_argument("--status", action="store_true", help="the units done and left, with the time left")
    ap.add_argument("--methods", nargs="+", help="--units / --status: only these methods")
    a = ap.parse_args()
    bed = TESTBEDS[a.testbed]
    if bed["data"] == "animals":
        ensure_animals()
    budgets, anchors = a.budgets or bed["budgets"], a.anchors or bed["anchors"]
    RESULTS = a.out
    raw = RESULTS / f"{bed['stem']}.json"
    if a.units or a.status:
        import method_units as mu

        todo = mu.plan(
            a.seeds,
            budgets,
            [
                m
                for m in (*mu.UNIT_METHODS, *bed.get("variants", {}), *bed.get("joint_variants", {}))
                if not a.methods or m in a.methods
            ],
            [m for m in mu.PLATEAU_METHODS if not a.methods or m in a.methods],
        )
        if a.status:
            print(mu.status(RESULTS, a.testbed, todo))
            return None
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        RESULTS.mkdir(exist_ok=True)
        for unit in todo:  # one at a time, the outputs rewritten after each
            mu.run(bed, [unit], RESULTS, a.pre_epochs, quiet)
            res = from_units(bed, mu.done(RESULTS, a.testbed), budgets)
            raw.write_text(json.dumps(res, indent=2))
            if res["seeds"]:
                write_outputs(res)
        return None
    if a.each:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        res = json.loads(raw.read_text())
        for seed in a.seeds:
            for b in budgets:
                res["seeds"][str(seed)][str(b)].update(run_each(seed, b, a.each, a.pool, bed))
                raw.write_text(json.dumps(res, indent=2))
        res.setdefault("each_commands", []).append("python benchmarks/compare_methods.py " + " ".join(sys.argv[1:]))
        raw.write_text(json.dumps(res, indent=2))
        return write_outputs(res)
    RESULTS.mkdir(exist_ok=True)
    if a.md_only:
        return write_outputs(json.loads(raw.read_text()))
    if a.slope_only:  # a run made before the slope was measured: the cached ancestor, the narrow alone per seed
        from learngene.core.data import LearngeneDataModule
        from learngene.models.refs import load_model

        torch.set_num_threads(min(2, os.cpu_count() or 1))
        res = json.loads(raw.read_text())
        anc = load_model(bed["ancestor"], progress=False)
        res["ancestor"] = {
            "test_top1": anc.metrics.get("test_top1"),
            "params": anc.info()["params"],
            "note": "added by --slope-only",
        }
        for seed in res["seeds"]:
            dm = LearngeneDataModule(bed["data"], batch_size=64, seed=int(seed))
            res["seeds"][seed]["narrow_alone"] = narrow_alone(anc, dm, bed["recipe"], int(seed), None)
            log(f"seed {seed}: narrow auxiliary alone from scratch {res['seeds'][seed]['narrow_alone']:.2f}")
        res["slope_command"] = "python benchmarks/compare_methods.py " + " ".join(sys.argv[1:])
        raw.write_text(json.dumps(res, indent=2))
        return write_outputs(res)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from learngene.models.refs import load_model

    t0 = time.perf_counter()
    anc = load_model(bed["ancestor"], progress=False)  # trained and cached on first use
    res = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "command": "python benchmarks/compare_methods.py " + " ".join(sys.argv[1:]),
        "testbed": a.testbed,
        "budgets": budgets,
        "ancestor": {
            "test_top1": anc.metrics.get("test_top1"),
            "params": anc.info()["params"],
            "seconds_to_load_or_train": round(time.perf_counter() - t0, 1),
        },
        "seeds": {},
    }
    log(f"{a.testbed}: ancestor {anc.name}, test top1 {res['ancestor']['test_top1']}")
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        zoos = {}
        for seed in a.seeds:
            res["seeds"][str(seed)], zoos = run_seed(seed, budgets, Path(d), a.pre_epochs, tuple(anchors), bed)
            raw.write_text(json.dumps(res, indent=2))  # progress survives a stop
        log("latency, batch size 1")
        res["latency_ms"] = latencies(zoos, anc.view.shape.img_size)
    res["total_s"] = time.perf_counter() - t_all
    raw.write_text(json.dumps(res, indent=2))
    write_outputs(res)


# -- outputs ------------------------------------------------------------------------------------


def from_units(bed: dict, units: list[dict], budgets: list[int]) -> dict:
    """The units of a testbed as the run record the outputs read: seeds -> budget -> method ->
    record, the slope's two ends from benchmarks/results/ancestor.json (each trained to its
    plateau by ancestor.py)."""
    anc_runs = json.loads((KEPT / "ancestor.json").read_text())["runs"] if (KEPT / "ancestor.json").is_file() else []
    mine = [r for r in anc_runs if r["testbed"] == bed["name"]]
    anc = next((r for r in mine if r.get("arch", "ancestor") == "ancestor"), None)
    res = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "command": f"python benchmarks/compare_methods.py --testbed {bed['name']} --units",
        "testbed": bed["name"],
        "budgets": budgets + (["plateau"] if any(u["budget"] == "plateau" for u in units) else []),
        "seeds": {},
    }
    if anc:
        res["ancestor"] = {"test_top1": anc["test_top1"], "params": anc.get("params"), "epochs": anc["epochs_run"]}
    for u in units:
        seed = res["seeds"].setdefault(str(u["seed"]), {})
        seed.setdefault(str(u["budget"]), {})[u["method"]] = {k: v for k, v in u.items() if k not in ("testbed",)}
    for sd, rec in res["seeds"].items():
        alone = [r["test_top1"] for r in mine if r.get("arch") == "narrow" and str(r["seed"]) == sd]
        if alone:
            rec["narrow_alone"] = alone[0]
    # the per-size students at their plateau stand beside every budget (they have none)
    for rec in res["seeds"].values():
        for m, r in rec.pop("plateau", {}).items():
            for b in budgets:
                rec.setdefault(str(b), {})[m] = r
    res["budgets"] = budgets
    return res


def table(res: dict, budget: int) -> list[dict]:
    """One row per method and member: params, FLOPs, latency, test top1 per seed, mean, std."""
    seeds = list(res["seeds"])
    rows = []
    for m in present(res, budget):
        first = res["seeds"][seeds[0]][str(budget)][m]["rows"]
        for r in first:
            accs = [
                next(x for x in res["seeds"][s][str(budget)][m]["rows"] if x["id"] == r["id"])["test_top1"]
                for s in seeds
            ]
            rows.append(
                {
                    "budget_epochs": budget,
                    "method": m,
                    "id": r["id"],
                    "params": r["params"],
                    "flops": r["flops"],
                    "latency_ms": res.get("latency_ms", {}).get(m.removesuffix("-each"), {}).get(r["id"]),
                    **{f"top1_seed{s}": v for s, v in zip(seeds, accs)},
                    "top1_mean": statistics.mean(accs),
                    "top1_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                }
            )
    return rows


def present(res: dict, budget: int) -> list[str]:
    return [m for m in METHODS if all(m in res["seeds"][s].get(str(budget), {}) for s in res["seeds"])]


def pm(r: dict) -> str:
    return f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f}"


def write_outputs(res: dict) -> None:
    import pandas as pd

    name = res.get("testbed", "digits")
    bed = TESTBEDS[name]
    seeds = list(res["seeds"])
    budgets = [b for b in res["budgets"] if all(str(b) in res["seeds"][s] for s in seeds)]
    all_rows = [r for b in budgets for r in table(res, b)]
    pd.DataFrame(all_rows).to_csv(RESULTS / f"{bed['stem']}.csv", index=False)
    first = res["seeds"][seeds[0]][str(budgets[0])]["pool"]
    steps = first.get("joint_steps", first["steps"])  # a unit's steps include the distillation
    lines = [
        f"# Learngene Pool against SN-Net, vanilla learngene and scratch: the {name}",
        "",
        f"`{res['command'].strip()}` on {res['machine']}; seeds {', '.join(seeds)}"
        + (f"; {res['total_s'] / 60:.0f} min in all." if "total_s" in res else ".")
        + "".join(f" The 'E epochs each' rows: `{c}`." for c in res.get("each_commands", []))
        + (f" The slope (with today's cached ancestor): `{res['slope_command']}`." if "slope_command" in res else ""),
        "",
        f"Testbed `{name}`: {bed['about']}. Accuracy: test top1, mean ± std over seeds. "
        "At a budget of E epochs every method spends the same optimizer steps on training its members "
        f"(the pool's joint run: E epochs x {steps // budgets[0]} batches): the pool and SN-Net jointly, one "
        f"sampled member "
        "per step; vanilla learngene 1/6 of them per member, scratch 1/18 per member. "
        "Distillation (pool) and the narrow anchor (SN-Net) are stages before that, timed below. "
        "Latency: batch size 1, median, this CPU, 2 threads.",
        "",
    ]
    lines += slope_section(res, budgets)
    for b in budgets:
        lines += summary_section(res, b)
    lines += overview(KEPT)
    lines += [
        "## Reading",
        "",
        "- SN-Net's smaller members start from a narrow anchor trained from scratch (its `narrow` row is that anchor "
        "after joint training); the pool's from auxiliary models distilled from the ancestor. With the same member "
        "training, SN-Net's spread over seeds follows its anchor's.",
        "- Vanilla learngene and scratch train every member alone: at the same total steps each gets a small share. "
        "The 'E epochs each' rows give every member alone the E epochs the pool shares among all its descendants.",
        "- Wall times are medians over seeds on a shared 2-core machine; they vary by tens of percent between runs.",
        "",
        f"![accuracy against params and latency]({bed['stem']}.png)",
        "",
    ]
    (RESULTS / f"{bed['stem']}.md").write_text("\n".join(lines))
    plot(all_rows, budgets, RESULTS / f"{bed['stem']}.png", res)
    print("\n".join(lines))


def headline(res: dict, budget: int) -> dict:
    """One run at one budget in a few numbers: the means, and where the pool is at least as
    accurate as each SN-Net's best member no larger (at sizes where SN-Net has one)."""
    rows = table(res, budget)
    by = {m: [r for r in rows if r["method"] == m] for m in present(res, budget)}
    out = {m: statistics.mean(r["top1_mean"] for r in rs) for m, rs in by.items()}
    for m in [m for m in by if m.startswith("snnet")]:
        pairs = [(r, [x for x in by[m] if x["params"] <= r["params"]]) for r in by["pool"]]
        pairs = [(r, fits) for r, fits in pairs if fits]
        out[f"{m} sizes"] = (
            f"{sum(r['top1_mean'] >= max(x['top1_mean'] for x in fits) for r, fits in pairs)}/{len(pairs)}"
        )
    return out


def overview(results: Path) -> list[str]:
    """Every run of this benchmark kept under results/ (both testbeds), a line per budget."""
    lines = [
        "## Both testbeds: every run kept in benchmarks/results",
        "",
        "Pool at least as accurate as SN-Net: the pool descendants, among those at least as large as SN-Net's "
        "smallest member, for which SN-Net's best member no larger is not more accurate.",
        "",
        "| results | testbed | budget | ancestor | narrow alone | pool | SN-Net (a) | SN-Net (b) | SN-Net (c) | "
        "pool >= (a) | pool >= (b) | pool >= (c) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in sorted(results.glob("methods*.json")) + sorted(results.glob("*/methods*.json")):
        res = json.loads(f.read_text())
        seeds = list(res["seeds"])
        alone = [res["seeds"][s]["narrow_alone"] for s in seeds if "narrow_alone" in res["seeds"][s]]
        for b in [b for b in res["budgets"] if all(str(b) in res["seeds"][s] for s in seeds)]:
            h = headline(res, b)

            def cell(m, h=h):
                return f"{h[m]:.2f}" if m in h else "-"

            md = f.with_suffix(".md")
            lines.append(
                f"| [{md.relative_to(results)}]({os.path.relpath(md, RESULTS)}) | "
                f"{res.get('testbed', 'digits')} | {b} | {res.get('ancestor', {}).get('test_top1', '-')} | "
                f"{f'{statistics.mean(alone):.2f}' if alone else '-'} | {cell('pool')} | {cell('snnet-plateau')} | "
                f"{cell('snnet-distilled')} | {cell('snnet')} | {h.get('snnet-plateau sizes', '-')} | "
                f"{h.get('snnet-distilled sizes', '-')} | {h.get('snnet sizes', '-')} |"
            )
    return lines + [
        "",
        "Ancestor: test top1 of the embedded ancestor the run used (not recorded by runs before the "
        "animals testbed; the earliest digits run's stack gave 96.7, today's 94.9). Narrow alone: the pool "
        "recipe's narrow auxiliary architecture from scratch with the ancestor's recipe, mean over seeds.",
        "",
    ]


def slope_section(res: dict, budgets: list[int]) -> list[str]:
    """Does size buy accuracy here: the ancestor against the narrow auxiliary architecture
    trained alone, and the spread of the pool's descendants."""
    seeds = list(res["seeds"])
    alone = [res["seeds"][s]["narrow_alone"] for s in seeds if "narrow_alone" in res["seeds"][s]]
    if not alone or "ancestor" not in res:
        return []
    anc = res["ancestor"]["test_top1"]
    out = [
        "## Slope: does size buy accuracy",
        "",
        f"- The ancestor ({(res['ancestor'].get('params') or 0) / 1e6:.2f}M params, the embedded recipe, "
        f"{res['ancestor'].get('epochs', 30)} epochs, seed 0): "
        f"**{anc:.2f}**; the pool recipe's narrow auxiliary architecture trained alone from scratch with the same "
        f"recipe: **{statistics.mean(alone):.2f} ± {(statistics.stdev(alone) if len(alone) > 1 else 0):.2f}** "
        f"(seeds {', '.join(seeds)}): **{anc - statistics.mean(alone):+.2f} points** for the ancestor.",
    ]
    for b in budgets:
        pool = [r for r in table(res, b) if r["method"] == "pool"]
        lo, hi = min(pool, key=lambda r: r["top1_mean"]), max(pool, key=lambda r: r["top1_mean"])
        out.append(
            f"- The pool's {len(pool)} descendants after {b} epochs span **{hi['top1_mean'] - lo['top1_mean']:.2f} "
            f"points**: {lo['id']} {pm(lo)} ({lo['params'] / 1e6:.3f}M) to {hi['id']} {pm(hi)} "
            f"({hi['params'] / 1e6:.3f}M)."
        )
    return out + [""]


def summary_section(res: dict, budget: int) -> list[str]:
    seeds = list(res["seeds"])
    rows = table(res, budget)
    methods = present(res, budget)
    by = {m: sorted((r for r in rows if r["method"] == m), key=lambda r: r["params"]) for m in methods}
    out = [
        f"## Budget: {budget} epochs of member training",
        "",
        "| method | members | params (M) | mean top1 | worst member | stored params (M) | steps | training "
        "FLOPs | wall per stage (s, median over seeds) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        recs = [res["seeds"][s][str(budget)][m] for s in seeds]
        seed_means = [statistics.mean(r["test_top1"] for r in rec["rows"]) for rec in recs]
        stages = "; ".join(
            f"{k} {statistics.median(rec['seconds'][k] for rec in recs):.0f}" for k in recs[0]["seconds"]
        )
        worst = min(by[m], key=lambda r: r["top1_mean"])
        sd = statistics.stdev(seed_means) if len(seed_means) > 1 else 0.0
        have = all("train_flops" in r for r in recs)
        flops = f"{statistics.median(r['train_flops'] for r in recs):.3g}" if have else "-"
        out.append(
            f"| {LABEL[m].replace('E epochs', f'{budget} epochs')} | {len(by[m])} | "
            f"{by[m][0]['params'] / 1e6:.2f}-{by[m][-1]['params'] / 1e6:.2f} | "
            f"{statistics.mean(seed_means):.2f} ± {sd:.2f} | {worst['id']} {pm(worst)} | "
            f"{recs[0]['stored_params'] / 1e6:.2f} | {recs[0]['steps']} | "
            f"{flops} | {stages} |"
        )
    sns = [m for m in methods if m in ALTERNATIVES]
    for pool_method in [m for m in POOLS if m in by]:
        out += in_short(res, budget, pool_method, by, sns)
    for pool_method in [m for m in POOLS if m in by]:
        out += versus(res, budget, pool_method, by, sns)
    for m in [m for m in (*sns, "vanilla", "vanilla-each") if m in by]:
        out += [
            f"<details><summary>{LABEL[m].replace('E epochs', f'{budget} epochs')} members</summary>",
            "",
            "| member | params (M) | latency ms | test top1 |",
            "|---|---|---|---|",
        ]
        for r in by[m]:
            lat = f"{r['latency_ms']:.3f}" if r.get("latency_ms") is not None else "-"
            out.append(f"| {r['id']} | {r['params'] / 1e6:.3f} | {lat} | {pm(r)} |")
        out += ["", "</details>", ""]
    return out


def in_short(res: dict, budget: int, P: str, by: dict, sns: list[str]) -> list[str]:
    """README's table: per pool descendant with an alternative no larger, the best such member
    of any alternative, which method gave it, and each method's training FLOPs."""
    if not sns:
        return []
    seeds = list(res["seeds"])
    flops = {
        m: statistics.median(res["seeds"][s][str(budget)][m].get("train_flops", float("nan")) for s in seeds)
        for m in (P, *sns)
    }
    short = {m: SHORT.get(m, LABEL[m].split(",")[0]) for m in sns}
    out = [
        "",
        f"### In short: {LABEL[P]}",
        "",
        f"Training FLOPs: pool {flops[P]:.3g}; " + ", ".join(f"{short[m]} {flops[m]:.3g}" for m in sns) + ".",
        "",
        "| size (pool descendant) | params (M) | pool | best alternative no larger (member) | which | "
        "its FLOPs / the pool's | pool - best |",
        "|---|---|---|---|---|---|---|",
    ]
    ok = n = 0
    for r in by[P]:
        refs = [(x, m) for m in sns for x in by[m] if x["params"] <= r["params"]]
        if not refs:
            continue
        best, who = max(refs, key=lambda t: t[0]["top1_mean"])
        n += 1
        ok += r["top1_mean"] >= best["top1_mean"]
        out.append(
            f"| {r['id']} | {r['params'] / 1e6:.3f} | {pm(r)} | {pm(best)} ({best['id']}) | {short[who]} | "
            f"{flops[who] / flops[P]:.2f} | {r['top1_mean'] - best['top1_mean']:+.2f} |"
        )
    out += ["", f"Pool at least as accurate as the best alternative no larger: **{ok}/{n}** sizes.", ""]
    return out + by_budget(P, by, sns, short, flops)


def by_budget(P: str, by: dict, sns: list[str], short: dict, flops: dict) -> list[str]:
    """The same sizes as budgets: at each, the most accurate member no larger on both sides
    (what a user holding that many parameters would pick from either zoo). The table above
    holds the pool to each of its members and the alternatives to their best; a pool member
    that loses to a smaller member of its own pool is never the pool's pick at any budget."""
    out = [
        "By size budget (each side's most accurate member no larger than the size):",
        "",
        "| budget (params, M) | pool's pick | alternatives' pick | which | its FLOPs / the pool's | pool - best |",
        "|---|---|---|---|---|---|",
    ]
    ok = n = 0
    for r in by[P]:
        refs = [(x, m) for m in sns for x in by[m] if x["params"] <= r["params"]]
        if not refs:
            continue
        mine = max((x for x in by[P] if x["params"] <= r["params"]), key=lambda x: x["top1_mean"])
        best, who = max(refs, key=lambda t: t[0]["top1_mean"])
        n += 1
        ok += mine["top1_mean"] >= best["top1_mean"]
        out.append(
            f"| {r['params'] / 1e6:.3f} | {pm(mine)} ({mine['id']}) | {pm(best)} ({best['id']}) | {short[who]} | "
            f"{flops[who] / flops[P]:.2f} | {mine['top1_mean'] - best['top1_mean']:+.2f} |"
        )
    out += ["", f"Pool's pick at least as accurate as the alternatives' at **{ok}/{n}** budgets.", ""]
    return out


def versus(res: dict, budget: int, P: str, by: dict, sns: list[str]) -> list[str]:
    """A pool method P (the pool, or a variant of its recipe) against scratch (the same
    architectures) and each alternative at or below each descendant's size."""
    seeds = list(res["seeds"])
    if not sns:  # a partial run: the method table is all there is yet
        return [""]
    out = ["", f"### {LABEL[P]} against the alternatives"]
    snn = [m for m in sns if m.startswith("snnet")] or sns  # SN-Net's anchor sets "below the anchor"
    sc = {r["id"]: r for r in by.get("scratch", [])}
    each = {r["id"]: r for r in by.get("scratch-each", [])}
    smallest = by[snn[0]][0]
    anchor_params = next((r for r in by[snn[0]] if r["id"] == "narrow"), by[snn[0]][0])["params"]
    short = {m: SHORT.get(m, LABEL[m].split(",")[0]) for m in sns}  # "SN-Net (a)"
    first = res["seeds"][seeds[0]][str(budget)]
    out += [
        "",
        f"Per pool descendant: scratch is the same architecture; an SN-Net column is that SN-Net's most accurate "
        f"member no larger than the descendant, or, below SN-Net's smallest member ({smallest['id']}, "
        f"{smallest['params'] / 1e6:.3f}M), that member (larger than the descendant). SN-Net's narrow anchor has "
        f"{anchor_params / 1e6:.3f}M params; storage pool / SN-Net: "
        f"{first[P]['stored_params'] / first[sns[0]]['stored_params']:.2f}.",
        "",
        "| pool descendant | params (M) | latency ms | pool | scratch | "
        + " | ".join(f"{short[m]} (member) | pool - {short[m]}" for m in sns)
        + " |"
        + (f" scratch, {budget} epochs each |" if each else ""),
        "|---|---|---|---|---|" + "---|---|" * len(sns) + ("---|" if each else ""),
    ]
    above_each, above_scratch = 0, 0
    below, overlap = (
        sum(r["params"] < anchor_params for r in by[P]),
        sum(r["params"] >= anchor_params for r in by[P]),
    )
    below_ok, overlap_ok, fit_ok = dict.fromkeys(sns, 0), dict.fromkeys(sns, 0), dict.fromkeys(sns, 0)
    fit_of = {m: sum(r["params"] >= by[m][0]["params"] for r in by[P]) for m in sns}
    best_ok, best_n, best_by = 0, 0, {}
    for r in by[P]:
        refs = []
        for m in sns:
            fits = [x for x in by[m] if x["params"] <= r["params"]]
            if fits:
                refs.append((max(fits, key=lambda x: x["top1_mean"]), m))
        if refs:
            best, who = max(refs, key=lambda t: t[0]["top1_mean"])
            best_n += 1
            best_ok += r["top1_mean"] >= best["top1_mean"]
            best_by[r["id"]] = (best, who)
        above_scratch += r["id"] in sc and r["top1_mean"] > sc[r["id"]]["top1_mean"]
        above_each += r["id"] in each and r["top1_mean"] > each[r["id"]]["top1_mean"]
        cells = []
        for m in sns:
            fits = [x for x in by[m] if x["params"] <= r["params"]]
            ref = max(fits, key=lambda x: x["top1_mean"]) if fits else by[m][0]
            d = r["top1_mean"] - ref["top1_mean"]
            (below_ok if r["params"] < anchor_params else overlap_ok)[m] += d >= 0
            fit_ok[m] += bool(fits) and d >= 0
            cells.append(f"{pm(ref)} ({ref['id']}) | {d:+.2f}")
        lat = f"{r['latency_ms']:.3f}" if r.get("latency_ms") is not None else "-"
        out.append(
            f"| {r['id']} | {r['params'] / 1e6:.3f} | {lat} | {pm(r)} | {pm(sc[r['id']]) if r['id'] in sc else '-'} | "
            + " | ".join(cells)
            + " |"
            + (f" {pm(each[r['id']]) if r['id'] in each else '-'} |" if each else "")
        )
    n = len(by[P])
    out += ["", f"- Pool above scratch (same architecture, same steps): **{above_scratch}/{n}** descendants."]
    if best_n:
        out.append(
            f"- **Pool at least as accurate as the best alternative** (the most accurate member no larger of any of "
            f"{', '.join(short[m] for m in sns)}): **{best_ok}/{best_n}** descendants (those with an "
            f"alternative no larger)."
        )
    for m in sns:
        rec = res["seeds"][seeds[0]][str(budget)][m].get("anchor")
        how = f" (anchor: {', '.join(f'{k} {v}' for k, v in rec.items())}, seed {seeds[0]})" if rec else ""
        out.append(
            f"- Against {LABEL[m]}{how}: pool at least as accurate below the anchor's size in "
            f"**{below_ok[m]}/{below}** descendants, from the anchor's size up (its best member no larger) in "
            f"**{overlap_ok[m]}/{overlap}**; at the sizes where {short[m]} has a member no larger "
            f"(>= {by[m][0]['params'] / 1e6:.3f}M) in **{fit_ok[m]}/{fit_of[m]}**"
            + (" (where it is not, the pool loses: see the table)." if fit_ok[m] < fit_of[m] else ".")
        )
    if each:
        out.append(
            f"- Pool above scratch with {budget} epochs per architecture ({len(each)}x the pool's steps in all): "
            f"**{above_each}/{n}**."
        )
    return out + [""]


def plot(rows: list[dict], budgets: list[int], path: Path, res: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    colors = {
        "pool": "tab:blue",
        "pool-pruned": "navy",
        "pool-pruned-60": "tab:purple",
        "snnet": "tab:orange",
        "snnet-plateau": "tab:red",
        "snnet-distilled": "tab:purple",
        "vanilla": "tab:green",
        "scratch": "tab:gray",
        "vanilla-each": "tab:olive",
        "scratch-each": "black",
        "kd": "tab:cyan",
        "prune-kd": "tab:brown",
        "kd-plateau": "tab:pink",
    }
    fig, axes = plt.subplots(len(budgets), 2, figsize=(12, 4.6 * len(budgets)), squeeze=False)
    for i, b in enumerate(budgets):
        for j, (x, xl) in enumerate((("params", "params (M)"), ("latency_ms", "latency, batch 1 (ms)"))):
            ax = axes[i][j]
            for m in METHODS:
                rs = [r for r in rows if r["budget_epochs"] == b and r["method"] == m and r.get(x) is not None]
                if not rs:
                    continue
                xs = [r[x] / (1e6 if x == "params" else 1) for r in rs]
                ax.errorbar(
                    xs,
                    [r["top1_mean"] for r in rs],
                    yerr=[r["top1_std"] for r in rs],
                    fmt="o",
                    ms=4,
                    capsize=2,
                    color=colors[m],
                    label=LABEL[m].replace("E epochs", f"{b} epochs"),
                    alpha=0.85,
                )
            if x == "params" and res and (res.get("ancestor") or {}).get("params"):  # the slope's two ends
                ax.plot(
                    [res["ancestor"]["params"] / 1e6], [res["ancestor"]["test_top1"]], "k*", ms=11, label="ancestor"
                )
                alone = [res["seeds"][s].get("narrow_alone") for s in res["seeds"]]
                narrow = [r for r in rows if r["method"] == "pool" and r["id"] == "narrow"]
                if all(v is not None for v in alone) and narrow:
                    ax.plot(
                        [narrow[0]["params"] / 1e6],
                        [statistics.mean(alone)],
                        "kx",
                        ms=9,
                        label="narrow auxiliary alone, from scratch",
                    )
            ax.set_xscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.3, not 3x10^-1 (which overlaps)
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
            ax.tick_params(axis="x", which="minor", labelsize=7)
            ax.set_xlabel(xl)
            ax.set_ylabel("test top1 (%)")
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3, which="both")
            ax.set_title(
                f"{(res or {}).get('testbed', 'digits')}, {b} epochs of member training: top1 against {x.split('_')[0]}"
            )
            ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
