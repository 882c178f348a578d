"""Eager PyTorch vs ONNX Runtime fp32 vs int8 (dynamic and static) on the embedded pool, the
kit round trip, and target from a device's latency file. Writes
benchmarks/results/runtimes.{md,json}.

    learngene build-pool && learngene assemble --all      # once (a copy is assembled if not)
    python benchmarks/runtimes.py [--pool pools/embedded] [--runs 3] [--parts runtimes,kit,targets]

(--parts reruns some of the three below and keeps the others' results from runtimes.json.)

1. `learngene.api.bench` with torch fp32 and ONNX Runtime fp32 / int8 / int8-static, the descendants
   and the ancestor, batch 1 and 8, 2 threads, --runs times: per member the median latency
   of the runs, and per run the ratios (ORT fp32 / eager, int8 / ORT fp32), whose median is
   reported. top1 is computed by each runtime on the test split; the export checks (max
   |logit difference| of each fp32 ONNX file against eager, in ONNX Runtime) are listed.
2. The kit round trip, cold (an empty ONNX cache): `learngene kit` (all descendants, fp32 and
   int8, batch 1 and 8) then `python probe.py --threads 2`, wall time of both.
3. `learngene target --latency-file` at 3 budgets (between neighbouring p90s of the probe, at
   its 25th / 50th / 75th percentile): each pick is exported, put in a kit of its own and
   timed afresh by probe.py; is its p90 within the budget?
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
from common import RESULTS, cpu_name

PAIRS = [("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("onnxruntime", "int8-static")]


def cli(*args, env=None) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "learngene.cli", *map(str, args)], capture_output=True, text=True, env=env
    )
    if r.returncode:
        sys.exit(f"learngene {' '.join(map(str, args))}: {r.stderr}")
    return time.perf_counter() - t0, r.stdout


def assembled_copy(pool_dir: Path, work: Path) -> Path:
    """The pool with every descendant trained (assembled --all on a copy when it is not)."""
    from learngene.pool import Pool

    pool = Pool.open(pool_dir)
    pm, has = pool.model("latest")
    dst = work / "pool"
    if has and all(s.id in pool.trained_ids(pool.revision("latest")) for s in pm.specs):
        subprocess.run(["cp", "-r", str(pool_dir), str(dst)], check=True)
    else:
        pool.copy_as_distilled(dst)
        cli("assemble", "--pool", dst, "--all", "-q")
    return dst


def runtimes(pool: Path, runs: int) -> dict:
    from learngene.api import bench as bench_pool

    frames = []
    for r in range(runs):
        res = bench_pool(
            pool,
            runtimes="torch,onnxruntime",
            precisions="fp32,int8,int8-static",
            batch_sizes=[1, 8],
            include=["ancestor"],
            write=False,
        )
        df = res.df.assign(run=r)
        frames.append(df)
        print(f"run {r}: {res.seconds:.0f} s, warnings: {res.meta['warnings']}", flush=True)
    return {"frames": frames, "meta": res.meta}


def summarise(frames: list, meta: dict) -> dict:
    import pandas as pd

    df = pd.concat(frames)
    key = ["model", "infer_batch_size", "runtime", "precision"]
    med = (
        df.groupby(key)
        .agg(
            ms=("infer_step_time", "median"),
            p90=("infer_step_time_p90", "median"),
            spread=("infer_step_spread", "median"),
            top1=("top1", "first"),
            params=("param_count", "first"),
        )
        .reset_index()
    )
    lat = df.pivot_table(
        index=["run", "model", "infer_batch_size"], columns=["runtime", "precision"], values="infer_step_time"
    )
    ratios = (
        pd.DataFrame(
            {
                "ort_vs_eager": lat[("onnxruntime", "fp32")] / lat[("torch", "fp32")],
                "int8_vs_ort": lat[("onnxruntime", "int8")] / lat[("onnxruntime", "fp32")],
                "int8s_vs_ort": lat[("onnxruntime", "int8-static")] / lat[("onnxruntime", "fp32")],
            }
        )
        .groupby(level=["model", "infer_batch_size"])
        .median()
        .reset_index()
    )
    return {"median": med.to_dict("records"), "ratios": ratios.to_dict("records"), "meta": meta}


def export_checks() -> dict:
    """max |logit difference| of each cached fp32 ONNX file against eager (recorded at export)."""
    from learngene.core.io import home

    return {f.stem: json.loads(f.read_text()).get("max_abs_diff") for f in sorted((home() / "onnx").glob("*px.json"))}


def kit_round_trip(pool: Path, work: Path) -> dict:
    env = {**os.environ, "LEARNGENE_HOME": str(work / "cold-home")}  # an empty ONNX cache: every export is made
    anc = Path(os.environ.get("LEARNGENE_HOME", Path.home() / ".cache" / "learngene")) / "ancestors"
    if anc.is_dir():
        (work / "cold-home").mkdir(exist_ok=True)
        subprocess.run(["cp", "-r", str(anc), str(work / "cold-home" / "ancestors")], check=True)
    kit_s, _ = cli("kit", "--pool", pool, "--out", work / "kit", "-q", env=env)
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, work / "kit" / "probe.py", "--threads", "2", "--name", "host", "--out", work / "latency.json"],
        capture_output=True,
        text=True,
    )
    if r.returncode:
        sys.exit(r.stderr)
    probe_s = time.perf_counter() - t0
    return {
        "kit_s": kit_s,
        "probe_s": probe_s,
        "total_s": kit_s + probe_s,
        "files": len(list((work / "kit").glob("*.onnx"))),
    }


def targets(pool: Path, work: Path) -> list[dict]:
    lat = json.loads((work / "latency.json").read_text())
    p90 = sorted(r["p90_ms"] for r in lat["rows"] if r["batch_size"] == 1)
    out = []
    for q in (0.25, 0.5, 0.75):
        i = int(q * (len(p90) - 1))
        budget = (p90[i] + p90[i + 1]) / 2
        name = f"pick-{int(q * 100)}"
        _, js = cli(
            "target",
            "--pool",
            pool,
            "--latency-file",
            work / "latency.json",
            "--max-latency-ms",
            budget,
            "--no-train",
            "--out",
            work / name,
            "--json",
        )
        chosen = json.loads(js)["chosen"]
        kit = work / f"kit-{name}"
        cli(
            "kit",
            "--pool",
            pool,
            "--out",
            kit,
            "--members",
            chosen["model"],
            "--precision",
            chosen["precision"],
            "--batch-sizes",
            "1",
            "-q",
        )
        fresh = work / f"{name}.json"
        r = subprocess.run(
            [sys.executable, kit / "probe.py", "--threads", "2", "--out", fresh], capture_output=True, text=True
        )
        if r.returncode:
            sys.exit(r.stderr)
        again = json.loads(fresh.read_text())["rows"][0]
        out.append(
            {
                "budget_ms": budget,
                "pick": chosen["model"],
                "precision": chosen["precision"],
                "p90_in_latency_file_ms": chosen["infer_step_time_p90"],
                "fresh_p90_ms": again["p90_ms"],
                "fresh_median_ms": again["median_ms"],
                "within": again["p90_ms"] <= budget,
            }
        )
        print(out[-1], flush=True)
    return out


def write_md(res: dict) -> None:
    lines = [
        "# Runtimes: eager PyTorch vs ONNX Runtime fp32 vs int8, on the embedded pool",
        "",
        f"`python benchmarks/runtimes.py` ({res['runs']} runs). Machine: {res['machine']}. "
        f"{res['meta']['runtimes']}. Latency: median ms per batch over the runs (each run: members timed in "
        "interleaved rounds); ratios: median over the runs of the ratio within a run. top1: computed by that "
        f"runtime and precision on the test split ({res['meta']['test_images']} images).",
        "",
    ]
    r1 = {(r["model"], r["infer_batch_size"]): r for r in res["summary"]["ratios"]}
    med = {(r["model"], r["infer_batch_size"], r["runtime"], r["precision"]): r for r in res["summary"]["median"]}
    models = sorted({m for m, _ in r1}, key=lambda m: med[(m, 1, "torch", "fp32")]["params"])
    for bs in (1, 8):
        lines += [
            f"## batch {bs}",
            "",
            "| member | params (M) | eager ms | ORT fp32 ms | int8 ms | int8-static ms | ORT / eager | "
            "int8 / fp32 | int8-static / fp32 | top1 eager | ORT fp32 | int8 | int8-static |",
            "|---" * 14 + "|",
        ]
        for m in models:
            g = [med[(m, bs, rt, p)] for rt, p in PAIRS]
            r = r1[(m, bs)]
            lines.append(
                f"| {m} | {g[0]['params']:.3f} | "
                + " | ".join(f"{x['ms']:.3f}" for x in g)
                + f" | {r['ort_vs_eager']:.2f} | {r['int8_vs_ort']:.2f} | {r['int8s_vs_ort']:.2f} | "
                + " | ".join(f"{x['top1']:.2f}" for x in g)
                + " |"
            )
        lines.append("")
    ort = [r["ort_vs_eager"] for r in res["summary"]["ratios"] if r["infer_batch_size"] == 1]
    big = [m for m in models if med[(m, 1, "torch", "fp32")]["params"] >= 1.0]  # ancestor-sized: >= 1M params
    loss = {
        m: {
            p: med[(m, 1, "torch", "fp32")]["top1"] - med[(m, 1, "onnxruntime", p)]["top1"]
            for p in ("int8", "int8-static")
        }
        for m in big
    }
    speed = {m: {p: r1[(m, 1)][k] for p, k in (("int8", "int8_vs_ort"), ("int8-static", "int8s_vs_ort"))} for m in big}
    k = res["kit"]
    lines += [
        "## Goals",
        "",
        f"- ONNX Runtime fp32 <= 0.35x eager at batch 1 for every member: max {max(ort):.2f}, median "
        f"{statistics.median(ort):.2f} ({sum(x <= 0.35 for x in ort)}/{len(ort)} members).",
        "- int8 loses <= 0.5 points top1 and runs <= 0.85x fp32 for the ancestor-sized members "
        f"({', '.join(big)}): "
        + "; ".join(
            f"{m}: int8 {-loss[m]['int8']:+.2f} points at {speed[m]['int8']:.2f}x, int8-static "
            f"{-loss[m]['int8-static']:+.2f} "
            f"at {speed[m]['int8-static']:.2f}x"
            for m in big
        )
        + " (top1 change against eager fp32, latency against ORT fp32).",
        f"- Kit round trip, cold (export {k['files']} ONNX files, write the kit, probe every member at batch 1 and 8): "
        f"{k['total_s']:.0f} s (kit {k['kit_s']:.0f} s + probe {k['probe_s']:.0f} s); goal <= 120 s.",
        f"- target --latency-file at 3 budgets, each pick timed afresh by probe.py: "
        f"{sum(t['within'] for t in res['targets'])}/3 within budget.",
        "",
        "| budget ms | pick | precision | p90 in the latency file | fresh p90 | fresh median | within |",
        "|---" * 7 + "|",
    ]
    lines += [
        f"| {t['budget_ms']:.3f} | {t['pick']} | {t['precision']} | {t['p90_in_latency_file_ms']:.3f} | "
        f"{t['fresh_p90_ms']:.3f} | {t['fresh_median_ms']:.3f} | {'yes' if t['within'] else 'no'} |"
        for t in res["targets"]
    ]
    checks = [v for v in res["export_checks"].values() if v is not None]
    lines += [
        "",
        f"Export checks: {len(checks)} fp32 ONNX files, max |logit difference| against eager in ONNX Runtime "
        f"{max(checks):.1e} (tolerance 1e-4).",
        "",
    ]
    if res["meta"]["warnings"]:
        lines += ["Timing warnings of the last run: " + "; ".join(res["meta"]["warnings"]), ""]
    (RESULTS / "runtimes.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", default="pools/embedded")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parts", default="runtimes,kit,targets")
    a = ap.parse_args()
    parts = a.parts.split(",")
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    old = RESULTS / "runtimes.json"
    res = json.loads(old.read_text()) if set(parts) != {"runtimes", "kit", "targets"} and old.is_file() else {}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        pool = assembled_copy(Path(a.pool), work)
        if "runtimes" in parts:
            got = runtimes(pool, a.runs)
            res.update(
                {
                    "machine": f"{cpu_name()}, {os.cpu_count()} cores, 2 threads",
                    "runs": a.runs,
                    "summary": summarise(got["frames"], got["meta"]),
                    "meta": got["meta"],
                    "export_checks": export_checks(),
                }
            )
        if "kit" in parts or "targets" in parts:
            res["kit"] = kit_round_trip(pool, work)
            print(res["kit"], flush=True)
        if "targets" in parts:
            res["targets"] = targets(pool, work)
    res["seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "runtimes.json").write_text(json.dumps(res, indent=2, default=str))
    write_md(res)
    print(f"wrote {RESULTS / 'runtimes.md'} in {res['seconds']:.0f} s")


if __name__ == "__main__":
    main()
