"""The timing harness of probe.py and of `learngene bench`: interleaved rounds (a busy spell
lands on every member alike), median / p90 / spread, the warnings a noisy timing earns, and the
machine it ran on. Needs only Python 3.9+ and numpy: it is copied into every device kit beside
probe.py."""

from __future__ import annotations

import hashlib
import os
import platform
import time
from pathlib import Path

import numpy as np

WIDE_SPREAD = 0.5  # (p90 - p10) / median above this: the timing is not to be trusted
# Between two functions of a round: ONNX Runtime's (and OpenMP's) idle threads spin-wait for
# a while after a run, and measured right after another session, a model ran ~2x slower
# (0.71 vs 0.37 ms) with 2x the spread; after a 50 ms pause it matched being timed alone.
SETTLE_S = 0.05


# --------------------------------------------------------------------------- the harness


def time_interleaved(
    fns: dict,
    min_run_time: float = 0.3,
    rounds: int = 5,
    sample_s: float = 0.005,
    warmup: int = 3,
    settle_s: float = SETTLE_S,
) -> dict:
    """Seconds per call of each function of ``fns`` (name -> callable), timed in interleaved
    rounds: every round times every function for ``min_run_time / rounds`` seconds, in an
    order that rotates from round to round, so whatever else runs on the machine lands on
    all of them alike instead of on whichever was being timed; between two functions the
    harness pauses ``settle_s`` and makes one untimed call. A sample is the mean of n
    calls, n chosen so a sample lasts ~``sample_s`` (timer overhead negligible). Returns per
    name: median_s, p90_s, p10_s, spread ((p90 - p10) / median), samples, round_medians_s."""
    names = list(fns)
    calls = {}
    for name in names:
        fn = fns[name]
        for _ in range(warmup):  # allocator, kernels, caches
            fn()
        est = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            est.append(time.perf_counter() - t0)
        calls[name] = max(1, int(sample_s / max(sorted(est)[1], 1e-7)))
    per_round = min_run_time / rounds
    samples = {n: [] for n in names}
    by_round = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn, n, spent, got = fns[name], calls[name], 0.0, []
            if settle_s:  # the previous function's idle threads stop spinning; one untimed call wakes ours
                time.sleep(settle_s)
                fn()
            while spent < per_round or len(got) < 2:
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                dt = time.perf_counter() - t0
                got.append(dt / n)
                spent += dt
            samples[name] += got
            by_round[name].append(float(np.median(got)))
    out = {}
    for name in names:
        s = np.asarray(samples[name])
        med = float(np.median(s))
        p10, p90 = (float(np.quantile(s, q)) for q in (0.1, 0.9))
        out[name] = {
            "median_s": med,
            "p90_s": p90,
            "p10_s": p10,
            "spread": (p90 - p10) / med if med > 0 else 0.0,
            "samples": int(len(s)),
            "round_medians_s": by_round[name],
        }
    return out


def timing_warnings(stats: dict, load_before: float | None, load_after: float | None, threads: int) -> list[str]:
    """Why the figures may not hold: the machine was busy (the 1-minute load average above its
    cores, our own threads discounted after the run), or a member's spread is wide."""
    cores = os.cpu_count() or 1
    warns = []
    busy = max(load_before or 0.0, (load_after or 0.0) - threads)
    if busy > cores:
        warns.append(f"load average {busy:.1f} exceeded the {cores} cores while timing: latencies may be inflated")
    wide = [n for n, s in stats.items() if s["spread"] > WIDE_SPREAD]
    if wide:
        warns.append(
            f"wide spread ((p90 - p10) / median > {WIDE_SPREAD:.0%}) for {', '.join(map(str, wide[:5]))}"
            + (f" and {len(wide) - 5} more" if len(wide) > 5 else "")
            + ": rerun on a quiet machine"
        )
    return warns


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def machine() -> dict:
    """What a figure was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip()
            if key in ("model name", "Model", "Hardware"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "node": platform.node(),
    }


def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
