"""The comparison of methods as resumable units (testbed, method, budget, seed): each unit
trains one method's zoo at one budget and seed, and its record is appended to
``benchmarks/results/units_<testbed>.jsonl`` the moment it finishes. A rerun skips the units
already there; what several units share (a seed's distilled pool, its SN-Net anchors) is
built once and kept under ``$LEARNGENE_HOME/compare/<testbed>/``, so a run cut off by the end
of a session continues where it stopped. Used by compare_methods.py (``--units``, ``--status``).

Every unit records its training compute in FLOPs (torch.utils.flop_counter on one training
step of each model it trains, times its steps, the teacher's forward included where there is
one), its wall time per stage and its stored parameters.

Methods (a budget is E epochs of member training, the pool's joint run):
- pool: the seed's distilled pool (build-pool from the testbed's plateau ancestor), then
  ``assemble --all`` for E epochs; compute: the distillation plus the joint steps;
- a testbed's ``joint_variants`` (e.g. pool-pruned-60-deficit): a pool method's cached pool
  assembled with other joint-training settings (``--sampling deficit``): the change measured
  on the same instances, at the cost of the assemble alone;
- pool-pruned (a testbed's ``variants``): the same with the variant's recipe, whose narrow
  auxiliary starts from the ancestor pruned to its width and distils until validation stops
  improving (``init: pruned``, ``epochs: auto``);
- snnet-plateau / snnet-distilled: SN-Net with the narrow anchor trained from scratch to its
  plateau (a: ancestor.py's, kept under results/anchors, where there is one for the seed) or
  distilled like the pool's narrow auxiliary (b), stitched to the ancestor and trained jointly
  for E epochs (assemble's recipe);
- kd / prune-kd: one model per size (`learngene.baselines.per_size`), from random init or the
  ancestor pruned by Torch-Pruning, distilled from the ancestor; a pool method's total steps
  (distillation and joint) shared equally among the sizes: the plain pool's, or those of the
  testbed's ``per_size_steps`` (the pool method it is compared with at equal steps), recorded
  as ``steps_of``;
- kd-plateau (budget "plateau"): the same students, each until its validation stops improving;
- scratch: every pool descendant architecture from random init, the joint steps shared.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

UNIT_METHODS = ("pool", "snnet-plateau", "snnet-distilled", "kd", "prune-kd", "scratch")
PLATEAU_METHODS = ("kd-plateau",)  # budget-free: trained until validation stops improving
SIZES = 4  # per-size baselines: students at this many of the pool's sizes, smallest to largest
# a first guess of a unit's seconds on 2 cores, per method and budget epoch (from the digits
# and animals runs); replaced by the median of finished units of the same method
GUESS_S = {
    "pool": 60,
    "pool-pruned": 120,
    "pool-pruned-60": 50,
    "snnet-plateau": 40,
    "snnet-distilled": 40,
    "kd": 40,
    "prune-kd": 40,
    "scratch": 20,
}
GUESS_PLATEAU_S = 4 * 1800
SHIPPED_ANCHORS = Path(__file__).parent / "results" / "anchors"  # ancestor.py's narrow models at their plateau


def log(msg: str) -> None:
    import sys

    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def units_file(results: Path, testbed: str) -> Path:
    return results / f"units_{testbed}.jsonl"


def done(results: Path, testbed: str) -> list[dict]:
    f = units_file(results, testbed)
    if not f.is_file():
        return []
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def plan(seeds: list[int], budgets: list[int], methods=UNIT_METHODS, plateau=PLATEAU_METHODS) -> list[tuple]:
    """Every unit, seed by seed (a seed's units share its pool and anchors)."""
    out = []
    for s in seeds:
        out += [(m, b, s) for b in budgets for m in methods]
        out += [(m, "plateau", s) for m in plateau]
    return out


def key(u: dict | tuple) -> tuple:
    return (u["method"], str(u["budget"]), u["seed"]) if isinstance(u, dict) else (u[0], str(u[1]), u[2])


def status(results: Path, testbed: str, todo: list[tuple]) -> str:
    """What is done and what is left, with an estimate of the time left."""
    have = done(results, testbed)
    finished = {key(u) for u in have}
    left = [u for u in todo if key(u) not in finished]
    per = {}
    for u in have:
        b = 1 if u["budget"] == "plateau" else int(u["budget"])
        per.setdefault(u["method"], []).append(u["wall_s"] / b if u["budget"] != "plateau" else u["wall_s"])

    def guess(m, b):
        if m in per:
            return statistics.median(per[m]) * (1 if b == "plateau" else int(b))
        return GUESS_PLATEAU_S if b == "plateau" else GUESS_S.get(m, 60) * int(b)

    eta = sum(guess(m, b) for m, b, _ in left)
    lines = [f"{testbed}: {len(todo) - len(left)} of {len(todo)} units done, {len(left)} left, ~{eta / 3600:.1f} h"]
    lines += [f"  done  {m} budget {b} seed {s}" for m, b, s in todo if (m, str(b), s) in finished]
    lines += [f"  left  {m} budget {b} seed {s} (~{guess(m, b) / 60:.0f} min)" for m, b, s in left]
    return "\n".join(lines)


# -- what units share --------------------------------------------------------------------------


def cache(testbed: str) -> Path:
    from learngene.core.io import home

    d = home() / "compare" / testbed
    d.mkdir(parents=True, exist_ok=True)
    return d


def step_flops(model, teacher, dm) -> int:
    from learngene.baselines.one_per_size import train_flops

    return train_flops(model, teacher, next(iter(dm.train_dataloader()))[0])


def distilled_pool(bed: dict, seed: int, ancestor, dm, pre_epochs, quiet, method: str = "pool"):
    """The seed's distilled pool (``method``: pool or one of the testbed's variants), built once
    (resumable) and kept; with its cost."""
    from learngene.pool import Pool, build_pool

    recipe = bed.get("variants", {}).get(method, bed["recipe"])
    folder = cache(bed["name"]) / f"{method}-s{seed}"
    meta = folder.parent / f"{method}-s{seed}.cost.json"
    if not meta.is_file():
        t0 = time.perf_counter()
        pool = build_pool(
            recipe,
            out=folder,
            ancestor=ancestor,
            data=dm,
            overrides=[f"distill.seed={seed}"],
            epochs=pre_epochs,
            resume=folder.exists(),  # an interrupted build continues
            trainer_args=quiet(),
        )
        wall = time.perf_counter() - t0
        steps, flops = 0, 0
        import timm

        for aux in pool.auxiliary.values():
            model = timm.create_model(aux["architecture"], **aux["model_args"])
            n = aux["metrics"]["steps"]
            steps += n
            flops += n * step_flops(model, ancestor.model, dm)
        meta.write_text(json.dumps({"wall_s": wall, "steps": steps, "train_flops": flops}))
    return Pool.open(folder), json.loads(meta.read_text())


def anchor(bed: dict, how: str, seed: int, ancestor, dm, pre_epochs, quiet):
    """SN-Net's narrow anchor made ``how`` for this seed, made once and kept; with its cost."""
    from safetensors.torch import load_file, save_file

    from learngene.baselines import make_anchor

    d = cache(bed["name"])
    wfile, meta = d / f"anchor-{how}-s{seed}.safetensors", d / f"anchor-{how}-s{seed}.json"
    import timm

    shipped = SHIPPED_ANCHORS / f"{bed['name']}-narrow-s{seed}"
    if how == "plateau" and (shipped / "config.json").is_file():
        # the same architecture trained alone to its plateau by ancestor.py (the slope's low end),
        # kept under results/anchors: its steps and wall time are the ones it took there
        model = timm.create_model(f"local-dir:{shipped}", pretrained=True)
        info = json.loads((shipped / "config.json").read_text())
        t = info["learngene"]["training"]
        args = {k: v for k, v in info["model_args"].items()}
        record = {"epochs": t["epochs_run"], "best_epoch": t["best_epoch"], "val_top1": round(t["best_val"], 2),
                  "from": f"benchmarks/results/anchors/{shipped.name}"}  # fmt: skip
        cost = {"args": args, "record": record, "wall_s": info["learngene"]["metrics"]["train_seconds"],
                "steps": t["steps"], "train_flops": t["steps"] * step_flops(model, None, dm)}  # fmt: skip
        return (model.eval(), args), cost
    if not meta.is_file():
        t0 = time.perf_counter()
        model, args, record = make_anchor(
            how, ancestor.model, dm, seed=seed, trainer_args=quiet(), epochs=pre_epochs, recipe=bed["recipe"]
        )
        wall = time.perf_counter() - t0
        steps = record["epochs"] * len(dm.train_dataloader())
        teacher = ancestor.model if how == "distilled" else None
        save_file(model.state_dict(), wfile)
        flops = steps * step_flops(model, teacher, dm)
        meta.write_text(
            json.dumps({"args": args, "record": record, "wall_s": wall, "steps": steps, "train_flops": flops})
        )
    m = json.loads(meta.read_text())
    model = timm.create_model("deit_tiny_patch16_224", **m["args"])
    model.load_state_dict(load_file(wfile))
    return (model.eval(), m["args"]), m


def per_size_widths(pool, ancestor) -> list[int]:
    """Student widths at SIZES of the pool's descendant sizes, smallest to largest."""
    from learngene.baselines import width_for
    from learngene.zoo import pool_zoo

    sizes = sorted(m.params for m in pool_zoo(pool, "r0", pm=pool.model("r0")[0], static=True))
    picks = [sizes[round(i * (len(sizes) - 1) / (SIZES - 1))] for i in range(SIZES)]
    return sorted({width_for(ancestor.model, p) for p in picks})


def joint_flops(zoo, ancestor, dm, kl: bool) -> int:
    """One joint step trains one sampled member (with the ancestor's forward for the KL term):
    the mean over members of a step's FLOPs."""
    per = [step_flops(m.model(), ancestor.model if kl else None, dm) for m in zoo]
    return int(statistics.mean(per))


# -- one unit ----------------------------------------------------------------------------------


def run_unit(bed: dict, method: str, budget, seed: int, pre_epochs=None, quiet=None) -> dict:
    from learngene.assembly import AssembleSpec, assemble
    from learngene.baselines import per_size, scratch, snnet
    from learngene.core.data import LearngeneDataModule
    from learngene.models.refs import load_model
    from learngene.pool import Pool
    from learngene.zoo import pool_zoo

    ancestor = load_model(bed["ancestor"], progress=False)
    dm = LearngeneDataModule(bed["data"], batch_size=64, seed=seed)
    t0 = time.perf_counter()
    pool, pool_cost = distilled_pool(bed, seed, ancestor, dm, pre_epochs, quiet)
    spec = AssembleSpec(seed=seed, epochs=budget) if budget != "plateau" else None
    kl = spec is not None and spec.kl_weight > 0
    stages, flops, steps, stored, extra = {}, 0, 0, 0, {}
    joint = bed.get("joint_variants", {}).get(method)  # (pool method, AssembleSpec fields)
    if method == "pool" or method in bed.get("variants", {}) or joint:
        import dataclasses
        import tempfile

        base = joint[0] if joint else method
        if base != "pool":
            pool, pool_cost = distilled_pool(bed, seed, ancestor, dm, pre_epochs, quiet, base)
        if joint and spec is not None:
            spec = dataclasses.replace(spec, **joint[1])
        with tempfile.TemporaryDirectory() as tmp:
            p = pool.copy_as_distilled(Path(tmp) / "pool").path
            t1 = time.perf_counter()
            res = assemble(p, train="all", spec=spec, data=dm, trainer_args=quiet(), progress=lambda m: None)
            zoo = pool_zoo(Pool.open(p), static=True)
            stages = {"build-pool": pool_cost["wall_s"], "assemble --all": time.perf_counter() - t1}
            steps = pool_cost["steps"] + res.trained["steps"]
            flops = pool_cost["train_flops"] + res.trained["steps"] * joint_flops(zoo, ancestor, dm, kl)
            rows, stored = zoo.rows, zoo.stored_params
            extra = {"distill_steps": pool_cost["steps"], "joint_steps": res.trained["steps"]}
    elif method.startswith("snnet-"):
        how = method.removeprefix("snnet-")
        made, cost = anchor(bed, how, seed, ancestor, dm, pre_epochs, quiet)
        t1 = time.perf_counter()
        zoo = snnet(ancestor.model, dm, spec=spec, seed=seed, anchor=made, trainer_args=quiet())
        stages = {"anchor": cost["wall_s"], "stitch + joint training": time.perf_counter() - t1}
        steps = cost["steps"] + zoo.steps
        flops = cost["train_flops"] + zoo.steps * joint_flops(zoo, ancestor, dm, kl)
        rows, stored = zoo.rows, zoo.stored_params
        extra = {"anchor": cost["record"], "anchor_steps": cost["steps"], "joint_steps": zoo.steps}
    elif method in ("kd", "prune-kd", "kd-plateau"):
        widths = per_size_widths(pool, ancestor)
        init = "pruned" if method == "prune-kd" else "random"
        t1 = time.perf_counter()
        if method == "kd-plateau":
            cap = pre_epochs or 300  # --pre-epochs: smoke runs only
            zoo = per_size(
                ancestor.model, dm, widths, init=init, epochs="auto", cap=cap, patience=min(30, cap), seed=seed,
                trainer_args=quiet(),
            )  # fmt: skip
        else:
            of = bed.get("per_size_steps", "pool")
            cost = pool_cost if of == "pool" else distilled_pool(bed, seed, ancestor, dm, pre_epochs, quiet, of)[1]
            total = pool_unit_steps(bed, budget, seed, cost, dm)
            extra["steps_of"] = of
            zoo = per_size(
                ancestor.model, dm, widths, init=init, steps=max(1, total // len(widths)), seed=seed,
                trainer_args=quiet(),
            )  # fmt: skip
        stages = {"train": time.perf_counter() - t1}
        rows, steps, flops, stored = zoo.rows, zoo.steps, zoo.train_flops, zoo.stored_params
        extra |= {"widths": widths, "records": zoo.records}
    elif method == "scratch":
        from learngene.baselines.one_per_size import train_flops

        joint = spec.epochs * len(dm.train_dataloader())
        archs = pool_zoo(pool, "r0", pm=pool.model("r0")[0])
        t1 = time.perf_counter()
        zoo = scratch(archs, dm, steps_each=joint // len(archs), seed=seed, trainer_args=quiet())
        stages = {"train": time.perf_counter() - t1}
        batch = next(iter(dm.train_dataloader()))[0]
        flops = sum(joint // len(archs) * train_flops(m.model(), None, batch) for m in zoo)
        rows, steps, stored = zoo.rows, zoo.steps, zoo.stored_params
    else:
        raise ValueError(f"unknown method {method}")
    return {
        "testbed": bed["name"],
        "method": method,
        "budget": budget,
        "seed": seed,
        "rows": rows,
        "seconds": stages,
        "wall_s": time.perf_counter() - t0,
        "steps": steps,
        "train_flops": flops,
        "stored_params": stored,
        "threads": torch.get_num_threads(),
        **extra,
    }


def pool_unit_steps(bed: dict, budget, seed: int, pool_cost: dict, dm) -> int:
    """The pool's total steps at this budget: its distillation and E joint epochs."""
    return pool_cost["steps"] + int(budget) * len(dm.train_dataloader())


def run(bed: dict, todo: list[tuple], results: Path, pre_epochs=None, quiet=None) -> None:
    finished = {key(u) for u in done(results, bed["name"])}
    for m, b, s in todo:
        if (m, str(b), s) in finished:
            continue
        log(f"{bed['name']}: unit {m} budget {b} seed {s}")
        rec = run_unit(bed, m, b, s, pre_epochs, quiet)
        with units_file(results, bed["name"]).open("a") as f:  # appended at once: a stop keeps it
            f.write(json.dumps(rec) + "\n")
        mean = statistics.mean(r["test_top1"] for r in rec["rows"])
        log(f"{bed['name']}: {m} budget {b} seed {s}: mean top1 {mean:.2f}, {rec['wall_s']:.0f} s, "
            f"{rec['train_flops']:.3g} FLOPs")  # fmt: skip
