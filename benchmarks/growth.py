"""Growth against training from scratch, on the embedded default.

Per seed: a small ViT (half the embedded ancestor's width and depth: 64 wide, 2 heads of 32,
6 blocks) is trained on the digits with the ancestor's recipe, then grown to the ancestor's
architecture (128 wide, 4 heads of 32, 12 blocks, MLP 512) by each method and trained again
with the same recipe; the same architecture is also trained from scratch. Test accuracy is
read every --every steps. Reported: the optimizer steps each needs to first reach scratch's
final test accuracy (LiGO's operator steps counted), as a fraction of the steps scratch
itself needs to first reach it. Writes benchmarks/results/growth.{csv,md}.

    python benchmarks/growth.py [--seeds 0,1,2] [--methods net2net,expand,ligo] [--every 10]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd
import torch

RESULTS = Path(__file__).parent / "results"
SMALL = dict(embed_dim=64, depth=6, num_heads=2)


def curve_callback(model, loader, every: int, log: list):
    import lightning as L

    from learngene.training import evaluate

    class Curve(L.Callback):
        def on_train_start(self, trainer, pl_module):
            log.append((0, evaluate(model, loader)["top1"]))
            model.train()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step % every == 0 or trainer.global_step == trainer.max_steps:
                log.append((trainer.global_step, evaluate(model, loader)["top1"]))
                model.train()

    return Curve()


def train(model, dm, recipe, every: int, seed: int) -> tuple[list, float]:
    import lightning as L

    from learngene.training import Classifier, OptimConfig, TrainerArgs, make_trainer

    L.seed_everything(seed, verbose=False)
    optim = OptimConfig(lr=recipe["lr"], weight_decay=recipe["weight_decay"], warmup_fraction=recipe["warmup_fraction"],
                        label_smoothing=recipe["label_smoothing"])
    log: list = []
    t0 = time.perf_counter()
    cb = curve_callback(model, dm.test_dataloader(), every, log)
    make_trainer(TrainerArgs(max_epochs=recipe["epochs"], progress=False), callbacks=[cb]).fit(Classifier(model, optim), datamodule=dm)
    wall = time.perf_counter() - t0
    if not log or log[-1][0] != len(dm.train_dataloader()) * recipe["epochs"]:
        from learngene.training import evaluate

        log.append((len(dm.train_dataloader()) * recipe["epochs"], evaluate(model, dm.test_dataloader())["top1"]))
    return log, wall


def first_reach(log: list, target: float) -> int | None:
    return next((s for s, acc in log if acc >= target - 1e-9), None)


def main() -> None:
    import timm

    from learngene.ancestry import EMBEDDED_ARCH, EMBEDDED_MODEL_ARGS, EMBEDDED_RECIPE
    from learngene.data import LearngeneDataModule, digits_data_config
    from learngene.grow import api
    from learngene.training import quiet_lightning

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="net2net,expand,ligo")
    ap.add_argument("--every", type=int, default=10, help="evaluate test accuracy every N steps")
    ap.add_argument("--ligo-steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (smoke runs)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_lightning()
    recipe = dict(EMBEDDED_RECIPE)
    if args.epochs:
        recipe["epochs"] = args.epochs
    big = dict(EMBEDDED_MODEL_ARGS)
    rows, curves = [], []
    for seed in [int(s) for s in args.seeds.split(",")]:
        dm = LearngeneDataModule(None, data_config=digits_data_config(), batch_size=recipe["batch_size"], seed=seed)
        dm.setup("fit")
        torch.manual_seed(seed)
        scratch = timm.create_model(EMBEDDED_ARCH, **big)
        log, wall = train(scratch, dm, recipe, args.every, seed)
        target = log[-1][1]
        scratch_steps = first_reach(log, target)
        total = log[-1][0]
        rows.append(dict(seed=seed, method="scratch", init_top1=log[0][1], final_top1=target, steps=scratch_steps,
                         extra_steps=0, train_seconds=round(wall, 1), grow_seconds=0.0))
        curves += [dict(seed=seed, method="scratch", step=s, top1=a) for s, a in log]
        print(rows[-1], flush=True)

        torch.manual_seed(seed)
        small = timm.create_model(EMBEDDED_ARCH, **{**big, **SMALL})
        slog, swall = train(small, dm, recipe, 10 ** 9, seed)
        print(f"seed {seed}: small model {slog[-1][1]:.2f}% in {swall:.0f} s", flush=True)
        for method in args.methods.split(","):
            t = api.resolve_target(small, method, embed_dim=big["embed_dim"], depth=big["depth"], heads=big["num_heads"],
                                   mlp_ratio=4.0)
            t0 = time.perf_counter()
            grown = api.grow(small, method, t, dm=dm if method == "ligo" else None, steps=args.ligo_steps, seed=seed)
            gwall = time.perf_counter() - t0
            extra = args.ligo_steps if method == "ligo" else 0
            log, wall = train(grown, dm, recipe, args.every, seed)
            reach = first_reach(log, target)
            rows.append(dict(seed=seed, method=method, init_top1=log[0][1], final_top1=log[-1][1],
                             steps=None if reach is None else reach + extra, extra_steps=extra,
                             train_seconds=round(wall, 1), grow_seconds=round(gwall, 1), small_top1=slog[-1][1]))
            curves += [dict(seed=seed, method=method, step=s + extra, top1=a) for s, a in log]
            print(rows[-1], flush=True)
        for r in rows:
            if r["seed"] == seed:
                r["scratch_steps"], r["total_steps"] = scratch_steps, total
    df = pd.DataFrame(rows)
    df["fraction"] = df.steps / df.scratch_steps
    RESULTS.mkdir(exist_ok=True)
    df.to_csv(RESULTS / "growth.csv", index=False)
    pd.DataFrame(curves).to_csv(RESULTS / "growth_curves.csv", index=False)
    write_md(df, args)


def write_md(df: pd.DataFrame, args) -> None:
    from learngene.bench.metrics import device_name

    machine = f"{device_name(torch.device('cpu'))}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    g = df.groupby("method", sort=False)
    summary = pd.DataFrame({
        "init top1 (mean)": g.init_top1.mean().round(2),
        "final top1 (mean)": g.final_top1.mean().round(2),
        "steps to scratch's final (per seed)": g.steps.apply(lambda s: ", ".join("never" if pd.isna(v) else str(int(v)) for v in s)),
        "fraction of scratch's steps (median)": g.fraction.median().round(3),
        "fraction (per seed)": g.fraction.apply(lambda s: ", ".join("-" if pd.isna(v) else f"{v:.2f}" for v in s)),
        "grow s (median)": g.grow_seconds.median(),
        "train s (median)": g.train_seconds.median(),
    })
    md = [
        "# Growth: steps to reach scratch's final accuracy",
        "",
        f"`python benchmarks/growth.py --seeds {args.seeds} --methods {args.methods} --every {args.every}` on {machine}.",
        "",
        f"Small model: width {SMALL['embed_dim']}, {SMALL['num_heads']} heads, {SMALL['depth']} blocks (half the embedded "
        "ancestor's width and depth), trained on the digits with the ancestor's recipe; grown to the ancestor's "
        "architecture (128, 4 heads, 12 blocks, MLP 512) and trained with the same recipe "
        f"({df.total_steps.iloc[0]} steps, AdamW 1e-3, warm-up + cosine) as scratch. Steps: the first evaluation (every "
        f"{args.every} steps) at or above scratch's final test top1 of the same seed; LiGO's {args.ligo_steps} "
        "operator steps included. Fraction: those steps / the steps scratch itself needs to first reach its final "
        "accuracy (goals: LiGO <= 0.45, the exact methods <= 0.70). The small model's own training is not counted.",
        "",
        summary.to_markdown(),
        "",
        "Per run:",
        "",
        df.to_markdown(index=False),
    ]
    (RESULTS / "growth.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
