"""From a pool to what runs on a device: the flows that compose stages.

- `bench_pool`: the members of a pool (its descendants, and on request its children, its
  ancestor and its stored deltas) measured by `learngene.bench` into POOL/reports/.
- `target`: the best member under a budget, from this device's newest report (or measured
  now), finished by `learngene.assemble` and exported.

Stages never import one another; this module is where they meet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from learngene.core.errors import UserError
from learngene.pool.store import Pool
from learngene.zoo import DESCENDANT_KINDS, ancestor_of, children, of_model, pool_zoo, resolve

INCLUDE = ("ancestor", "children", "adapted")


def _open(pool) -> Pool:
    return pool if isinstance(pool, Pool) else Pool.open(pool)


def pool_members(pool: Pool, dm, *, revision: str | None = "latest", include=()) -> tuple[list, dict]:
    """(members, report meta): every descendant (as the revision holds it; a pool never
    assembled has least-squares stitches), then what ``include`` asks for."""
    bad = [i for i in include if i not in INCLUDE]
    if bad:
        raise UserError(f"unknown --include {bad[0]!r} (choose from {', '.join(INCLUDE)})")
    zoo = pool_zoo(pool, revision, dm=dm)
    members = list(zoo)
    if "children" in include:
        members += children(pool)
    if "ancestor" in include:
        members.append(of_model(ancestor_of(pool), "ancestor", "ancestor"))
    if "adapted" in include:
        from learngene.adapt.api import members as adapted

        members += adapted(pool, resolve)
    stitched = [m for m in zoo if m.kind == "stitch"]
    rev = pool.revision(revision)
    meta = {"pool": str(pool.path), "revision": (rev or {}).get("id", "r0"),
            "stitches": f"{sum(m.trained for m in stitched)} of {len(stitched)} trained, the others at lstsq init"}
    return members, meta


def bench_pool(pool="pools/embedded", *, device: str = "cpu", threads: int | None = None, batch_sizes=(1, 32), data=None,
               include=(), revision: str | None = "latest", out=None, min_run_time: float = 0.3,
               num_workers: int | None = None, write: bool = True, progress: bool = False):
    """Measure a pool's members on this device; the report goes to POOL/reports/<device>-<time>/."""
    from learngene.assemble.api import pool_data
    from learngene.bench.api import bench, parse_batch_sizes, resolve_device, set_threads

    dev = resolve_device(device)  # bad flags are refused before the pool is read
    parse_batch_sizes(batch_sizes)
    set_threads(threads)
    include = [i for i in ([include] if isinstance(include, str) else include) if i]
    pool = _open(pool)
    report = Path(out) if out else pool.reports_dir / f"{dev.type}-{time.strftime('%Y%m%dT%H%M%S')}"
    if write and report.exists():
        raise UserError(f"report folder exists: {report}")
    dm = pool_data(pool, data, 64, num_workers, augment=False)
    members, meta = pool_members(pool, dm, revision=revision, include=include)
    return bench(members, dm, device=device, batch_sizes=batch_sizes, out=report, min_run_time=min_run_time,
                 meta=meta, write=write, progress=progress)


@dataclass
class TargetResult:
    chosen: dict  # the report row (at the budget's batch size)
    alternatives: list[dict]  # the two nearest: the next best that fits, the best just over budget
    child: Path
    report: Path
    measured_now: bool


def target(pool="pools/embedded", *, max_latency_ms: float | None = None, batch_size: int = 1,
           min_top1: float | None = None, max_params: float | None = None, latency: str = "p90", device: str = "cpu",
           threads: int | None = None, data=None, out=None, force: bool = False, remeasure: bool = False,
           progress: bool = False) -> TargetResult:
    """The most accurate descendant within the budget on this device, exported as assemble
    exports a child. Nothing fits: a one-line error naming the closest, nothing written."""
    import json

    from learngene.assemble.api import assemble
    from learngene.assemble.select import Selection
    from learngene.bench.api import resolve_device, set_threads
    from learngene.bench.budget import LATENCY_STATS, latest_report, pick
    from learngene.bench.metrics import device_name
    from learngene.core.io import check_output

    if max_latency_ms is None or max_latency_ms <= 0:
        raise UserError("--max-latency-ms must be a positive number of milliseconds")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if latency not in LATENCY_STATS:
        raise UserError(f"unknown --latency {latency!r} (choose from {', '.join(LATENCY_STATS)})")
    dev = resolve_device(device)
    set_threads(threads)
    pool = _open(pool)
    rev = (pool.revision("latest") or {}).get("id", "r0")
    report = None if remeasure else latest_report(pool.reports_dir, rev, str(dev), device_name(dev), torch.get_num_threads())
    rows = None
    if report is not None:
        rows = [r for r in json.loads((report / "frontier.json").read_text())["rows"] if r["infer_batch_size"] == batch_size]
    measured = not rows  # no report here, or none at this batch size: measure now
    if measured:
        fresh = bench_pool(pool, device=device, batch_sizes=[batch_size], data=data, write=False, progress=progress)
        rows = fresh.df.to_dict("records")
    rows = [r for r in rows if r["kind"] in DESCENDANT_KINDS]
    best, alts = pick(rows, max_latency_ms, min_top1, max_params, latency)
    check_output(Path(out) if out else pool.children_dir / best["model"], force, "child")
    if measured:  # written only now: a refused budget leaves nothing behind
        from learngene.bench.report import write_report

        report = write_report(fresh.df, fresh.meta, fresh.report)
    res = assemble(pool, selection=Selection(config=best["model"]), train="none", data=data, out=out, force=force,
                   progress=lambda m: None)
    return TargetResult(best, alts, res.child, report, measured)
