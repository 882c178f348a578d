"""target: the most accurate descendant within a latency (and optional accuracy / size)
budget on this device, from the latest bench report measured here, exported like assemble."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from learngene.errors import UserError
from learngene.pool import Pool

DESCENDANT_KINDS = ("narrow", "wide", "stitch")
# Which latency a budget holds: the report's p90 by default. A pick whose median was just
# under the budget ran over it in a fresh measurement (benchmarks/bench.py: 1.002x); the
# p90 of the same samples keeps the margin that a fresh measurement's noise needs.
LATENCY_STATS = {"p90": "infer_step_time_p90", "median": "infer_step_time"}


@dataclass
class TargetResult:
    chosen: dict  # the report row (at the budget's batch size)
    alternatives: list[dict]  # the two nearest: the next best that fits, the best just over budget
    child: Path
    report: Path
    measured_now: bool


def latest_report(pool: Pool, device: str, device_name: str, threads: int) -> Path | None:
    """The newest report of this pool measured on this device with this thread count, of
    the pool's current revision (older weights measured differently)."""
    rev = (pool.revision("latest") or {}).get("id", "r0")
    found = []
    for f in (pool.path / "reports").glob("*/frontier.json"):
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


def target(
    pool: str | os.PathLike | Pool = "pools/embedded",
    max_latency_ms: float | None = None,
    batch_size: int = 1,
    min_top1: float | None = None,
    max_params: float | None = None,
    latency: str = "p90",
    device: str = "cpu",
    threads: int | None = None,
    data=None,
    out: str | os.PathLike | None = None,
    force: bool = False,
    remeasure: bool = False,
    progress: bool = False,
) -> TargetResult:
    from learngene.assemble.api import Selection, assemble
    from learngene.assemble.export import check_child_dir
    from learngene.bench.api import bench, resolve_device, set_threads
    from learngene.bench.metrics import device_name

    if max_latency_ms is None or max_latency_ms <= 0:
        raise UserError("--max-latency-ms must be a positive number of milliseconds")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if latency not in LATENCY_STATS:
        raise UserError(f"unknown --latency {latency!r} (choose from {', '.join(LATENCY_STATS)})")
    dev = resolve_device(device)
    set_threads(threads)
    pool = pool if isinstance(pool, Pool) else Pool.open(pool)
    report = None if remeasure else latest_report(pool, str(dev), device_name(dev), torch.get_num_threads())
    rows = None
    if report is not None:
        rows = [r for r in json.loads((report / "frontier.json").read_text())["rows"] if r["infer_batch_size"] == batch_size]
    measured = not rows  # no report here, or none at this batch size: measure now
    if measured:
        fresh = bench(pool, device=device, batch_sizes=[batch_size], data=data, write=False, progress=progress)
        rows = fresh.df.to_dict("records")
    rows = [r for r in rows if r["kind"] in DESCENDANT_KINDS]
    best, alts = pick(rows, max_latency_ms, min_top1, max_params, latency)
    child = Path(out) if out else pool.path / "children" / best["model"]
    check_child_dir(child, force)
    if measured:  # written only now: a refused budget leaves nothing behind
        from learngene.bench.report import write_report

        report = write_report(fresh.df, fresh.meta, fresh.report)
    res = assemble(pool, Selection(config=best["model"]), train="none",
                   data=data, out=out, force=force, progress=lambda m: None)
    return TargetResult(best, alts, res.child, report, measured)
