"""The rules of `target`: which report was measured here, and the most accurate row within a
latency (and optional accuracy / size) budget. The flow (measure if needed, finish the pick,
export it) is `learngene.deploy.target`."""

from __future__ import annotations

import json
from pathlib import Path

from learngene.core.errors import UserError

# Which latency a budget holds: the report's p90 by default. A pick whose median was just
# under the budget ran over it in a fresh measurement (benchmarks/bench.py: 1.002x); the
# p90 of the same samples keeps the margin that a fresh measurement's noise needs.
LATENCY_STATS = {"p90": "infer_step_time_p90", "median": "infer_step_time"}


def latest_report(reports: Path, revision: str, device: str, device_name: str, threads: int) -> Path | None:
    """The newest report in ``reports`` measured on this device with this thread count, of
    this pool revision (older weights measured differently)."""
    rev = revision
    found = []
    for f in Path(reports).glob("*/frontier.json"):
        if f.parent.name.startswith("."):  # a killed bench's staging folder is no report
            continue
        try:
            meta = json.loads(f.read_text())["meta"]
        except (OSError, ValueError, KeyError):
            continue  # a foreign or broken file is not a report to trust
        if (meta.get("device"), meta.get("device_name"), meta.get("threads"), meta.get("revision")) == \
                (device, device_name, threads, rev):
            found.append((meta.get("created", ""), f.parent))
    return max(found)[1] if found else None


def pick(rows: list[dict], max_latency_ms: float, min_top1: float | None, max_params: float | None,
         latency: str) -> tuple[dict, list[dict]]:
    """The most accurate row within budget (ties: the faster), and the two nearest
    alternatives; ``latency`` names the statistic the budget holds (LATENCY_STATS).
    Nothing fits: a UserError naming the closest options."""
    col = LATENCY_STATS[latency]

    def fits(r):
        return (r[col] <= max_latency_ms and (min_top1 is None or r["top1"] >= min_top1)
                and (max_params is None or r["param_count"] * 1e6 <= max_params))

    ok = sorted((r for r in rows if fits(r)), key=lambda r: (-r["top1"], r[col]))
    over = sorted((r for r in rows if not fits(r)), key=lambda r: r[col])
    if not ok:
        near = ", ".join(f"{r['model']} ({r[col]:.2f} ms {latency}, top1 {r['top1']:.2f}%, {r['param_count']:.2f}M)"
                         for r in over[:2])
        raise UserError(f"no descendant fits --max-latency-ms {max_latency_ms:g}"
                        + (f" --min-top1 {min_top1:g}" if min_top1 is not None else "")
                        + (f" --max-params {max_params:g}" if max_params is not None else "") + f"; closest: {near}")
    best = ok[0]
    alts = ok[1:2] + [r for r in sorted(over, key=lambda r: -r["top1"]) if r["top1"] > best["top1"]][:1]
    return best, alts
