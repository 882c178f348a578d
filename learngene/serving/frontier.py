"""What the member choice knows of each member before the first request, in the runtime that
will serve it: its accuracy, its latency at one image and what each further image adds (from a
bench report's rows, or timed on the serving sessions themselves). Engine-free."""

from __future__ import annotations

import time

import numpy as np


def frontier_from_rows(rows: list[dict], members: list[str]) -> dict[str, dict]:
    """member -> {top1, latency_ms (p90, batch 1), per_image_ms, params} from a bench report's
    rows (of the runtime that serves): per_image_ms is the slope from the batch-1 p90 to the largest batch measured
    (bench measures 1 and 32), absent when only batch 1 was."""
    out, big = {}, {}
    p90 = lambda r: float(r.get("infer_step_time_p90") or r["infer_step_time"])  # noqa: E731
    for r in rows:
        if r["model"] not in members:
            continue
        n = int(r.get("infer_batch_size") or 1)
        if n == 1:
            out[r["model"]] = {
                "top1": float(r["top1"]),
                "latency_ms": p90(r),
                "params": float(r["param_count"]),
                "trained": bool(r.get("trained", True)),
            }
        elif n > big.get(r["model"], (0, 0.0))[0]:
            big[r["model"]] = (n, p90(r))
    for m, (n, ms) in big.items():
        if m in out:
            out[m]["per_image_ms"] = max(0.0, (ms - out[m]["latency_ms"]) / (n - 1))
    return out


def time_sessions(sessions: dict, input_shape: tuple, front: dict[str, dict], big: int = 32) -> None:
    """Put into ``front`` each ONNX Runtime session's own p90 at batch 1 and its per-image slope
    to batch ``big``: the serving sessions run with other options than bench's (no prepacking,
    no arena: that is what lets them share weights), so bench's timings would mislead the policy."""
    rng = np.random.default_rng(0)
    for member, sess in sessions.items():
        p90 = {}
        for n, runs in ((1, 30), (big, 8)):
            x = rng.standard_normal((n, *input_shape)).astype(np.float32)
            sess.run(None, {"images": x})  # warm-up
            ts = []
            for _ in range(runs):
                t = time.perf_counter()
                sess.run(None, {"images": x})
                ts.append((time.perf_counter() - t) * 1000)
            p90[n] = float(np.percentile(ts, 90))
        front[member]["latency_ms"] = p90[1]
        front[member]["per_image_ms"] = max(0.0, (p90[big] - p90[1]) / (big - 1))
