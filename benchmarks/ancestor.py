"""The embedded ancestors trained to their plateau (the default recipe: until validation top1
stops improving), once per testbed and seed, each timed; with ``--ship``, seed 0's weights are
written into the package (``learngene/weights/embedded-<testbed>/``), which is how the main job
starts from a trained ancestor in seconds instead of training one for tens of minutes.
Resumable: a testbed and seed already in the JSON is kept, and a run cut off continues from
its last epoch (checkpointed under $LEARNGENE_HOME/ancestors/training/). Writes
benchmarks/results/ancestor.{json,md}.

    python benchmarks/ancestor.py [--testbeds digits,animals] [--seeds 0] [--ship] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import RESULTS, cpu_name

OUT = RESULTS / "ancestor.json"


# The narrow architecture (the pool's narrow auxiliary width at the ancestor's depth: SN-Net's
# (a) anchor) trained alone with the ancestor's own recipe: the low end of the testbed's slope.
# narrow32 / narrow16: narrower candidates, for a testbed whose slope width 48 does not span
# (on the animals, width 48 alone came within a point of the ancestor)
ARCHS = {
    "ancestor": None,
    "narrow": dict(embed_dim=48, num_heads=3),
    "narrow32": dict(embed_dim=32, num_heads=2),
    "narrow16": dict(embed_dim=16, num_heads=1),
}
ANCHORS = RESULTS / "anchors"  # the narrow models, kept as timm local-dirs (1.3 MB each)


def tb_name(testbed: str) -> str | None:
    return None if testbed == "digits" else testbed


def key_of(testbed: str, seed: int, arch: str) -> str:
    from learngene.models.embedded import recipe, recipe_key

    return recipe_key(recipe(seed=seed, name=tb_name(testbed)), tb_name(testbed), ARCHS[arch])


def train(testbed: str, seed: int, threads: int, arch: str = "ancestor", resume: bool = True) -> tuple[dict, Path]:
    import torch

    from learngene.core.training import TrainerArgs
    from learngene.models.embedded import train_embedded

    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix=f"ancestor-{testbed}-{arch}-{seed}-"))
    t0 = time.perf_counter()
    anc = train_embedded(
        work / "anc",
        name=tb_name(testbed),
        seed=seed,
        resume=resume,
        model_args=ARCHS[arch],
        trainer_args=TrainerArgs(
            progress=False, log_lines=True, accelerator="cpu", threads=threads, label=f"{arch} {testbed} seed {seed}"
        ),
    )
    m = anc.metrics
    return (
        {
            "testbed": testbed,
            "arch": arch,
            "seed": seed,
            "params": sum(p.numel() for p in anc.model.parameters()),
            "test_top1": m["test_top1"],
            "val_top1": m["val_top1"],
            "epochs_run": m["epochs"],
            "best_epoch": m["best_epoch"],
            "steps": m["steps"],
            # the whole run's training seconds, over every sitting of a resumed run
            "seconds": m["train_seconds"],
            "sitting_seconds": round(time.perf_counter() - t0, 1),
            "threads": threads,
            "recipe_key": key_of(testbed, seed, arch),
        },
        work / "anc",
    )


def slopes(res: dict) -> dict:
    """Per testbed, each architecture's mean test top1 over its seeds, and the ancestor's lead
    over it; ``slope_at_plateau`` is the lead over ``narrow`` (the recipe's narrow width at the
    ancestor's depth), all trained alone with the same recipe to their plateau."""
    out = {}
    for tb in sorted({r["testbed"] for r in res["runs"]}):
        acc = {
            a: [r["test_top1"] for r in res["runs"] if (r["testbed"], r.get("arch", "ancestor")) == (tb, a)]
            for a in ARCHS
        }
        if not acc["ancestor"]:
            continue
        top = sum(acc["ancestor"]) / len(acc["ancestor"])
        by = {
            a: {
                "mean_test_top1": round(sum(v) / len(v), 2),
                "seeds": len(v),
                "ancestor_lead": round(top - sum(v) / len(v), 2),
            }
            for a, v in acc.items()
            if v
        }
        out[tb] = {"by_arch": by}
        if "narrow" in by:
            out[tb]["slope_at_plateau"] = by["narrow"]["ancestor_lead"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--testbeds", default="digits,animals")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--arch", choices=list(ARCHS), default="ancestor")
    ap.add_argument("--ship", action="store_true", help="write seed 0's ancestor weights into learngene/weights/")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--no-resume",
        action="store_true",
        help="start afresh instead of continuing an interrupted run from its last epoch's checkpoint",
    )
    a = ap.parse_args()
    from learngene.models.embedded import shipped_dir

    def load() -> dict:
        return json.loads(OUT.read_text()) if OUT.is_file() else {"runs": []}

    for tb in [t.strip() for t in a.testbeds.split(",") if t.strip()]:
        for seed in [int(s) for s in a.seeds.split(",")]:
            key = key_of(tb, seed, a.arch)
            done = [r for r in load()["runs"] if (r["testbed"], r["seed"], r.get("recipe_key")) == (tb, seed, key)]
            ship = a.ship and seed == 0 and a.arch == "ancestor"
            if done and not ship:
                print(f"{a.arch} {tb} seed {seed}: kept from an earlier run ({done[0]['test_top1']}%)")
                continue
            row, folder = train(tb, seed, a.threads, a.arch, resume=not a.no_resume)
            # read again before writing: another arch or testbed may be running beside this one
            res = load()
            res["machine"] = f"{cpu_name()}, {os.cpu_count()} cores"
            same = (tb, seed, a.arch)
            res["runs"] = [r for r in res["runs"] if (r["testbed"], r["seed"], r.get("arch", "ancestor")) != same]
            res["runs"].append(row)
            res["slopes"] = slopes(res)
            OUT.parent.mkdir(exist_ok=True)
            OUT.write_text(json.dumps(res, indent=2))  # kept after every run: resumable
            print(row, flush=True)
            if ship:
                dst = shipped_dir(tb_name(tb))
            elif a.arch.startswith("narrow"):
                dst = ANCHORS / f"{tb}-{a.arch}-s{seed}"
            else:
                dst = None
            if dst is not None:
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(folder, dst)
                print(f"kept {dst}")
            shutil.rmtree(folder.parent, ignore_errors=True)
            write_md(load())


def write_md(res: dict) -> None:
    lines = [
        "# Embedded ancestors at their plateau",
        "",
        "`python benchmarks/ancestor.py` trains each testbed's ancestor with the default recipe (AdamW lr 1e-3, "
        "wd 0.05, 10% warm-up then cosine over at most 300 epochs, label smoothing 0.1, batch 64; stopped 30 epochs "
        "after the best validation top1, whose state is kept). Seed 0's weights ship with the package.",
        "",
        f"Machine: {res['machine']}.",
        "",
        "| testbed | model | seed | params | test top1 | val top1 | epochs run | best epoch | steps | seconds "
        "| threads |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(res["runs"], key=lambda r: (r["testbed"], r.get("arch", "ancestor"), r["seed"])):
        params = f"{r['params'] / 1e6:.2f}M" if "params" in r else "-"  # not recorded by the first runs
        lines.append(
            f"| {r['testbed']} | {r.get('arch', 'ancestor')} | {r['seed']} | {params} | "
            f"{r['test_top1']:.2f} | {r['val_top1']:.2f} | {r['epochs_run']} | "
            f"{r['best_epoch']} | {r['steps']} | {r['seconds']:.0f} | {r['threads']} |"
        )
    if res.get("slopes"):
        lines += [
            "",
            "`slope_at_plateau`: the ancestor's mean test top1 minus the narrow architecture's (width 48, "
            "3 heads, the ancestor's 12 blocks; narrow32 / narrow16: 32 / 16 wide), each trained alone with the "
            "same recipe to its plateau.",
            "",
        ]
        for tb, s in res["slopes"].items():
            for arch, b in s["by_arch"].items():
                if arch != "ancestor":
                    lines.append(
                        f"- {tb}: the ancestor {b['ancestor_lead']:+.2f} points over {arch} "
                        f"({ARCHS[arch]['embed_dim']} wide; {b['seeds']} seed(s), "
                        f"ancestor {s['by_arch']['ancestor']['seeds']})"
                    )
    (RESULTS / "ancestor.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
