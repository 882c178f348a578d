"""From a pool to what runs on a device: the flows that compose stages.

- `bench_pool`: the members of a pool (its descendants, and on request its children, its
  ancestor and its stored deltas) measured by `learngene.bench` in each runtime and precision
  asked for, into POOL/reports/.
- `target`: the best descendant under a budget, from this device's newest report (or
  measured now) or from a device's own latency.json (`--latency-file`); an untrained pick is
  trained first (`learngene.assemble`), then exported in the format the device runs.
- `kit`: a folder to copy to the device (ONNX files, kit.json, probe.py).
- `export`: any member in any format.

Stages never import one another; this module is where they meet.
"""

from __future__ import annotations

import json
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


def bench_pool(pool="pools/embedded", *, runtimes=("torch",), precisions=("fp32",), device: str = "cpu",
               threads: int | None = None, batch_sizes=(1, 32), data=None, include=(), revision: str | None = "latest",
               out=None, min_run_time: float = 0.3, num_workers: int | None = None, write: bool = True,
               progress: bool = False):
    """Measure a pool's members on this device; the report goes to POOL/reports/<device>-<time>/."""
    from learngene.assemble.api import pool_data
    from learngene.bench.api import bench, parse_batch_sizes, resolve_device, set_threads
    from learngene.bench.runtimes import plan

    dev = resolve_device(device)  # bad flags are refused before the pool is read
    parse_batch_sizes(batch_sizes)
    plan(runtimes, precisions)
    set_threads(threads)
    include = [i for i in ([include] if isinstance(include, str) else include) if i]
    pool = _open(pool)
    if out is not None and write and Path(out).exists():
        raise UserError(f"report folder exists: {out}")
    dm = pool_data(pool, data, 64, num_workers, augment=False)
    members, meta = pool_members(pool, dm, revision=revision, include=include)
    res = bench(members, dm, runtimes=runtimes, precisions=precisions, device=device, batch_sizes=batch_sizes,
                out=out, min_run_time=min_run_time, meta=meta, write=False, progress=progress)
    res.report = Path(out) if out else pool.folder("reports") / f"{dev.type}-{res.meta['created']}"
    if write:
        from learngene.bench.report import write_report

        res.report = write_report(res.df, res.meta, res.report, unique=out is None)
    return res


@dataclass
class TargetResult:
    chosen: dict  # the row picked (at the budget's batch size)
    alternatives: list[dict]  # the two nearest: the next best that fits, the best just over budget
    child: Path
    report: Path  # the report or latency file the pick was made from
    measured_now: bool
    trained: bool = False  # the pick was trained before export


def _finish(pool: Pool, row: dict, *, data, out, force: bool, train: bool, fmt: str, precision: str,
            name: str | None = None) -> tuple[Path, bool]:
    """Export a picked descendant, training it first when it is not trained yet."""
    from learngene.assemble.api import assemble
    from learngene.assemble.select import Selection

    untrained = not row.get("trained", True)
    res = assemble(pool, selection=Selection(config=row["model"]), train="auto" if train and untrained else "none",
                   data=data, out=out or (pool.children_dir / name if name else None), force=force, fmt=fmt,
                   precision=precision, progress=lambda m: None)
    return res.child, train and untrained


def target(pool="pools/embedded", *, max_latency_ms: float | None = None, batch_size: int = 1,
           min_top1: float | None = None, max_params: float | None = None, latency: str = "p90",
           runtime: str = "torch", precision: str | None = None, device: str = "cpu", threads: int | None = None, data=None,
           out=None, force: bool = False, remeasure: bool = False, train: bool = True, fmt: str | None = None,
           latency_file=None, progress: bool = False) -> TargetResult:
    """The most accurate descendant within the budget, exported: from this device's newest
    report in ``runtime`` / ``precision`` (measured now if none), or from a device's own
    ``latency_file`` (``precision`` None: fp32 for a report, every precision the device
    timed for a latency file). Nothing fits: a one-line error naming the closest, nothing written."""
    from learngene.bench.api import resolve_device, set_threads
    from learngene.bench.budget import LATENCY_STATS, latest_report, pick
    from learngene.bench.metrics import device_name
    from learngene.bench.runtimes import plan
    from learngene.core.export import FORMATS
    from learngene.core.io import check_output

    if max_latency_ms is None or max_latency_ms <= 0:
        raise UserError("--max-latency-ms must be a positive number of milliseconds")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if latency not in LATENCY_STATS:
        raise UserError(f"unknown --latency {latency!r} (choose from {', '.join(LATENCY_STATS)})")
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r} (choose from {', '.join(FORMATS)})")
    pool = _open(pool)
    if latency_file is not None:
        return _target_on_device(pool, latency_file, max_latency_ms=max_latency_ms, batch_size=batch_size,
                                 min_top1=min_top1, max_params=max_params, latency=latency, precision=precision,
                                 data=data, out=out, force=force, train=train, fmt=fmt or "onnx")
    precision = precision or "fp32"
    plan([runtime], [precision])
    dev = resolve_device(device)
    set_threads(threads)
    rev = (pool.revision("latest") or {}).get("id", "r0")
    report = None if remeasure else latest_report(pool.reports_dir, rev, str(dev), device_name(dev), torch.get_num_threads())
    rows = None
    if report is not None:
        rows = [r for r in json.loads((report / "frontier.json").read_text())["rows"]
                if r["infer_batch_size"] == batch_size and (r.get("runtime", "torch"), r.get("precision", "fp32")) == (runtime, precision)]
    measured = not rows  # no report here, or none at this batch size, runtime and precision: measure now
    if measured:
        fresh = bench_pool(pool, runtimes=[runtime], precisions=[precision], device=device, batch_sizes=[batch_size],
                           data=data, write=False, progress=progress)
        rows = fresh.df.to_dict("records")
    rows = [r for r in rows if r["kind"] in DESCENDANT_KINDS]
    best, alts = pick(rows, max_latency_ms, min_top1, max_params, latency)
    check_output(Path(out) if out else pool.children_dir / best["model"], force, "child")
    if measured:  # written only now: a refused budget leaves nothing behind
        from learngene.bench.report import write_report

        report = write_report(fresh.df, fresh.meta, fresh.report, unique=True)
    fmt = fmt or ("onnx" if runtime == "onnxruntime" else "pt2")
    child, trained = _finish(pool, best, data=data, out=out, force=force, train=train, fmt=fmt, precision=precision)
    return TargetResult(best, alts, child, report, measured, trained)


def read_latency_file(path, pool: Pool) -> dict:
    """A device's latency.json, refused in one line when it is not one, or when the kit it
    measured was not made from this pool (another ancestor, a revision the pool lacks or
    whose files differ)."""
    from learngene.bench.probe import LATENCY_FORMAT

    from learngene.core.io import read_json

    p = Path(path)
    lat = read_json(p, "latency file")
    if not isinstance(lat, dict) or lat.get("format") != LATENCY_FORMAT or not isinstance(lat.get("rows"), list):
        raise UserError(f"{p} is not a latency file written by probe.py")
    kit = lat.get("kit") or {}
    if kit.get("ancestor_sha256") != pool.ancestor["sha256"]:
        raise UserError(f"latency file {p} measured a kit of another pool (ancestor {str(kit.get('ancestor_sha256'))[:12]}), "
                        f"not of {pool.path}")
    rid = kit.get("pool_revision")
    rev = pool.revision(rid) if rid in {r["id"] for r in pool.revisions} else None
    if rev is None or {e["file"]: e["sha256"] for e in rev["files"]} != kit.get("revision_files"):
        raise UserError(f"latency file {p} measured a kit of revision {rid} of another pool: {pool.path} "
                        f"{'lacks it' if rev is None else 'holds other weights under that name'}")
    return lat


def _target_on_device(pool: Pool, latency_file, *, max_latency_ms, batch_size, min_top1, max_params, latency, precision,
                      data, out, force, train, fmt) -> TargetResult:
    from learngene.bench.budget import pick
    from learngene.core.io import check_output

    lat = read_latency_file(latency_file, pool)
    host = {(m["id"], m["precision"]): m for m in lat["members"]}
    rows = [{"model": r["id"], "precision": r["precision"], "kind": host[(r["id"], r["precision"])]["kind"],
             "trained": host[(r["id"], r["precision"])]["trained"], "top1": host[(r["id"], r["precision"])]["host_top1"],
             "infer_step_time": r["median_ms"], "infer_step_time_p90": r["p90_ms"], "infer_batch_size": r["batch_size"],
             "param_count": host[(r["id"], r["precision"])]["params"] / 1e6}
            for r in lat["rows"] if r["batch_size"] == batch_size and (precision is None or r["precision"] == precision)]
    if not rows:
        have = sorted({(r["precision"], r["batch_size"]) for r in lat["rows"]})
        raise UserError(f"latency file {latency_file} has no timing at batch {batch_size}, precision {precision} "
                        f"(has: {', '.join(f'{p} batch {b}' for p, b in have)})")
    rows = [r for r in rows if r["kind"] in DESCENDANT_KINDS]
    best, alts = pick(rows, max_latency_ms, min_top1, max_params, latency)
    d = lat["device"]
    stat = best["infer_step_time_p90" if latency == "p90" else "infer_step_time"]
    name = f"{d['name']}-{d['threads']}t_lat@{stat:.1f}ms_top1@{best['top1']:.1f}"
    check_output(Path(out) if out else pool.children_dir / name, force, "child")
    child, trained = _finish(pool, best, data=data, out=out, force=force, train=train, fmt=fmt,
                             precision=best["precision"], name=name)
    return TargetResult(best, alts, child, Path(latency_file), False, trained)


def kit(pool="pools/embedded", *, out, precisions=("fp32", "int8"), batch_sizes=(1, 8), members=None, data=None,
        force: bool = False, progress=lambda m: None) -> Path:
    """The device kit of a pool's descendants at its latest revision (``members``: only these ids)."""
    from learngene.assemble.api import pool_data
    from learngene.bench.kit import write_kit

    pool = _open(pool)
    rev = pool.revision("latest")
    if rev is None:
        raise UserError(f"pool {pool.path} has no assembled revision yet (its stitches are not stored): "
                        "run `learngene assemble` first")
    dm = pool_data(pool, data, 64, augment=False)
    identity = {"pool": str(pool.path.resolve()), "pool_revision": rev["id"], "ancestor_sha256": pool.ancestor["sha256"],
                "revision_files": {e["file"]: e["sha256"] for e in rev["files"]}}
    zoo = pool_zoo(pool, dm=dm)
    ids = [m.strip() for m in (members.split(",") if isinstance(members, str) else members or []) if m.strip()]
    chosen = [zoo.get(i) for i in ids] if ids else list(zoo)
    return write_kit(chosen, dm, out, identity=identity, precisions=precisions,
                     batch_sizes=batch_sizes, force=force, progress=progress)


def export(ref, *, out, fmt: str = "onnx", precision: str = "fp32", pool=None, data=None, checkpoint=None,
           pretrained: bool = False, force: bool = False) -> Path:
    """Any member (a pool descendant or child, the ancestor, a grown or adapted model, a timm
    name) in a format; an ONNX file's accuracy is measured by ONNX Runtime on the test split."""
    from learngene.core.data import data_for
    from learngene.core.export import FORMATS, check_precisions, export_model, onnx_options

    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r} (choose from {', '.join(FORMATS)})")
    check_precisions([precision])
    if precision != "fp32" and fmt != "onnx":
        raise UserError(f"--precision {precision} is for --format onnx (int8 is ONNX Runtime's quantisation)")
    from learngene.core.io import check_output

    check_output(out, force)
    member = resolve(ref, pool=pool, checkpoint=checkpoint, pretrained=pretrained, progress=False)
    options = {}
    if fmt == "onnx":
        dm = data_for(data, member.data_config, augment=False)
        if dm.num_classes != member.model().num_classes:
            raise UserError(f"data {dm.name} has {dm.num_classes} classes but {member.id} has {member.model().num_classes}")
        options = onnx_options(dm, precision)
    cfg = {**member.data_config, "architecture": member.architecture}
    meta = {"id": member.id, "kind": member.kind, "accuracy": member.accuracy, "provenance": member.provenance}
    return export_model(member.model(), out, member.architecture, member.model_args, cfg, meta, fmt=fmt, force=force,
                        what="output", **options)
