"""`learngene serve --engine ray`: throughput with 1 and 2 Ray Serve replicas, side by side in
one run, on the largest member at one image a request (each replica 1 intra-op thread, so two
replicas use the two cores one would leave idle). Results: results/serve_ray.{json,md}.

    python benchmarks/serve_ray.py [--pool pools/embedded] [--seconds 6] [--concurrency 1,2,4,8]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, cpu_name  # noqa: E402
from serve import free_port, load, served_pool, start  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", default="pools/embedded")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--concurrency", default="1,2,4,8")
    ap.add_argument("--replicas", default="1,2")
    ap.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "torch"])
    a = ap.parse_args()
    pool, largest, _ = served_pool(a.pool)
    shape = tuple(pool.data_config["input_size"])
    out = {
        "machine": f"{cpu_name()}, {len(os.sched_getaffinity(0))} of {os.cpu_count()} cores",
        "member": largest,
        "runtime": a.runtime,
        "command": "python benchmarks/serve_ray.py " + " ".join(sys.argv[1:]),
        "runs": {},
    }
    for n in [int(v) for v in a.replicas.split(",")]:
        port = free_port()
        with tempfile.TemporaryFile("w+") as log:
            t0 = time.monotonic()
            server = start(a.pool, port, 1, a.runtime, ["--engine", "ray", "--replicas", str(n)], log=log)
            ready_s = time.monotonic() - t0
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{largest}").read()
                run = {"ready_s": round(ready_s, 1), "loads": []}
                for c in [int(v) for v in a.concurrency.split(",")]:
                    r = load(port, largest, c, a.seconds, shape, 1e9, budget=False)
                    run["loads"].append(r)
                    print(f"ray {n} replica(s) c={c}: {r['throughput']}/s p99 {r['p99_ms']} ms", flush=True)
                out["runs"][str(n)] = run
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(120)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve_ray.json").write_text(json.dumps(out, indent=2))
    best = {n: max(r["throughput"] for r in run["loads"]) for n, run in out["runs"].items()}
    loads = next(iter(out["runs"].values()))["loads"]
    lines = [
        "# Serving on Ray Serve: replicas side by side",
        "",
        f"`{out['command']}` on {out['machine']}; member `{largest}` ({a.runtime}), one image a request, "
        "each replica 1 intra-op thread, the unmodified tritonclient over loopback.",
        "",
        "| replicas | ready (s) | " + " | ".join(f"c={r['concurrency']} req/s (p99 ms)" for r in loads) + " |",
        "|---|---|" + "---|" * len(loads),
    ]
    for n, run in out["runs"].items():
        cells = " | ".join(f"{r['throughput']} ({r['p99_ms']})" for r in run["loads"])
        lines.append(f"| {n} | {run['ready_s']} | {cells} |")
    if "1" in best and "2" in best and best["1"]:
        lines += ["", f"Best throughput, 2 replicas over 1: {best['2'] / best['1']:.2f}x."]
    (RESULTS / "serve_ray.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'serve_ray.md'}")


if __name__ == "__main__":
    main()
