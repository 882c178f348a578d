"""What LiGO's 100 operator steps buy, on the embedded default (a diagnostic for growth.py).

Per seed: the small model of growth.py (64 wide, 2 heads, 6 blocks) trained on the digits with
the ancestor's recipe, then grown by LiGO to the ancestor's architecture with the operator
trained --steps steps at each operator learning rate of --lrs (0 steps: the operator's start,
Net2Net's mappings + 0.01 noise). Reported, right after materialising (before any training
of the grown model): test / validation top1 and cross-entropy on the training split (no
augmentation) and the validation split, against the small model's own.
Writes benchmarks/results/ligo_operator.{csv,md}.

    python benchmarks/ligo_operator.py [--seeds 0,1,2] [--lrs 1e-4,3e-4,1e-3,3e-3] [--steps 100]
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd
import torch
from common import RESULTS, SMALL, train  # noqa: E402  (the growth benchmarks' small model and recipe)


def cross_entropy(model, loader) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            total += torch.nn.functional.cross_entropy(model(x), y, reduction="sum").item()
            n += len(y)
    return total / n


def measure(model, dm) -> dict:
    from learngene.core.evaluation import evaluate

    return dict(
        test_top1=evaluate(model, dm.test_dataloader())["top1"],
        val_top1=evaluate(model, dm.val_dataloader())["top1"],
        train_ce=cross_entropy(model, dm.eval_loader("train")),
        val_ce=cross_entropy(model, dm.val_dataloader()),
    )


def main() -> None:
    import timm

    from learngene.core.data import LearngeneDataModule, digits_data_config
    from learngene.core.training import TrainerArgs, quiet_lightning
    from learngene.growth import methods as api
    from learngene.measure.metrics import device_name
    from learngene.models.embedded import EMBEDDED_ARCH, EMBEDDED_MODEL_ARGS, EMBEDDED_RECIPE

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--lrs", default="1e-4,3e-4,1e-3,3e-3")
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    quiet_lightning()
    big = dict(EMBEDDED_MODEL_ARGS)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        dm = LearngeneDataModule(
            None, data_config=digits_data_config(), batch_size=EMBEDDED_RECIPE["batch_size"], seed=seed
        )
        dm.setup("fit")
        torch.manual_seed(seed)
        small = timm.create_model(EMBEDDED_ARCH, **{**big, **SMALL})
        train(small, dm, EMBEDDED_RECIPE, 10**9, seed)
        # the target and the growth call exactly as in growth.py (MLP 512, heads of 32)
        t = api.resolve_target(
            small, "ligo", embed_dim=big["embed_dim"], depth=big["depth"], heads=big["num_heads"], mlp_ratio=4.0
        )
        rows.append(dict(seed=seed, model="small", op_lr=None, op_steps=0, seconds=0.0, **measure(small, dm)))
        print(rows[-1], flush=True)
        for lr, steps in [(0.0, 0)] + [(float(v), args.steps) for v in args.lrs.split(",")]:
            t0 = time.perf_counter()
            grown = api.grow(
                small, "ligo", t, dm=dm, steps=steps, seed=seed, ligo_lr=lr, trainer_args=TrainerArgs(progress=False)
            )
            rows.append(
                dict(
                    seed=seed,
                    model="ligo",
                    op_lr=lr if steps else None,
                    op_steps=steps,
                    seconds=round(time.perf_counter() - t0, 1),
                    **measure(grown, dm),
                )
            )
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    df.to_csv(RESULTS / "ligo_operator.csv", index=False)
    df["config"] = df.apply(
        lambda r: (
            "small model"
            if r.model == "small"
            else ("LiGO start (0 steps)" if r.op_steps == 0 else f"LiGO, {r.op_steps} steps at lr {r.op_lr:g}")
        ),
        axis=1,
    )
    order = list(dict.fromkeys(df["config"]))
    agg = (
        df.groupby("config", sort=False)
        .agg(
            test_top1=("test_top1", "mean"),
            val_top1=("val_top1", "mean"),
            train_ce=("train_ce", "mean"),
            val_ce=("val_ce", "mean"),
            test_per_seed=("test_top1", lambda s: ", ".join(f"{v:.2f}" for v in s)),
            seconds=("seconds", "median"),
        )
        .loc[order]
    )
    text = [
        "# LiGO: what the operator steps buy",
        "",
        f"`python benchmarks/ligo_operator.py --seeds {args.seeds} --lrs {args.lrs} --steps {args.steps}` on "
        f"{device_name(torch.device('cpu'))}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. The small model of growth.py, grown by LiGO to the "
        "embedded ancestor's architecture; measured right after materialising, before the grown model trains. "
        "Means over seeds (test top1 per seed too); cross-entropy on the training split without augmentation and on "
        "the validation split.",
        "",
        agg.round(3).to_markdown(),
        "",
    ]
    (RESULTS / "ligo_operator.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
