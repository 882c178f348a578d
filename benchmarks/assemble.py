"""assemble on the embedded default pool: stitch init (lstsq vs distill), the default joint
training budget over 3 seeds against the same architectures trained from scratch, and the
wall time of `learngene assemble --size=tiny`. Writes benchmarks/results/assemble.{md,csv,json}.

    learngene build-pool          # once: pools/embedded
    python benchmarks/assemble.py [--pool pools/embedded] [--seeds 0 1 2]

Scratch: every descendant architecture (narrow, stitched, wide) from random init, trained
alone with CE at lr 1e-3 (the calibration's best for scratch), at two budgets: the same
total optimizer steps as the joint run (each architecture its 1/18 share: the same compute
for the whole zoo) and the same number of epochs each (18x the joint run's compute).
The scratch part is long; `--scratch-only [--scratch-kind share] --seeds S --threads 1`
runs it on its own, one process per seed, merging into assemble.json. The scratch columns
now in results/assemble.md were made by an equivalent copy of this code inside this script
(random init through reset_parameters); it now calls learngene.baselines.scratch (timm's
own init of a fresh model), which compare_methods.py uses too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS, cpu_name, init_accuracy, quiet


def copy_as_distilled(pool_dir: Path, dst: Path) -> Path:
    from learngene.pool import Pool

    return Pool.open(pool_dir).copy_as_distilled(dst).path


def joint(pool_dir: Path, seed: int, init: str) -> dict:
    from learngene.assembly import AssembleSpec, assemble

    with tempfile.TemporaryDirectory() as d:
        p = copy_as_distilled(pool_dir, Path(d) / "pool")
        t0 = time.perf_counter()
        res = assemble(
            p, train="all", init=init, spec=AssembleSpec(seed=seed), trainer_args=quiet(), progress=lambda m: None
        )
        wall = time.perf_counter() - t0
    return {
        "rows": res.rows,
        "seconds": wall,
        "best_epoch": res.trained["best"]["epoch"],
        "history": [round(h["mean"], 2) for h in res.trained["history"]],
    }


def scratch(pool_dir: Path, seed: int, epochs: int, share: bool = False) -> dict:
    """Every descendant architecture from random init, alone, CE, lr 1e-3
    (learngene.baselines.scratch). ``share``: each gets its share of the joint run's
    optimizer steps (epochs x batches / #descendants), the same total compute as the joint
    run; else ``epochs`` full epochs each."""
    from learngene.baselines import scratch as train_scratch
    from learngene.core.data import LearngeneDataModule
    from learngene.pool import Pool
    from learngene.zoo import pool_zoo

    pool = Pool.open(pool_dir)
    pm, _ = pool.model("r0")
    architectures = pool_zoo(pool, "r0", pm=pm)
    n = len(architectures)
    dm = LearngeneDataModule(None, batch_size=64, seed=seed)
    steps = epochs * len(dm.train_dataloader())
    zoo = train_scratch(
        architectures,
        dm,
        steps // n if share else steps,
        seed=seed,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    return {r["id"]: r["test_top1"] for r in zoo.rows}


def cli_seconds(args: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "learngene.cli", "assemble", *args], capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", default="pools/embedded")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--skip-scratch", action="store_true")
    ap.add_argument("--md-only", action="store_true", help="rewrite assemble.md from assemble.json")
    ap.add_argument("--scratch-only", action="store_true", help="add the scratch column to assemble.json")
    ap.add_argument("--threads", type=int, help="torch threads for --scratch-only")
    ap.add_argument(
        "--scratch-kind",
        choices=["epochs", "share"],
        default="epochs",
        help="--scratch-only: the same epochs each, or each its share of the joint run's steps",
    )
    a = ap.parse_args()
    if a.md_only:
        return write_md(json.loads((RESULTS / "assemble.json").read_text()))
    pool_dir = Path(a.pool)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from learngene.stitch.joint import DEFAULT_EPOCHS

    epochs = DEFAULT_EPOCHS["all"]
    if a.scratch_only:
        # The untimed, long part on its own: one process per seed can run side by side
        # (--threads 1), each merging its seeds into assemble.json when done.
        torch.set_num_threads(a.threads or torch.get_num_threads())
        key = "scratch" if a.scratch_kind == "epochs" else "scratch_share"
        got = {str(s): scratch(pool_dir, s, epochs, share=key == "scratch_share") for s in a.seeds}
        res = json.loads((RESULTS / "assemble.json").read_text())
        res[key] = {**res.get(key, {}), **got}
        (RESULTS / "assemble.json").write_text(json.dumps(res, indent=2))
        return write_md(res)
    res = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "epochs": epochs,
    }
    # the CLI: a pool without revisions (trains the tiny target), then one already assembled
    with tempfile.TemporaryDirectory() as d:
        p = copy_as_distilled(pool_dir, Path(d) / "pool")
        res["cli_tiny_fresh_s"] = cli_seconds(["--pool", str(p), "--size", "tiny", "-q"])
        child = json.loads(next((p / "children").glob("*/config.json")).read_text())["learngene"]["descendant"]
        res["cli_tiny_child"] = child
        from learngene.pool import Pool

        res["ancestor_params"] = Pool.open(p).ancestor["params"]
        cli_seconds(["--pool", str(p), "--all", "-q"])
        res["cli_tiny_assembled_s"] = cli_seconds(["--pool", str(p), "--size", "tiny", "-q", "--force"])
    res["init"] = init_accuracy(pool_dir)
    res["joint"] = {init: {s: joint(pool_dir, s, init) for s in a.seeds} for init in ("lstsq", "distill")}
    (RESULTS / "assemble.json").write_text(json.dumps(res, indent=2))  # timed parts done
    if not a.skip_scratch:
        res["scratch_share"] = {s: scratch(pool_dir, s, epochs, share=True) for s in a.seeds}
        res["scratch"] = {s: scratch(pool_dir, s, epochs) for s in a.seeds}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "assemble.json").write_text(json.dumps(res, indent=2))
    write_md(res)


def ms(xs):
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"


def write_md(res: dict) -> None:
    seeds = list(res["joint"]["lstsq"])
    ids = [r["id"] for r in res["joint"]["lstsq"][seeds[0]]["rows"]]
    params = {r["id"]: r["params"] for r in res["joint"]["lstsq"][seeds[0]]["rows"]}
    lines = [
        "# assemble on the embedded default pool",
        "",
        "`python benchmarks/assemble.py` (pool built by `learngene build-pool`).",
        "",
        f"Machine: {res['machine']}. Default budget: {res['epochs']} joint epochs, one descendant sampled per step, "
        "0.5 CE + 0.5 KL to the ancestor, lr 1e-4 inherited / 1e-3 stitches, best validation state kept.",
        "",
    ]
    # init
    lines += [
        "## Right after stitch initialisation (no training)",
        "",
        "| init | mean test top1 (18) | mean stitched (16) | min | mean val top1 |",
        "|---|---|---|---|---|",
    ]
    for how, acc in res["init"].items():
        t = [v["test"] for v in acc.values()]
        st = [v["test"] for k, v in acc.items() if k.startswith("stitch")]
        lines.append(
            f"| {how} | {statistics.mean(t):.2f} | {statistics.mean(st):.2f} | {min(st):.2f} | "
            f"{statistics.mean(v['val'] for v in acc.values()):.2f} |"
        )
    # joint vs scratch
    lines += ["", f"## After the default budget, test top1 per descendant (mean ± std over seeds {seeds})", ""]
    scr = [
        (k, t)
        for k, t in (("scratch_share", "scratch, same total steps"), ("scratch", "scratch, same epochs each"))
        if k in res
    ]
    head = "| descendant | params | lstsq init, joint | distill init, joint |" + "".join(f" {t} |" for _, t in scr)
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    summary = {}
    for sid in ids:
        cells = [sid, f"{params[sid] / 1e6:.3f}M"]
        for init in ("lstsq", "distill"):
            xs = [next(r for r in res["joint"][init][s]["rows"] if r["id"] == sid)["test_top1"] for s in seeds]
            summary.setdefault(init, []).append(xs)
            cells.append(ms(xs))
        for k, _ in scr:
            xs = [res[k][s][sid] for s in seeds if s in res[k]]
            summary.setdefault(k, []).append(xs)
            cells.append(ms(xs))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| method | mean over descendants | min descendant (mean over seeds) | descendants >= 95% | wall s "
        "(joint run, median) |",
        "|---|---|---|---|---|",
    ]
    for name, per in summary.items():
        means = [statistics.mean(x) for x in per]
        wall = None
        if name in res["joint"]:
            wall = f"{statistics.median(res['joint'][name][s]['seconds'] for s in seeds):.1f}"
        label = {"lstsq": "joint, lstsq init", "distill": "joint, distill init", **dict(scr)}[name]
        lines.append(
            f"| {label} | {statistics.mean(means):.2f} | {min(means):.2f} | "
            f"{sum(m >= 95 for m in means)}/{len(means)} | {wall or '-'} |"
        )
    if scr:
        lines += [
            "",
            "Scratch, same total steps: each architecture gets its 1/18 share of the joint run's optimizer steps "
            "(the compute that trains the whole zoo jointly). Scratch, same epochs each: 18x that compute in all.",
        ]
    below = []
    for s in seeds:
        for r in res["joint"]["lstsq"][s]["rows"]:
            if r.get("init_val_top1") is not None and r["val_top1"] < r["init_val_top1"]:
                below.append(f"{r['id']} (seed {s}: {r['init_val_top1']} -> {r['val_top1']})")
    lines += [
        "",
        "Validation top1 after training below the descendant's own value right after init (lstsq, all seeds): "
        + (", ".join(below) if below else "none")
        + ".",
    ]
    hist = {s: res["joint"]["lstsq"][s]["history"] for s in seeds}
    lines += [
        "",
        "Mean validation top1 over the descendants by epoch (lstsq; epoch 0 = after init; the best state is kept): "
        + "; ".join(f"seed {s}: " + " ".join(f"{v:.1f}" for v in h) for s, h in hist.items()),
    ]
    c = res["cli_tiny_child"]
    lines += [
        "",
        "## `learngene assemble --size=tiny`",
        "",
        f"- on a pool with no revision (stitch init + training of the chosen child): "
        f"**{res['cli_tiny_fresh_s']:.1f} s**; "
        f"child `{c['id']}`, {c['params']:,} params = {100 * c['params'] / res['ancestor_params']:.2f}% of the "
        f"ancestor "
        f"(goal <= 6.6%), test top1 {c['test_top1']}%",
        f"- on a pool already assembled with `--all`: **{res['cli_tiny_assembled_s']:.1f} s**",
        "",
    ]
    text = "\n".join(lines)
    (RESULTS / "assemble.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
