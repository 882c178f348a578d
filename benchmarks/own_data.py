"""Your own data, end to end, through the CLI, on ImageFolders of three kinds of real images
(benchmarks/folders.py: animal silhouettes, crops of natural photographs, handwritten
digits), each laid out as users have them (train/ and val/, mixed modes and sizes, no test/).
Per folder, each step timed on a fresh LEARNGENE_HOME (only the shipped embedded ancestor):

    learngene ancestor --data DIR --fine-tune      # fitted to the folder's classes (the default recipe)
    learngene build-pool --data DIR --out POOL     # takes the fitted ancestor by itself
    learngene assemble --pool POOL --data DIR --size tiny
    learngene bench --pool POOL --data DIR

and beside them the baselines a sceptic runs first, on the same split at the ancestor's
input size: nearest neighbours and logistic regression on the raw pixels (`ancestor
--fine-tune` records both), and the ancestor's architecture trained from scratch on the folder
with the embedded recipe (until validation stops improving, at most as many training images as
the fit saw: equal training compute). Resumable per folder (benchmarks/results/own_data.json).

    python benchmarks/own_data.py [--kinds animals,photos,digits] [--redo KIND] [--fit-only KIND]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, cpu_name

OUT = RESULTS / "own_data.json"


def cli(*args, env) -> tuple[float, dict | str]:
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "learngene.cli", *map(str, args)], capture_output=True, text=True, env=env
    )
    if r.returncode:
        sys.exit(f"learngene {' '.join(map(str, args))}: {r.stderr[-2000:]}")
    secs = time.perf_counter() - t0
    try:
        return secs, json.loads(r.stdout)
    except json.JSONDecodeError:
        return secs, r.stdout


def scratch(folder: Path, images_seen: int, home: Path) -> dict:
    """The embedded ancestor's architecture from random init on the folder, trained with the
    embedded recipe (`EMBEDDED_RECIPE`: lr 1e-3, batch 64, AdamW wd 0.05, warm-up + cosine,
    label smoothing 0.1, until validation stops improving, best state kept) on the fit's
    augmentation, at equal training compute: at most as many training images as the fit saw
    (same architecture, so the same training FLOPs)."""
    import lightning as L
    import timm

    from learngene.core.convergence import Convergence
    from learngene.core.data import LearngeneDataModule
    from learngene.core.evaluation import evaluate
    from learngene.core.training import TrainerArgs
    from learngene.models.embedded import EMBEDDED_ARCH, EMBEDDED_MODEL_ARGS, EMBEDDED_RECIPE
    from learngene.models.fitted import _train
    from learngene.models.refs import load_model

    os.environ["LEARNGENE_HOME"] = str(home)
    base = load_model("embedded", progress=False)
    r = dict(EMBEDDED_RECIPE)
    dm = LearngeneDataModule(str(folder), batch_size=r["batch_size"], seed=r["seed"]).for_model(base.data_config)
    ev = LearngeneDataModule(str(folder), augment=False).for_model(base.data_config)
    L.seed_everything(r["seed"], verbose=False)
    model = timm.create_model(EMBEDDED_ARCH, **{**EMBEDDED_MODEL_ARGS, "num_classes": dm.num_classes})
    t0 = time.perf_counter()
    targs = TrainerArgs(progress=False, accelerator="cpu")
    cap = max(1, images_seen // dm.source.count("train"))
    rec = _train(model, dm, r["lr"], r, "auto", targs, "scratch", auto=Convergence(cap=cap, patience=r["patience"]))
    model.eval()
    return {
        "test_top1": round(evaluate(model, ev.test_dataloader())["top1"], 2),
        "epochs_run": rec["epochs_run"],
        "steps": rec["steps"],
        "images_seen": rec["steps"] * r["batch_size"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def run_folder(kind: str, folder: Path, work: Path, fit_only: bool = False) -> dict:
    home = work / f"home-{kind}"
    env = {**os.environ, "LEARNGENE_HOME": str(home), "LEARNGENE_NO_LOAD_WARNING": "1"}
    pool = work / f"pool-{kind}"
    res = {"kind": kind, "seconds": {}}
    s, res["fitted"] = cli("ancestor", "--data", folder, "--fine-tune", "--json", "-q", env=env)
    res["seconds"]["fit the ancestor"] = round(s, 1)
    print(f"{kind}: fitted {res['fitted']['test_top1']}% in {s:.0f} s", flush=True)
    if fit_only:  # the fit and its baselines only: no pool, child or bench this time
        res["fit_only"] = True
        res["scratch"] = scratch(folder, res["fitted"]["images_seen"], home)
        return res
    s, _ = cli("build-pool", "--data", folder, "--out", pool, "-q", env=env)
    res["seconds"]["build-pool"] = round(s, 1)
    res["pool"] = json.loads((pool / "pool.json").read_text())["auxiliary"]
    s, res["assemble"] = cli("assemble", "--pool", pool, "--data", folder, "--size", "tiny", "--json", "-q", env=env)
    res["seconds"]["assemble --size tiny"] = round(s, 1)
    s, rows = cli("bench", "--pool", pool, "--data", folder, "--json", "-q", "--batch-sizes", "1", env=env)
    res["seconds"]["bench"] = round(s, 1)
    res["bench"] = [{k: r[k] for k in ("model", "top1", "param_count", "infer_step_time")} for r in rows]
    res["scratch"] = scratch(folder, res["fitted"]["images_seen"], home)
    print(f"{kind}: scratch at the fit's compute {res['scratch']['test_top1']}%", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kinds", default="animals,photos,digits")
    ap.add_argument("--redo", default="", help="run these kinds again even if the JSON has them")
    ap.add_argument("--fit-only", default="", help="for these kinds, the fit and its baselines only (no pool)")
    a = ap.parse_args()
    import folders

    res = json.loads(OUT.read_text()) if OUT.is_file() else {}
    if "folders" not in res:  # nothing yet, or the first version's single-folder layout
        res = {"folders": {}}
    res["machine"] = f"{cpu_name()}, {os.cpu_count()} cores"
    redo = {k.strip() for k in a.redo.split(",") if k.strip()}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for kind in [k.strip() for k in a.kinds.split(",") if k.strip()]:
            if kind in res["folders"] and kind not in redo:
                print(f"{kind}: kept from an earlier run")
                continue
            counts = folders.write(work / "folders", [kind])[kind]
            r = run_folder(kind, work / "folders" / kind, work, fit_only=kind in a.fit_only.split(","))
            r["counts"] = counts
            r["machine"] = res["machine"]  # this run's: rows kept from earlier runs keep theirs
            res["folders"][kind] = r
            RESULTS.mkdir(exist_ok=True)
            OUT.write_text(json.dumps(res, indent=2))  # kept after every folder: resumable
            shutil.rmtree(work / f"pool-{kind}", ignore_errors=True)
    write_md(res)
    print(f"wrote {RESULTS / 'own_data.md'}")


def start(fitted: dict) -> str:
    """The start the fit chose: the base's weights, or shrunk toward a fresh init (FIT_RECIPE)."""
    keep = fitted.get("keep", 1.0)
    return f"{'base' if keep == 1 else f'{keep:g} base + {1 - keep:g} fresh'}, lr {fitted['lr']:g}"


def kept(training: dict) -> str:
    """The epoch whose state the fit kept, and the validation peak when that is another."""
    peak = training.get("peak_epoch")
    return f"kept {training['best_epoch']}" + (f", peak {peak}" if peak and peak != training["best_epoch"] else "")


def machines(res: dict) -> str:
    """Where the rows ran: one machine, or each folder's (rows run at other times keep theirs)."""
    per = {k: r.get("machine", res["machine"]) for k, r in res["folders"].items()}
    if len(set(per.values())) <= 1:
        return next(iter(per.values()), res["machine"])
    return "; ".join(f"{k} on {m}" for k, m in per.items())


def write_md(res: dict) -> None:
    lines = [
        "# Your own data, end to end",
        "",
        f"`python benchmarks/own_data.py` on {machines(res)}: ImageFolders written by `benchmarks/folders.py` "
        f"from images "
        "registry packages bundle (train/ and val/ only: learngene halves val/ into val and test), through the CLI "
        "with the default recipe. Test top1 on the same test split; wall seconds of each command.",
        "",
        "| folder | images (train / val+test) | kNN on pixels | logreg on pixels | scratch, equal compute | "
        "**fitted ancestor** | narrow / wide auxiliaries | tiny child | fit s | build-pool s | assemble s | bench s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for kind, r in res["folders"].items():
        f, s = r["fitted"], r["seconds"]
        full = not r.get("fit_only")
        c = r["assemble"]["chosen"] if full else None
        aux = " / ".join(f"{m['metrics']['test_top1']:.2f}" for m in r["pool"].values()) if full else "not run"
        child = f"{c['id']} {c['test_top1']:.2f}" if full else "not run"
        later = f"{s['build-pool']:.0f} | {s['assemble --size tiny']:.0f} | {s['bench']:.0f}" if full else "- | - | -"
        lines.append(
            f"| {kind} | {r['counts']['train']} / {r['counts']['val']} | {f['pixels_knn_top1']:.2f} | "
            f"{f['pixels_logreg_top1']:.2f} | {r['scratch']['test_top1']:.2f} "
            f"({r['scratch']['epochs_run']} ep) | **{f['test_top1']:.2f}** ({f['training']['epochs_run']} ep, "
            f"{kept(f['training'])}, {start(f)}) | {aux} | {child} | {s['fit the ancestor']:.0f} | {later} |"
        )
        best = max(f["pixels_knn_top1"], f["pixels_logreg_top1"])
        beats = "beats it" if f["test_top1"] > best else "ties it" if f["test_top1"] == best else "BELOW it"
        verdicts.append(
            f"- {kind}: fitted {f['test_top1']:.2f}% vs best pixel baseline {best:.2f}% "
            f"({beats}), vs scratch at equal compute "
            f"{r['scratch']['test_top1']:.2f}% "
            f"({'at least' if f['test_top1'] >= r['scratch']['test_top1'] else 'BELOW'}); "
            + (
                f"tiny child {c['test_top1']:.2f}%, {abs(c['test_top1'] - f['test_top1']):.2f} points "
                f"{'above' if c['test_top1'] > f['test_top1'] else 'below'} the fitted ancestor "
                f"({'within' if f['test_top1'] - c['test_top1'] <= 5 else 'MORE than'} 5)."
                if full
                else "pool, child and bench not run this time (`--fit-only`)."
            )
        )
    lines += ["", *verdicts, *(f"- {n}" for n in res.get("notes", [])), ""]
    (RESULTS / "own_data.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
