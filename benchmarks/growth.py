"""Growth against training from scratch, on the embedded default.

Per seed: a small ViT (half the embedded ancestor's width and depth: 64 wide, 2 heads of 32,
6 blocks) is trained on the digits with the ancestor's recipe, then grown to the ancestor's
architecture (128 wide, 4 heads of 32, 12 blocks, MLP 512) by each method and trained again
with the same recipe; the same architecture is also trained from scratch. Test (and
validation) accuracy is read every --every steps. Reported: the optimizer steps each needs to
first reach scratch's final test accuracy (LiGO's operator steps counted), as a fraction of
the steps scratch itself needs to first reach it.

A grown model starts near its small model's accuracy, and the recipe's peak learning rate
(1e-3, tuned for random init) first knocks it down. --lrs gives peak learning rates to try
for the grown models: on the first seed every method runs at each, and the one whose
validation curve first reaches scratch's final validation accuracy is kept for the other
seeds (picked on validation, never on test). Scratch keeps the recipe's.
Writes benchmarks/results/growth.{csv,md} and growth_curves.csv.

    python benchmarks/growth.py [--seeds 0,1,2] [--methods net2net,expand,ligo] [--every 10] [--lrs 1e-3,3e-4]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import pandas as pd
import torch
from common import RESULTS, SMALL, train


def budget_run(
    model, dm, recipe, seed: int, method: str, lr: float, budget: float, total: int, extra: int, target: float
) -> dict:
    """One run whose whole schedule fits in `budget` x scratch's steps, `extra` (LiGO's operator
    steps) included; did its final test accuracy reach scratch's final?"""
    steps = round(budget * total) - extra
    log, wall = train(model, dm, recipe, 10**9, seed, lr=lr, steps=steps)
    r = dict(
        seed=seed,
        method=method,
        budget=budget,
        lr=lr,
        train_steps=steps,
        total_steps=steps + extra,
        final_top1=log[-1][1],
        final_val=log[-1][2],
        target=target,
        reached=log[-1][1] >= target - 1e-9,
        train_seconds=round(wall, 1),
    )
    print(r, flush=True)
    return r


def first_reach(log: list, target: float, column: int = 1) -> int | None:
    """The first step whose accuracy (column 1: test, 2: val) reaches target."""
    return next((p[0] for p in log if p[column] >= target - 1e-9), None)


def main() -> None:
    import timm

    from learngene.core.data import LearngeneDataModule, digits_data_config
    from learngene.core.training import quiet_lightning
    from learngene.growth import methods as api
    from learngene.models.embedded import EMBEDDED_ARCH, EMBEDDED_MODEL_ARGS, EMBEDDED_RECIPE

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="net2net,expand,ligo")
    ap.add_argument("--every", type=int, default=10, help="evaluate test accuracy every N steps")
    ap.add_argument("--ligo-steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (smoke runs)")
    ap.add_argument(
        "--budgets",
        default="0.45,0.7",
        help="also train each model (scratch too) with its whole schedule squeezed into these fractions of "
        "scratch's steps (operator steps counted), and read the final accuracy",
    )
    ap.add_argument(
        "--lrs",
        default=None,
        help="peak learning rates tried for the grown models on the first seed (default: the recipe's)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_lightning()
    recipe = dict(EMBEDDED_RECIPE)
    if args.epochs:
        recipe["epochs"] = args.epochs
    lrs = [float(v) for v in args.lrs.split(",")] if args.lrs else [recipe["lr"]]
    budgets = [float(v) for v in args.budgets.split(",")] if args.budgets else []
    big = dict(EMBEDDED_MODEL_ARGS)
    rows, curves, picked, budget_rows = [], [], {}, []
    for seed in [int(s) for s in args.seeds.split(",")]:
        dm = LearngeneDataModule(None, data_config=digits_data_config(), batch_size=recipe["batch_size"], seed=seed)
        dm.setup("fit")
        torch.manual_seed(seed)
        scratch = timm.create_model(EMBEDDED_ARCH, **big)
        log, wall = train(scratch, dm, recipe, args.every, seed)
        target, val_target = log[-1][1], log[-1][2]
        scratch_steps = first_reach(log, target)
        total = log[-1][0]
        rows.append(
            dict(
                seed=seed,
                method="scratch",
                lr=recipe["lr"],
                init_top1=log[0][1],
                final_top1=target,
                steps=scratch_steps,
                extra_steps=0,
                train_seconds=round(wall, 1),
                grow_seconds=0.0,
                val_steps=first_reach(log, val_target, 2),
                picked=True,
            )
        )
        curves += [dict(seed=seed, method="scratch", lr=recipe["lr"], step=s, top1=a, val_top1=v) for s, a, v in log]
        print(rows[-1], flush=True)
        for b in budgets:
            torch.manual_seed(seed)
            budget_rows.append(
                budget_run(
                    timm.create_model(EMBEDDED_ARCH, **big),
                    dm,
                    recipe,
                    seed,
                    "scratch",
                    recipe["lr"],
                    b,
                    total,
                    0,
                    target,
                )
            )

        torch.manual_seed(seed)
        small = timm.create_model(EMBEDDED_ARCH, **{**big, **SMALL})
        slog, swall = train(small, dm, recipe, 10**9, seed)
        print(f"seed {seed}: small model {slog[-1][1]:.2f}% in {swall:.0f} s", flush=True)
        for method in args.methods.split(","):
            t = api.resolve_target(
                small, method, embed_dim=big["embed_dim"], depth=big["depth"], heads=big["num_heads"], mlp_ratio=4.0
            )
            t0 = time.perf_counter()
            grown = api.grow(small, method, t, dm=dm if method == "ligo" else None, steps=args.ligo_steps, seed=seed)
            gwall = time.perf_counter() - t0
            extra = args.ligo_steps if method == "ligo" else 0
            runs = []
            for lr in [picked[method]] if method in picked else lrs:
                log, wall = train(copy.deepcopy(grown), dm, recipe, args.every, seed, lr=lr)
                reach, vreach = first_reach(log, target), first_reach(log, val_target, 2)
                runs.append(
                    dict(
                        seed=seed,
                        method=method,
                        lr=lr,
                        init_top1=log[0][1],
                        final_top1=log[-1][1],
                        steps=None if reach is None else reach + extra,
                        extra_steps=extra,
                        train_seconds=round(wall, 1),
                        grow_seconds=round(gwall, 1),
                        small_top1=slog[-1][1],
                        val_steps=None if vreach is None else vreach + extra,
                        final_val=log[-1][2],
                    )
                )
                curves += [dict(seed=seed, method=method, lr=lr, step=s + extra, top1=a, val_top1=v) for s, a, v in log]
                print(runs[-1], flush=True)
            # the pick: first to reach scratch's final validation accuracy, then the best final validation
            best = min(runs, key=lambda r: (r["val_steps"] is None, r["val_steps"] or 0, -r["final_val"]))
            best["picked"] = True
            picked.setdefault(method, best["lr"])
            rows += runs
            for b in budgets:
                budget_rows.append(
                    budget_run(copy.deepcopy(grown), dm, recipe, seed, method, picked[method], b, total, extra, target)
                )
        for r in rows:
            if r["seed"] == seed:
                r["scratch_steps"], r["total_steps"] = scratch_steps, total
    df = pd.DataFrame(rows)
    df["picked"] = df.picked.fillna(False).astype(bool)
    df["fraction"] = df.steps / df.scratch_steps
    RESULTS.mkdir(exist_ok=True)
    df.to_csv(RESULTS / "growth.csv", index=False)
    pd.DataFrame(curves).to_csv(RESULTS / "growth_curves.csv", index=False)
    budget_df = pd.DataFrame(budget_rows)
    budget_df.to_csv(RESULTS / "growth_budgets.csv", index=False)
    write_md(df, budget_df, args)


def write_md(df: pd.DataFrame, budget_df: pd.DataFrame, args) -> None:
    from learngene.measure.metrics import device_name

    machine = (
        f"{device_name(torch.device('cpu'))}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    g = df[df.picked].groupby("method", sort=False)
    summary = pd.DataFrame(
        {
            "peak lr": g.lr.first(),
            "init top1 (mean)": g.init_top1.mean().round(2),
            "final top1 (mean)": g.final_top1.mean().round(2),
            "steps to scratch's final (per seed)": g.steps.apply(
                lambda s: ", ".join("never" if pd.isna(v) else str(int(v)) for v in s)
            ),
            "fraction of scratch's steps (median)": g.fraction.median().round(3),
            "fraction (per seed)": g.fraction.apply(lambda s: ", ".join("-" if pd.isna(v) else f"{v:.2f}" for v in s)),
            "grow s (median)": g.grow_seconds.median(),
            "train s (median)": g.train_seconds.median(),
        }
    )
    command = f"python benchmarks/growth.py --seeds {args.seeds} --methods {args.methods} --every {args.every}"
    if args.budgets:
        command += f" --budgets {args.budgets}"
    if args.lrs:
        command += f" --lrs {args.lrs}"
    total = df.total_steps.iloc[0]
    lr_text = (
        "scratch keeps the recipe's peak learning rate 1e-3; each grown model's is picked from the grid below on "
        "the first seed, by validation (the first to reach scratch's final validation accuracy), and kept for the "
        "other seeds."
        if args.lrs
        else "the same peak learning rate 1e-3 for all."
    )
    md = [
        "# Growth: steps to reach scratch's final accuracy",
        "",
        f"`{command}` on {machine}.",
        "",
        f"Small model: width {SMALL['embed_dim']}, {SMALL['num_heads']} heads, {SMALL['depth']} blocks (half "
        f"the embedded "
        "ancestor's width and depth), trained on the digits with the ancestor's recipe; grown to the ancestor's "
        "architecture (128, 4 heads, 12 blocks, MLP 512) and trained with the same recipe as scratch "
        f"({total} steps, AdamW, 10% warm-up + cosine); {lr_text} The small model's own training is not counted. "
        f"LiGO's {args.ligo_steps} operator steps are counted everywhere. Goals: LiGO <= 0.45 of scratch's steps, the "
        "exact methods <= 0.70.",
        "",
        "## 1. First reach, in the full schedule",
        "",
        f"Steps: the first evaluation (every {args.every} steps) at or above scratch's final test top1 of the "
        f"same seed. "
        "Fraction: those steps / the steps scratch itself needs to first reach its final accuracy.",
        "",
        summary.to_markdown(),
        "",
    ]
    if len(budget_df):
        bg = budget_df.groupby(["budget", "method"], sort=False)
        btab = pd.DataFrame(
            {
                "steps (operator + training)": bg.total_steps.first(),
                "reached scratch's final": bg.reached.apply(lambda r: f"{int(r.sum())} of {len(r)} seeds"),
                "final top1 (mean)": bg.final_top1.mean().round(2),
                "final top1 (per seed)": bg.final_top1.apply(lambda v: ", ".join(f"{x:.2f}" for x in v)),
                "train s (median)": bg.train_seconds.median(),
            }
        ).reset_index()
        targets = ", ".join(f"{v:.2f}" for v in df[df.method == "scratch"].final_top1)
        md += [
            "## 2. A shorter budget",
            "",
            "Each model (scratch too) trained again with the whole recipe (warm-up + cosine) squeezed into a "
            "fraction of "
            f"scratch's {total} steps, LiGO's operator steps included; reached: its final test top1 at or above "
            f"scratch's full-schedule final of the same seed ({targets}). This is how a user would spend a smaller "
            "budget, and it reads the goals directly: LiGO at 0.45, the exact methods at 0.70.",
            "",
            btab.to_markdown(index=False),
            "",
        ]
    if args.lrs:
        first = df[df.seed == df.seed.iloc[0]]
        grid = first[first.method != "scratch"][
            ["method", "lr", "init_top1", "final_top1", "final_val", "val_steps", "steps", "picked"]
        ]
        md += [
            f"The learning-rate grid on seed {df.seed.iloc[0]} (val_steps: steps to scratch's final validation "
            "accuracy, which made the pick; steps: to its final test accuracy):",
            "",
            grid.to_markdown(index=False),
            "",
        ]
    md += [
        "Per run (full schedule):",
        "",
        df.to_markdown(index=False),
        "",
        "Per run (budgets): [growth_budgets.csv](growth_budgets.csv); curves: [growth_curves.csv](growth_curves.csv).",
    ]
    (RESULTS / "growth.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
