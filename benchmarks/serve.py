"""`learngene serve` under load, on localhost only: a closed-loop sweep of concurrency (each
client sends its next request when the last one answered; every loop stops by itself after
--seconds), through tritonclient.http, the standard v2 client.

Three ways to serve, at one SLO: the largest member alone, the smallest alone, and the pool's
virtual model that picks per request (`learngene.serving.policy`). Per way and concurrency:
throughput, p50 / p99 latency, SLO attainment (503s count as misses), mean test top1 of the
members that answered (from the frontier), and what answered. Then memory: the inference
worker's resident memory while serving every member on shared blocks, and the bytes of the
members' weights held once (the pool) against one copy per member (separate models).

    python benchmarks/serve.py [--pool pools/embedded] [--slo-ms auto] [--seconds 8]
        [--concurrency 1,2,3,4,6,8,12,16] [--threads 2] [--images 1] [--runtimes onnxruntime,torch]

Both runtimes side by side in one run, each at its own SLO (2x its largest member's idle p50),
one server after the other; the first (onnxruntime) is what `learngene serve` runs by default
where it is installed. Writes benchmarks/results/serve.{json,md} (``--images N`` > 1:
serve_images<N>.{json,md}), with ONNX Runtime's sessions' memory shared against one session
per member.
``--images``: images per request. At the embedded scale one 16 px image costs a member 1-5
ms against ~12 ms of HTTP and queues, so with one image per request no choice of member can
change the load a server holds; a request of 16 images (a client sending a batch, or as
much compute as one image of a DeiT-scale member) makes the model the cost. The pool is built
and assembled first when missing (the README's main job).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from common import RESULTS, cpu_name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(pool: str, port: int, threads: int, runtime: str = "torch", extra=(), log=None) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-m", "learngene.cli", "serve", pool, "--port", str(port), "--threads", str(threads)]
        + ["--max-queue", "256", "--runtime", runtime, *extra],
        stdout=subprocess.DEVNULL,
        stderr=log or subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    t = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return p
        except OSError:
            pass
        if p.poll() is not None:
            sys.exit(f"serve exited: {p.stderr.read()[-2000:] if p.stderr else 'see its log'}")
        if time.monotonic() - t > 600:
            sys.exit("serve: not ready in 600 s")
        time.sleep(0.5)


def load(
    port: int, model: str, concurrency: int, seconds: float, shape, slo_ms: float, budget: bool, images: int = 1
) -> dict:
    import tritonclient.http as httpclient

    x = np.random.default_rng(0).standard_normal((images, *shape)).astype(np.float32)
    lat, members, codes = [], [], {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client():
        c = httpclient.InferenceServerClient(f"127.0.0.1:{port}", connection_timeout=30, network_timeout=30)
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        while time.monotonic() < stop:  # bounded: every loop ends by itself
            t0 = time.perf_counter()
            try:
                r = c.infer(model, [inp], parameters={"max_latency_ms": slo_ms} if budget else None)
                ms, code, m = (time.perf_counter() - t0) * 1000, 200, r.get_response()["parameters"]["member"]
            except Exception as e:  # 503 under overload: a miss, counted
                ms, code, m = None, int(getattr(e, "status", lambda: 0)() or 0), None
                time.sleep(0.005)
            with lock:
                codes[code] = codes.get(code, 0) + 1
                if ms is not None:
                    lat.append(ms)
                    members.append(m)

    ts = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    total = sum(codes.values())
    a = np.array(lat) if lat else np.array([np.nan])
    served: dict[str, int] = {}
    for m in members:
        served[m] = served.get(m, 0) + 1
    return {
        "concurrency": concurrency,
        "requests": total,
        "ok": len(lat),
        "codes": {str(k): v for k, v in codes.items()},
        "throughput": round(len(lat) / wall, 1),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "attainment": round(float((a <= slo_ms).sum()) / max(1, total), 4),
        "served": served,
    }


def worker_rss_mib(server: subprocess.Popen) -> float:
    """The inference worker's resident memory (the server's child that holds the models)."""
    best = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            st = Path(f"/proc/{pid}/status").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in st.splitlines() if line.startswith("PPid:")))
        if ppid == server.pid and b"spawn_main" in cmd:
            rss = int(next(line.split()[1] for line in st.splitlines() if line.startswith("VmRSS:")))
            best = max(best, rss / 1024)
    return round(best, 1)


MEMORY = r"""
import json, sys, torch
from learngene.pool.store import Pool
from learngene.stitch.stitched import count_params
pool = Pool.open(sys.argv[1]); pm, _ = pool.model("latest")
shared = sum(t.numel() * t.element_size() for t in pm.state_dict().values())
separate = 0
for s in pm.specs:
    m = pm.descendant(s)
    separate += sum(t.numel() * t.element_size() for t in m.state_dict().values())
print(json.dumps({"shared_mib": shared / 2**20, "separate_mib": separate / 2**20, "members": len(pm.specs)}))
"""


# ONNX Runtime: each member's file in a session of its own (default options: what a user
# serving them as separate models gets) against the serving worker's sessions on shared
# initializers; resident memory added by the sessions after one request of IMAGES each
MEMORY_ORT = r"""
import json, sys
import numpy as np
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
def main():
    from learngene.onnx_cache import member_onnx_files
    from learngene.onnx_sessions import ort_session, shared_ort_sessions
    from learngene.pool.store import Pool
    from learngene.zoo import DESCENDANT_KINDS, pool_data, pool_zoo
    pool = Pool.open(sys.argv[1]); mode = sys.argv[2]; n = int(sys.argv[3]); threads = int(sys.argv[4])
    zoo = pool_zoo(pool, pool.head("latest").id, dm=pool_data(pool, None, 64, augment=False))
    paths = member_onnx_files([m for m in zoo if m.kind in DESCENDANT_KINDS])
    base, stats = rss(), {}
    if mode == "shared":
        sessions, stats = shared_ort_sessions(paths, threads)
    else:
        sessions = {k: ort_session(p, threads) for k, p in paths.items()}
    x = np.zeros((n, *pool.data_config["input_size"]), np.float32)
    for s in sessions.values():
        s.run(None, {"images": x})
    print(json.dumps({"rss_mib": rss() - base, "members": len(sessions), **stats}))
if __name__ == "__main__":
    main()
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", default="pools/embedded")
    ap.add_argument("--slo-ms", default="auto", help="auto: 2x the largest member's idle end-to-end p50")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", default="1,2,3,4,6,8,12,16")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--images", type=int, default=1, help="images per request (1..64)")
    ap.add_argument("--runtimes", default="onnxruntime,torch", help="each served in turn, the default first")
    a = ap.parse_args()
    if not 1 <= a.images <= 64:
        sys.exit("--images: 1..64")
    runtimes = [r.strip() for r in a.runtimes.split(",") if r.strip()]
    if not runtimes or any(r not in ("torch", "onnxruntime") for r in runtimes):
        sys.exit("--runtimes: torch and/or onnxruntime")
    stem = "serve" if a.images == 1 else f"serve_images{a.images}"
    pool, largest, smallest = served_pool(a.pool)
    out = {
        "runs": {},
        "pool": a.pool,
        "images": a.images,
        "command": "python benchmarks/serve.py " + " ".join(sys.argv[1:]),
    }
    for runtime in runtimes:
        out["runs"][runtime] = serve_and_load(a, pool, largest, smallest, runtime)
    mem = subprocess.run([sys.executable, "-c", MEMORY, a.pool], capture_output=True, text=True, check=True)
    out["memory"] = json.loads(mem.stdout)
    if "onnxruntime" in runtimes:
        for mode in ("separate", "shared"):
            ort = subprocess.run(
                [sys.executable, "-c", MEMORY_ORT, a.pool, mode, str(a.images), str(a.threads)],
                capture_output=True,
                text=True,
                check=True,
            )
            out["memory"][f"ort_{mode}"] = json.loads(ort.stdout.strip().splitlines()[-1])
    res = out
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=2))
    write_md(res, stem)
    print(f"wrote {RESULTS / f'{stem}.md'}")


def served_pool(path: str):
    """The pool served (built and assembled on the embedded default when it is not there yet),
    its largest and its smallest member."""
    if not (Path(path) / "pool.json").exists():
        for argv in (["build-pool", "--out", path], ["assemble", "--pool", path, "--all"]):
            subprocess.run([sys.executable, "-m", "learngene.cli", *argv, "-q"], check=True)
    import learngene as lg

    pool = lg.Pool.open(path)
    rows = lg.descendants(pool)
    return pool, max(rows, key=lambda r: r["params"])["id"], min(rows, key=lambda r: r["params"])["id"]


def serve_and_load(a, pool, largest: str, smallest: str, runtime: str) -> dict:
    """One server of ``runtime``: its SLO, then every way at every concurrency."""
    port = free_port()
    server = start(a.pool, port, a.threads, runtime)  # its frontier is measured now if this host has no report
    meta = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{pool.path.name}").read())
    front = meta["parameters"]["members"]
    shape = tuple(pool.data_config["input_size"])
    if a.slo_ms == "auto":  # twice what the largest member takes end to end (HTTP included) when idle
        warm = load(port, largest, 1, min(3.0, a.seconds), shape, 1e9, budget=False, images=a.images)
        slo = 2 * warm["p50_ms"]
    else:
        slo = float(a.slo_ms)
    res = {
        # the cores this run may use (taskset pins it to fewer than the machine has)
        "machine": f"{cpu_name()}, {len(os.sched_getaffinity(0))} of {os.cpu_count()} cores, "
        f"{a.threads} inference thread(s)",
        "slo_ms": round(slo, 3),
        "runtime": runtime,
        "largest": largest,
        "smallest": smallest,
        "frontier": front,
        "ways": {},
    }
    try:
        for way, model in (("largest", largest), ("smallest", smallest), ("adaptive", pool.path.name)):
            res["ways"][way] = []
            for c in [int(v) for v in a.concurrency.split(",")]:
                # the adaptive way carries the SLO as the request's budget (what --slo-ms sets for all)
                r = load(port, model, c, a.seconds, shape, slo, budget=way == "adaptive", images=a.images)
                n = sum(r["served"].values()) or 1
                r["mean_top1"] = round(sum(front[m]["top1"] * k for m, k in r["served"].items()) / n, 2)
                res["ways"][way].append(r)
                print(
                    f"{runtime} {way} c={c}: {r['throughput']}/s p99 {r['p99_ms']} ms, "
                    f"attainment {r['attainment']:.1%}",
                    flush=True,
                )
        res["worker_rss_mib"] = worker_rss_mib(server)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
    return res


def held(rows: list[dict]) -> float:
    """The highest throughput at which a way still held >= 95% SLO attainment."""
    return max([r["throughput"] for r in rows if r["attainment"] >= 0.95] or [0.0])


def write_md(res: dict, stem: str = "serve") -> None:
    runs = res["runs"]
    first = next(iter(runs.values()))
    lines = [
        "# learngene serve under load",
        "",
        f"`{res.get('command', 'python benchmarks/serve.py')}` on {first['machine']}; pool `{res['pool']}`; "
        f"closed loops through tritonclient.http on localhost, {res.get('images', 1)} image(s) per request (the "
        "adaptive way's requests carry the SLO as `max_latency_ms`), LitServe's dynamic batching on the server. "
        "Each runtime in turn, in one run, at its own SLO: 2x its largest member's idle end-to-end p50 through the "
        f"server. `learngene serve` runs {next(iter(runs))} by default where it is installed (`--runtime auto`).",
        "",
    ]
    for runtime, run in runs.items():
        h = {w: held(rows) for w, rows in run["ways"].items()}
        big = run["frontier"][run["largest"]]["top1"]
        ada = [r for r in run["ways"].get("adaptive", []) if r["attainment"] >= 0.95]
        ada_top1 = max(ada, key=lambda r: r["throughput"])["mean_top1"] if ada else float("nan")
        lines += [
            f"## {runtime}, SLO {run['slo_ms']:.2f} ms",
            "",
            f"- **Load held at >= 95% attainment: adaptive {h.get('adaptive', 0)} req/s, "
            f"{h.get('adaptive', 0) / max(h.get('largest', 0), 1e-9):.2f}x the largest member alone** "
            f"({h.get('largest', 0)} req/s; the smallest alone {h.get('smallest', 0)}); goal >= 2x. Mean top1 served "
            f"there {ada_top1} vs the largest's {big} (goal: within 2 points).",
            f"- The inference worker's resident memory while serving all of them: {run.get('worker_rss_mib')} MiB.",
            "",
            "| way | concurrency | req/s | p50 ms | p99 ms | SLO attainment | mean top1 served | answered by |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for way, rows in run["ways"].items():
            for r in rows:
                by = ", ".join(f"{m} {k}" for m, k in sorted(r["served"].items(), key=lambda kv: -kv[1])[:3])
                lines.append(
                    f"| {way} | {r['concurrency']} | {r['throughput']} | {r['p50_ms']} | {r['p99_ms']} | "
                    f"{r['attainment']:.1%} | {r['mean_top1']} | {by} |"
                )
        lines.append("")
    m = res["memory"]
    lines += [
        "## Memory",
        "",
        f"- The {m['members']} members' weights held once (the pool) {m['shared_mib']:.2f} MiB against "
        f"{m['separate_mib']:.2f} MiB as separate models ({m['shared_mib'] / m['separate_mib']:.2f}x; goal <= 0.6x).",
    ]
    if "ort_shared" in m:
        sh, sep = m["ort_shared"], m["ort_separate"]
        lines.append(
            f"- ONNX Runtime: the serving sessions hold {sh['bytes_held'] / 2**20:.2f} MiB of weights where the "
            f"{sh['members']} files hold {sh['bytes_files'] / 2**20:.2f} MiB "
            f"({sh['bytes_held'] / sh['bytes_files']:.2f}x);"
            f" resident memory the sessions add after a request each: shared {sh['rss_mib']:.1f} MiB, separate "
            f"sessions (one per member, default options) {sep['rss_mib']:.1f} MiB "
            f"({sh['rss_mib'] / sep['rss_mib']:.2f}x: the rest is each session's own graph and kernels)."
        )
    lines.append("")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
