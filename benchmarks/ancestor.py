"""Train the embedded ancestor with the shipped recipe through the CLI, once per seed, from
an empty cache each time, and record test accuracy and the wall time of the whole command
(start-up included). Writes benchmarks/results/ancestor.{csv,md}.

    python benchmarks/ancestor.py [--seeds 0,1,2]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"


def cpu_name() -> str:
    import torch

    from learngene.bench.metrics import device_name

    return device_name(torch.device("cpu"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        with tempfile.TemporaryDirectory() as home:
            env = dict(os.environ, LEARNGENE_HOME=home)
            t0 = time.perf_counter()
            r = subprocess.run(
                [sys.executable, "-m", "learngene.cli", "ancestor", "--seed", str(seed), "--json", "-q"],
                capture_output=True, text=True, env=env,
            )
            wall = time.perf_counter() - t0
            if r.returncode != 0:
                sys.exit(f"seed {seed} failed: {r.stderr.strip()}")
            info = json.loads(r.stdout)
        rows.append({
            "seed": seed, "test_top1": info["test_top1"], "val_top1": info["val_top1"],
            "train_seconds": info["train_seconds"], "command_seconds": round(wall, 1),
            "epochs": info["epochs"], "params_m": info["params_m"], "threads": info["threads"],
        })
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    df.to_csv(RESULTS / "ancestor.csv", index=False)
    import torch

    machine = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {df.threads.iloc[0]} threads"
    md = [
        "# Embedded ancestor: accuracy and time",
        "",
        "`python benchmarks/ancestor.py` trains the embedded ancestor with the shipped recipe "
        "through `learngene ancestor --seed S` from an empty cache, once per seed.",
        "",
        f"Machine: {machine}.",
        "",
        df.drop(columns=["threads"]).to_markdown(index=False) if _has_tabulate() else df.to_string(index=False),
        "",
        f"Median test top1 {df.test_top1.median():.2f}% (min {df.test_top1.min():.2f}%), "
        f"median wall of the whole command {df.command_seconds.median():.0f} s (max {df.command_seconds.max():.0f} s). "
        "Goal: >= 94% within 180 s on 2 cores.",
    ]
    (RESULTS / "ancestor.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    main()
