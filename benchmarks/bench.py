"""`learngene bench` and `learngene target` on the embedded pool: the wall time of the whole
bench command, and whether target's pick holds its latency budget in a fresh measurement.
Budgets: halfway between neighbouring batch-1 latencies of the report at its 25th, 50th and
75th percentile; the exported child is loaded back through timm and timed again (interleaved
repeats, median). Writes benchmarks/results/bench.{md,json}.

    learngene build-pool && learngene assemble --all   # once
    python benchmarks/bench.py [--pool pools/embedded]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def cli(*args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "learngene.cli", *args], capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr)
    return time.perf_counter() - t0, r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", default="pools/embedded")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    import timm

    import learngene  # noqa: F401  (registers the stitched architecture with timm)
    from learngene.measure.metrics import device_name, latency

    threads = torch.get_num_threads()
    res = {
        "machine": f"{device_name(torch.device('cpu'))}, {os.cpu_count()} cores, {threads} threads, "
        f"torch {torch.__version__}"
    }
    with tempfile.TemporaryDirectory() as d:
        pool = Path(d) / "pool"
        shutil.copytree(a.pool, pool, ignore=shutil.ignore_patterns("reports", "children"))
        secs, _ = cli("bench", "--pool", str(pool), "-q")
        res["bench_s"] = secs
        report = next((pool / "reports").glob("cpu-*/frontier.json"))
        rows = json.loads(report.read_text())["rows"]
        res["revision"] = json.loads(report.read_text())["meta"]["revision"]
        res["models"] = len({r["model"] for r in rows})
        b1 = sorted(r["infer_step_time"] for r in rows if r["infer_batch_size"] == 1)
        res["targets"] = []
        for q in (0.25, 0.5, 0.75):
            i = int(q * (len(b1) - 1))
            budget = (b1[i] + b1[i + 1]) / 2  # between two measured points, as a user's budget would be
            secs, out = cli("target", "--pool", str(pool), "--max-latency-ms", f"{budget:.6f}", "--json", "--force")
            got = json.loads(out)
            child = timm.create_model(f"local-dir:{got['child']}", pretrained=True).eval()
            img = got["chosen"]["infer_img_size"]
            fresh = statistics.median(
                latency(child, 1, img, torch.device("cpu"))["median_s"] * 1e3 for _ in range(a.repeats)
            )
            res["targets"].append(
                {
                    "quantile": q,
                    "budget_ms": budget,
                    "chosen": got["chosen"]["model"],
                    "report_ms": got["chosen"]["infer_step_time"],
                    "report_p90_ms": got["chosen"]["infer_step_time_p90"],
                    "top1": got["chosen"]["top1"],
                    "fresh_ms": fresh,
                    "within": fresh <= budget,
                    "target_s": secs,
                }
            )
            print(res["targets"][-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench.json").write_text(json.dumps(res, indent=2))
    lines = [
        "# `learngene bench` and `learngene target` on the embedded pool",
        "",
        f"`python benchmarks/bench.py`. Machine: {res['machine']}. Pool revision {res['revision']}, "
        f"{res['models']} descendants, batch sizes 1 and 32.",
        "",
        f"Wall time of the whole `learngene bench` command: **{res['bench_s']:.1f} s** (goal <= 60 s).",
        "",
        "`learngene target --max-latency-ms X` (batch 1; the default rule: the report's p90 within X), X "
        "halfway between neighbouring batch-1 latencies of the report at these quantiles; "
        f"the exported child loaded back through timm and timed again (median of {a.repeats} measurements):",
        "",
        "| quantile | budget ms | chosen | top1 | report median ms | report p90 ms | fresh ms | fresh / budget "
        "| within |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in res["targets"]:
        lines.append(
            f"| {t['quantile']} | {t['budget_ms']:.3f} | {t['chosen']} | {t['top1']:.2f} | {t['report_ms']:.3f} "
            f"| {t['report_p90_ms']:.3f} | "
            f"{t['fresh_ms']:.3f} | {t['fresh_ms'] / t['budget_ms']:.3f} | {'yes' if t['within'] else 'no'} |"
        )
    lines.append("")
    (RESULTS / "bench.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
