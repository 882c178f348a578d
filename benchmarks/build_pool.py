"""Time `learngene build-pool` on the embedded default (ancestor already cached) and record
the auxiliary models' test accuracy against the ancestor's. Writes
benchmarks/results/build_pool.{json,md}.

    python benchmarks/build_pool.py
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

from common import cpu_name  # noqa: E402


def main():
    subprocess.run([sys.executable, "-m", "learngene.cli", "ancestor", "-q"], check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "embedded"
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "learngene.cli", "build-pool", "-q", "--out", str(out)],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        if r.returncode:
            sys.exit(r.stderr)
        m = json.loads((out / "pool.json").read_text())
    import torch

    res = {
        "command_seconds": round(wall, 1),
        "ancestor_test_top1": m["ancestor"]["test_top1"],
        "auxiliary": {n: {"params": a["params"], **a["metrics"], "init": a["init"]} for n, a in m["auxiliary"].items()},
        "instances": len(m["instances"]),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "build_pool.json").write_text(json.dumps(res, indent=2))
    lines = [
        "# `learngene build-pool` on the embedded default",
        "",
        "`python benchmarks/build_pool.py` (embedded ancestor cached; the whole command timed).",
        "",
        f"Machine: {res['machine']}.",
        "",
        f"Wall time of the command: **{res['command_seconds']} s** (goal <= 120 s). "
        f"Ancestor test top1 {res['ancestor_test_top1']}%.",
        "",
        "| auxiliary | init | params | epochs | test top1 | val top1 | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, a in res["auxiliary"].items():
        lines.append(
            f"| {n} | {a['init']} | {a['params'] / 1e6:.2f}M | {a['epochs']} | {a['test_top1']} | "
            f"{a['val_top1']} | {a['seconds']} |"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / "build_pool.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
