"""Does initialising a same-width auxiliary model from evenly spaced ancestor blocks help?
Distils the embedded recipe's wide model from random init and from ancestor init, same
epochs / lr / data, over several seeds. Writes benchmarks/results/pool_init.{csv,md}.

    python benchmarks/pool_init.py [--seeds 0,1,2] [--aux wide]
"""

import argparse
import tempfile
from pathlib import Path

import pandas as pd
from common import RESULTS

from learngene.core.training import TrainerArgs
from learngene.models.refs import load_model
from learngene.pool import build_pool, load_recipe, resolve_recipe_path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--aux", default="wide")
    args = ap.parse_args()
    anc = load_model("embedded", progress=False)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for init in ("random", "ancestor"):
            rec = load_recipe(
                resolve_recipe_path("embedded"), [f"distill.seed={seed}", f"auxiliary.{args.aux}.init={init}"]
            )
            rec.auxiliary = [a for a in rec.auxiliary if a.name == args.aux]
            with tempfile.TemporaryDirectory() as d:
                pool = build_pool(rec, out=Path(d) / "p", ancestor=anc, trainer_args=TrainerArgs(progress=False))
                m = pool.auxiliary[args.aux]["metrics"]
            spec = rec.auxiliary[0]
            rows.append(
                {
                    "seed": seed,
                    "init": init,
                    "epochs": spec.epochs,
                    "lr": spec.lr,
                    "test_top1": m["test_top1"],
                    "val_top1": m["val_top1"],
                    "seconds": m["seconds"],
                }
            )
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    df.to_csv(RESULTS / "pool_init.csv", index=False)
    g = (
        df.groupby("init")
        .agg(
            test_mean=("test_top1", "mean"),
            test_std=("test_top1", "std"),
            test_median=("test_top1", "median"),
            seconds=("seconds", "median"),
        )
        .round(2)
    )
    text = "\n".join(
        [
            f"# Auxiliary `{args.aux}` of the embedded recipe: random init vs ancestor init",
            "",
            "`python benchmarks/pool_init.py` — same epochs, lr, data and seeds; only the init differs.",
            f"Ancestor test top1: {anc.metrics.get('test_top1')}%.",
            "",
            df.to_markdown(index=False),
            "",
            g.to_markdown(),
            "",
        ]
    )
    (RESULTS / "pool_init.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
