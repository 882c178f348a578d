"""`bench`: measure a pool's members on this device (accuracy, params, FLOPs, latency per runtime and
precision) into a frontier report; `_frontier`: the newest such report, or one measured now."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

import torch

from learngene.api._common import Request, _open, verb
from learngene.core.errors import UserError
from learngene.pool.store import Pool, Revision
from learngene.zoo import ancestor_of, children, member_ids, of_model, pick_members, pool_data, pool_zoo, resolve

INCLUDE = ("ancestor", "children", "adapted")


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
        from learngene.deltas.tasks import members as adapted

        members += adapted(pool, resolve)
    stitched = [m for m in zoo if m.kind == "stitch"]
    rev = pool.revision(revision)
    meta = {
        "pool": str(pool.path),
        "revision": Revision.of(rev).id,
        "stitches": f"{sum(m.trained for m in stitched)} of {len(stitched)} trained, the others at lstsq init",
    }
    return members, meta


@dataclass(frozen=True)
class BenchRequest(Request):
    pool: str | Path | Pool = "pools/embedded"
    _: KW_ONLY
    runtimes: str | Sequence = ("torch",)
    precisions: str | Sequence = ("fp32",)
    device: str = "cpu"
    threads: int | None = None
    batch_sizes: str | Sequence = (1, 32)
    data: str | Path | None = None
    include: str | Sequence = ()
    members: str | Sequence | None = None
    revision: str | None = "latest"
    out: str | Path | None = None
    min_run_time: float = 0.3
    num_workers: int | None = None
    write: bool = True
    progress: bool = False

    def check(self):
        from learngene.core import limits
        from learngene.measure.members import parse_batch_sizes, resolve_device
        from learngene.measure.runtimes import plan

        resolve_device(self.device)  # bad flags are refused before the pool is read
        parse_batch_sizes(self.batch_sizes)
        plan(self.runtimes, self.precisions)
        limits.threads(self.threads)
        limits.workers(self.num_workers)
        limits.float_in(self.min_run_time, "--min-run-time", 0.0, 600.0)
        inc = [self.include] if isinstance(self.include, str) else self.include
        self._set("include", tuple(i for i in inc or () if i))
        self._set("members", member_ids(self.members))
        bad = [i for i in self.include if i not in INCLUDE]
        if bad:
            raise UserError(f"unknown --include {bad[0]!r} (choose from {', '.join(INCLUDE)})")
        if self.out is not None and self.write and Path(self.out).exists():
            raise UserError(f"report folder exists: {self.out}")


@verb(BenchRequest)
def bench(r: BenchRequest):
    """Measure a pool's members on this device: accuracy in each runtime and precision, the kNN
    probe, params, FLOPs, latency (median, p90, spread) per batch size; the frontier report
    goes to ``POOL/reports/<device>-<time>/`` (``out``: elsewhere; ``write=False``: nowhere).

    Args:
        pool: the pool (a folder or a `Pool`).
        runtimes, precisions: ``torch`` / ``onnxruntime``; ``fp32`` / ``int8`` / ``int8-static``
            (lists, or comma-separated).
        device, threads: where (``cpu``, ``cuda``), with how many intra-op threads.
        batch_sizes: the batch sizes timed; min_run_time: seconds of timing per member and size.
        data: the pool's data (default: the embedded source it was built on).
        include: also ``ancestor``, ``children``, ``adapted`` (each delta on its own task).
        members: only these member ids (a list, or comma-separated; default: all). Such a report
            is partial: target, serve and kit never take it for the pool's frontier.
        revision: the pool revision measured.

    Returns a `BenchResult` (``.df``: one row per member, runtime, precision and batch size;
    ``.report``: where it went).
    """
    from learngene.measure.members import bench as measure
    from learngene.measure.members import resolve_device, set_threads

    dev = resolve_device(r.device)
    set_threads(r.threads)
    pool = _open(r.pool)
    dm = pool_data(pool, r.data, 64, r.num_workers, augment=False)
    members, meta = pool_members(pool, dm, revision=r.revision, include=r.include)
    if r.members:
        members = pick_members(members, r.members, pool.path)
        meta["members"] = list(r.members)  # a partial report (latest_report skips it)
    res = measure(
        members,
        dm,
        runtimes=r.runtimes,
        precisions=r.precisions,
        device=r.device,
        batch_sizes=r.batch_sizes,
        out=r.out,
        min_run_time=r.min_run_time,
        meta=meta,
        write=False,
        progress=r.progress,
    )
    res.report = Path(r.out) if r.out else pool.folder("reports") / f"{dev.type}-{res.meta['created']}"
    if r.write:
        from learngene.measure.report import write_report

        res.report = write_report(res.df, res.meta, res.report, unique=r.out is None)
    return res


def _frontier(
    pool: Pool,
    rev: str,
    runtime: str,
    precision: str,
    batch_size: int | tuple[int, ...],
    device: str,
    *,
    data=None,
    threads: int | None = None,
    remeasure: bool = False,
    progress: bool = False,
):
    """(report, its rows of this runtime, precision and batch size(s), measured now): the newest
    report of revision ``rev`` measured on this device with this thread count and runtime
    version, else a bench now, written at once (a measurement is kept even when what asked for
    it refuses afterwards, so the next call reads it instead of measuring again)."""
    from learngene.measure.budget import latest_report
    from learngene.measure.members import resolve_device
    from learngene.measure.metrics import device_name
    from learngene.measure.runtimes import plan

    sizes = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)

    def rows_of(report: Path) -> list[dict]:
        return [
            r
            for r in json.loads((report / "frontier.json").read_text())["rows"]
            if r["infer_batch_size"] in sizes
            and (r.get("runtime", "torch"), r.get("precision", "fp32")) == (runtime, precision)
        ]

    dev = resolve_device(device)
    versions = {runtime: plan([runtime], [precision])[0][0].version}
    if not remeasure:
        report = latest_report(pool.reports_dir, rev, str(dev), device_name(dev), torch.get_num_threads(), versions)
        rows = rows_of(report) if report is not None else []
        if any(r["infer_batch_size"] == sizes[0] for r in rows):  # the first size is the one needed
            return report, rows, False
    report = bench(
        pool,
        runtimes=[runtime],
        precisions=[precision],
        device=device,
        threads=threads,
        batch_sizes=list(sizes),
        revision=rev,
        data=data,
        progress=progress,
    ).report
    return report, rows_of(report), True
