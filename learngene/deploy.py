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
from dataclasses import dataclass, field
from pathlib import Path

import torch

from learngene.bench.budget import Budget
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
    notes: list[str] = field(default_factory=list)  # what the user should know (noisy timings, a stale kit)
    reused: bool = False  # the pick was exported already (same member, revision and format): nothing written


def _finish(pool: Pool, row: dict, *, revision: str, data, out: Path, force: bool, train: bool, fmt: str,
            precision: str) -> tuple[Path, bool, str]:
    """Export a picked descendant of ``revision``, training it first when it is not trained
    yet; (child folder, trained, the revision exported)."""
    from learngene.assemble.api import assemble
    from learngene.assemble.select import Selection

    untrained = not row.get("trained", True)
    res = assemble(pool, selection=Selection(config=row["model"]), train="auto" if train and untrained else "none",
                   revision=revision, data=data, out=out, force=force, fmt=fmt, precision=precision, progress=lambda m: None)
    return res.child, train and untrained, (res.revision or {}).get("id", "r0")


def _existing_child(folder: Path, member: str, revision: str, fmt: str, precision: str) -> bool:
    """Is ``folder`` already this member of this revision, in this format and precision?"""
    from learngene.core.io import read_local_dir_config

    try:
        meta = read_local_dir_config(folder).get("learngene", {})
    except UserError:
        return False
    exp = meta.get("export") or {}
    have_fmt = "onnx" if exp.get("format") == "onnx" else "pt2" if exp.get("format") == "torch.export" else "timm"
    return (meta.get("id"), meta.get("pool_revision"), have_fmt, exp.get("precision", "fp32")) == \
        (member, revision, fmt, precision if fmt == "onnx" else "fp32")


def _child_out(pool: Pool, out, name: str, force: bool, member: str, revision: str, fmt: str, precision: str):
    """(the child's folder, already there): refused in one line when something else is there."""
    from learngene.core.io import check_name, check_output, inside

    folder = Path(out) if out else inside(pool.children_dir, check_name(name, "child name"), "child")
    if folder.exists() and not force and _existing_child(folder, member, revision, fmt, precision):
        return folder, True
    return check_output(folder, force, "child"), False


def target(pool="pools/embedded", budget: Budget | None = None, *, runtime: str = "torch", precision: str | None = None,
           device: str = "cpu", threads: int | None = None, data=None, out=None, force: bool = False,
           remeasure: bool = False, train: bool = True, fmt: str | None = None, latency_file=None,
           progress: bool = False) -> TargetResult:
    """The most accurate descendant within ``budget``, exported.

    Args:
        pool: the pool (a folder or an opened `Pool`).
        budget: the `Budget` (latency per batch, batch size, statistic, accuracy floor, size ceiling).
        runtime, precision: what the pick runs in on this device (``precision`` None: fp32 for a
            report, every precision the device timed for a latency file).
        device, threads: where a report is (or is measured now) on this host.
        data: the pool's data (default: the embedded source it was built on).
        out: the child's folder (default POOL/children/<id>, or the device pick's name).
        force: replace an existing child folder (one learngene wrote).
        remeasure: measure now even when a report of this revision, device and runtime exists.
        train: train a pick that is still at its stitch initialisation (a new pool revision).
        fmt: export format (default pt2 for torch, onnx for onnxruntime or a latency file).
        latency_file: a device's latency.json (probe.py): pick from its timings, export exactly the
            revision and weights it measured, with the host's own accuracy.
    """
    from learngene.bench.api import resolve_device, set_threads
    from learngene.bench.budget import latest_report, pick
    from learngene.bench.metrics import device_name
    from learngene.bench.runtimes import RUNTIMES, plan
    from learngene.core.export import FORMATS

    if not isinstance(budget, Budget):
        raise UserError("target needs a Budget (at least --max-latency-ms)")
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r} (choose from {', '.join(FORMATS)})")
    pool = _open(pool)
    if latency_file is not None:
        return _target_on_device(pool, latency_file, budget, precision=precision, data=data, out=out, force=force,
                                 train=train, fmt=fmt or "onnx")
    precision = precision or "fp32"
    pairs = plan([runtime], [precision])
    dev = resolve_device(device)
    set_threads(threads)
    fmt = fmt or ("onnx" if runtime == "onnxruntime" else "pt2")
    rev = (pool.revision("latest") or {}).get("id", "r0")
    if out is not None and Path(out).exists() and not force:
        from learngene.core.io import check_output, learngene_output

        if learngene_output(out) != "model folder":  # taken by something else: refused before anything is measured
            check_output(out, force, "child")
    versions = {runtime: pairs[0][0].version} if runtime in RUNTIMES else None
    report = None if remeasure else latest_report(pool.reports_dir, rev, str(dev), device_name(dev), torch.get_num_threads(),
                                                  versions)
    rows = None
    if report is not None:
        rows = [r for r in json.loads((report / "frontier.json").read_text())["rows"]
                if r["infer_batch_size"] == budget.batch_size
                and (r.get("runtime", "torch"), r.get("precision", "fp32")) == (runtime, precision)]
    measured = not rows  # no report here, or none at this batch size, runtime and precision: measure now
    if measured:
        # written at once: a measurement is kept even when the pick is refused below, so the
        # next call reads it instead of measuring again
        report = bench_pool(pool, runtimes=[runtime], precisions=[precision], device=device,
                            batch_sizes=[budget.batch_size], data=data, progress=progress).report
        rows = [r for r in json.loads((report / "frontier.json").read_text())["rows"]]
    rows = [r for r in rows if r["kind"] in DESCENDANT_KINDS]
    from learngene.bench.budget import WIDE_SPREAD

    best, alts, notes = pick(rows, budget)
    if (best.get("infer_step_spread") or 0) > WIDE_SPREAD:  # measured here: say so, --remeasure on a quiet spell
        notes.append(f"the pick's timing spread is {best['infer_step_spread']:.0%} in {report.name}: "
                     "pass --remeasure on a quieter machine to be sure of it")
    folder, reused = _child_out(pool, out, best["model"], force, best["model"], rev, fmt, precision)
    if reused:
        return TargetResult(best, alts, folder, report, measured, notes=notes, reused=True)
    child, trained, _ = _finish(pool, best, revision=rev, data=data, out=folder, force=force, train=train, fmt=fmt,
                                precision=precision)
    return TargetResult(best, alts, child, report, measured, trained, notes)


def read_latency_file(path, pool: Pool) -> dict:
    """A device's latency.json, validated (it is untrusted), and refused in one line when the
    kit it measured was not made from this pool (another ancestor, a revision the pool lacks
    or whose files differ)."""
    from learngene.bench.budget import read_latency_json

    p = Path(path)
    lat = read_latency_json(p)
    kit = lat["kit"]
    if kit["ancestor_sha256"] != pool.ancestor["sha256"]:
        raise UserError(f"latency file {p} measured a kit of another pool (ancestor {kit['ancestor_sha256'][:12]}), "
                        f"not of {pool.path}")
    rid = kit["pool_revision"]
    rev = pool.revision(rid) if rid in {r["id"] for r in pool.revisions} else None
    if rev is None or {e["file"]: e["sha256"] for e in rev["files"]} != kit["revision_files"]:
        raise UserError(f"latency file {p} measured a kit of revision {rid} of another pool: {pool.path} "
                        f"{'lacks it' if rev is None else 'holds other weights under that name'}")
    return lat


def _target_on_device(pool: Pool, latency_file, budget: Budget, *, precision, data, out, force, train, fmt) -> TargetResult:
    """Pick from a device's own timings. What is exported is exactly what the device timed:
    the revision its kit was made from, each member's weights checked against the kit's
    checksum; accuracies are the host's own measurement of the very ONNX file (cached when the
    kit was written), never the latency file's claim."""
    from learngene.assemble.api import pool_data
    from learngene.bench.budget import WIDE_SPREAD, device_slug, pick
    from learngene.core.export import calibration_of, file_accuracy, onnx_file
    from learngene.core.io import state_dict_sha256

    lat = read_latency_file(latency_file, pool)
    rid = lat["kit"]["pool_revision"]
    measured = [r for r in lat["rows"] if r["batch_size"] == budget.batch_size and (precision is None or r["precision"] == precision)]
    if not measured:
        have = sorted({(r["precision"], r["batch_size"]) for r in lat["rows"]})
        raise UserError(f"latency file {latency_file} has no timing at batch {budget.batch_size}, precision {precision} "
                        f"(has: {', '.join(f'{p} batch {b}' for p, b in have)})")
    dm = pool_data(pool, data, 64, augment=False)
    zoo = pool_zoo(pool, rid, dm=dm)
    kit_members = {(m["id"], m["precision"]): m for m in lat["members"]}
    rows, checked = [], {}
    for r in measured:
        km = kit_members[(r["id"], r["precision"])]
        if km["kind"] not in DESCENDANT_KINDS:
            continue
        member = zoo.get(r["id"])  # a member this revision lacks: one line naming it
        if r["id"] not in checked:
            checked[r["id"]] = state_dict_sha256(member.model().state_dict())
        if km.get("weights_sha256") not in (None, checked[r["id"]]):
            raise UserError(f"latency file {latency_file}: member {r['id']} was timed with other weights than revision "
                            f"{rid} of {pool.path} holds (sha256 {km['weights_sha256'][:12]} vs {checked[r['id']][:12]})")
        # the host's own measurement of the very file the device ran (cached when the kit was written)
        images, key = calibration_of(dm) if r["precision"] == "int8-static" else (None, "")
        path, _ = onnx_file(member.model().cpu(), member.img_size, r["precision"], images, key, name=member.id)
        top1 = file_accuracy(path, dm)["top1"]
        rows.append({"model": r["id"], "precision": r["precision"], "kind": km["kind"], "trained": member.trained,
                     "top1": top1, "infer_step_time": r["median_ms"], "infer_step_time_p90": r["p90_ms"],
                     "infer_step_spread": r.get("spread"), "infer_batch_size": r["batch_size"],
                     "param_count": km["params"] / 1e6})
    if not rows:
        raise UserError(f"latency file {latency_file} times no descendant of {pool.path}")
    best, alts, notes = pick(rows, budget, wide_spread=WIDE_SPREAD)
    d = lat["device"]
    stat = best[budget.column]
    name = f"{device_slug(d.get('name', 'device'))}-{d['threads']}t-{best['precision']}_lat@{stat:.1f}ms_top1@{best['top1']:.1f}"
    folder, reused = _child_out(pool, out, name, force, best["model"], rid, fmt, best["precision"])
    if reused:
        return TargetResult(best, alts, folder, Path(latency_file), False, notes=notes, reused=True)
    child, trained, exported = _finish(pool, best, revision=rid, data=data, out=folder, force=force, train=train, fmt=fmt,
                                       precision=best["precision"])
    if trained:
        notes.append(f"{best['model']} was untrained in the kit the device timed (revision {rid}): it was trained into "
                     f"revision {exported} first, so the shipped weights are not the kit's file (same architecture: the "
                     "device's latency holds); run `learngene kit` and probe.py again to time the very file")
    return TargetResult(best, alts, child, Path(latency_file), False, trained, notes)


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
