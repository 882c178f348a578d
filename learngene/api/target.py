"""`target`: the most accurate descendant within a budget, from this host's report or a device's
latency.json, exported (trained first when it is still at its stitch initialisation)."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

from learngene.api._common import Request, _open, _targs, verb
from learngene.api.bench import _frontier
from learngene.core.errors import UserError
from learngene.measure.budget import Budget
from learngene.pool.store import Pool, Revision
from learngene.zoo import DESCENDANT_KINDS, pool_data, pool_zoo


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

    def to_dict(self) -> dict:
        """What ``learngene target --json`` prints."""
        return {
            "chosen": self.chosen,
            "alternatives": self.alternatives,
            "child": str(self.child),
            "report": str(self.report),
            "measured_now": self.measured_now,
            "trained": self.trained,
            "reused": self.reused,
            "notes": self.notes,
        }


def _finish(
    pool: Pool,
    row: dict,
    *,
    revision: str,
    data,
    out: Path,
    force: bool,
    train: bool,
    fmt: str,
    precision: str,
    progress: bool,
) -> tuple[Path, bool, str]:
    """Export a picked descendant of ``revision``, training it first when it is not trained
    yet; (child folder, trained, the revision exported). Its training shows the verb's
    progress (never a bar in ``--json`` output, whose stdout must stay JSON)."""
    from learngene.assembly.pipeline import assemble
    from learngene.assembly.select import Selection

    untrained = not row.get("trained", True)
    res = assemble(
        pool,
        selection=Selection(config=row["model"]),
        train="auto" if train and untrained else "none",
        revision=revision,
        data=data,
        out=out,
        force=force,
        fmt=fmt,
        precision=precision,
        progress=lambda m: None,
        trainer_args=_targs(None, "target (training the pick)", progress),
    )
    return res.child, train and untrained, Revision.of(res.revision).id


def _existing_child(folder: Path, member: str, revision: str, fmt: str, precision: str) -> bool:
    """Is ``folder`` already this member of this revision, in this format and precision?"""
    from learngene.core.localdir import read_local_dir_config

    try:
        meta = read_local_dir_config(folder).get("learngene", {})
    except UserError:
        return False
    exp = meta.get("export") or {}
    have_fmt = "onnx" if exp.get("format") == "onnx" else "pt2" if exp.get("format") == "torch.export" else "timm"
    return (meta.get("id"), meta.get("pool_revision"), have_fmt, exp.get("precision", "fp32")) == (
        member,
        revision,
        fmt,
        precision if fmt == "onnx" else "fp32",
    )


def _child_out(pool: Pool, out, name: str, force: bool, member: str, revision: str, fmt: str, precision: str):
    """(the child's folder, already there): refused in one line when something else is there."""
    from learngene.core.io import check_name, check_output, inside

    folder = Path(out) if out else inside(pool.children_dir, check_name(name, "child name"), "child")
    if folder.exists() and not force and _existing_child(folder, member, revision, fmt, precision):
        return folder, True
    return check_output(folder, force, "child"), False


@dataclass(frozen=True)
class TargetRequest(Request):
    pool: str | Path | Pool = "pools/embedded"
    budget: Budget | None = None
    _: KW_ONLY
    runtime: str = "torch"
    precision: str | None = None
    device: str = "cpu"
    threads: int | None = None
    data: str | Path | None = None
    out: str | Path | None = None
    force: bool = False
    remeasure: bool = False
    train: bool = True
    fmt: str | None = None
    latency_file: str | Path | None = None
    progress: bool = False

    def check(self):
        from learngene.core import limits
        from learngene.core.registries import FORMATS
        from learngene.measure.members import resolve_device
        from learngene.measure.runtimes import plan

        if not isinstance(self.budget, Budget):
            raise UserError("target needs a Budget (at least --max-latency-ms)")
        if self.fmt is not None:
            FORMATS.check(self.fmt, "--format")
        if self.latency_file is None:  # on this host: a bad runtime, precision or device refused before any work
            self._set("precision", self.precision or "fp32")
            plan([self.runtime], [self.precision])
            resolve_device(self.device)
            limits.threads(self.threads)
        on_ort = self.latency_file is not None or self.runtime == "onnxruntime"
        self._set("fmt", self.fmt or ("onnx" if on_ort else "pt2"))


@verb(TargetRequest)
def target(r: TargetRequest) -> TargetResult:
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
    from learngene.measure.budget import pick
    from learngene.measure.members import set_threads

    pool = _open(r.pool)
    if r.latency_file is not None:
        return _target_on_device(
            pool,
            r.latency_file,
            r.budget,
            precision=r.precision,
            data=r.data,
            out=r.out,
            force=r.force,
            train=r.train,
            fmt=r.fmt,
            progress=r.progress,
        )
    set_threads(r.threads)
    fmt, precision = r.fmt, r.precision
    rev = pool.head("latest").id
    if r.out is not None and Path(r.out).exists() and not r.force:
        from learngene.core.io import check_output, learngene_output

        if learngene_output(r.out) != "model folder":  # taken by something else: refused before anything is measured
            check_output(r.out, r.force, "child")
    report, rows, measured = _frontier(
        pool,
        rev,
        r.runtime,
        precision,
        r.budget.batch_size,
        r.device,
        data=r.data,
        remeasure=r.remeasure,
        progress=r.progress,
    )
    rows = [r for r in rows if r["kind"] in DESCENDANT_KINDS]
    from learngene.measure.budget import WIDE_SPREAD

    best, alts, notes = pick(rows, r.budget)
    if (best.get("infer_step_spread") or 0) > WIDE_SPREAD:  # measured here: say so, --remeasure on a quiet spell
        notes.append(
            f"the pick's timing spread is {best['infer_step_spread']:.0%} in {report.name}: "
            "pass --remeasure on a quieter machine to be sure of it"
        )
    folder, reused = _child_out(pool, r.out, best["model"], r.force, best["model"], rev, fmt, precision)
    if reused:
        return TargetResult(best, alts, folder, report, measured, notes=notes, reused=True)
    child, trained, _ = _finish(
        pool,
        best,
        revision=rev,
        data=r.data,
        out=folder,
        force=r.force,
        train=r.train,
        fmt=fmt,
        precision=precision,
        progress=r.progress,
    )
    return TargetResult(best, alts, child, report, measured, trained, notes)


def read_latency_file(path, pool: Pool) -> dict:
    """A device's latency.json, validated (it is untrusted), and refused in one line when the
    kit it measured was not made from this pool (another ancestor, a revision the pool lacks
    or whose files differ)."""
    from learngene.measure.budget import read_latency_json

    p = Path(path)
    lat = read_latency_json(p)
    kit = lat["kit"]
    if kit["ancestor_sha256"] != pool.ancestor["sha256"]:
        raise UserError(
            f"latency file {p} measured a kit of another pool (ancestor {kit['ancestor_sha256'][:12]}), "
            f"not of {pool.path}"
        )
    rid = kit["pool_revision"]
    rev = pool.revision(rid) if rid in {r["id"] for r in pool.revisions} else None
    if rev is None or {e["file"]: e["sha256"] for e in rev["files"]} != kit["revision_files"]:
        raise UserError(
            f"latency file {p} measured a kit of revision {rid} of another pool: {pool.path} "
            f"{'lacks it' if rev is None else 'holds other weights under that name'}"
        )
    return lat


def _target_on_device(
    pool: Pool, latency_file, budget: Budget, *, precision, data, out, force, train, fmt, progress
) -> TargetResult:
    """Pick from a device's own timings. What is exported is exactly what the device timed:
    the revision its kit was made from, each member's weights checked against the kit's
    checksum; accuracies are the host's own measurement of the very ONNX file (cached when the
    kit was written), never the latency file's claim."""
    from learngene.core.io import state_dict_sha256
    from learngene.formats import calibration_of
    from learngene.measure.budget import WIDE_SPREAD, device_slug, pick
    from learngene.onnx_cache import file_accuracy, onnx_file

    lat = read_latency_file(latency_file, pool)
    rid = lat["kit"]["pool_revision"]
    measured = [
        r
        for r in lat["rows"]
        if r["batch_size"] == budget.batch_size and (precision is None or r["precision"] == precision)
    ]
    if not measured:
        have = sorted({(r["precision"], r["batch_size"]) for r in lat["rows"]})
        raise UserError(
            f"latency file {latency_file} has no timing at batch {budget.batch_size}, precision {precision} "
            f"(has: {', '.join(f'{p} batch {b}' for p, b in have)})"
        )
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
            raise UserError(
                f"latency file {latency_file}: member {r['id']} was timed with other weights than revision "
                f"{rid} of {pool.path} holds (sha256 {km['weights_sha256'][:12]} vs {checked[r['id']][:12]})"
            )
        # the host's own measurement of the very file the device ran (cached when the kit was written)
        images, key = calibration_of(dm) if r["precision"] == "int8-static" else (None, "")
        path, _ = onnx_file(member.model().cpu(), member.img_size, r["precision"], images, key, name=member.id)
        top1 = file_accuracy(path, dm)["top1"]
        rows.append(
            {
                "model": r["id"],
                "precision": r["precision"],
                "kind": km["kind"],
                "trained": member.trained,
                "top1": top1,
                "infer_step_time": r["median_ms"],
                "infer_step_time_p90": r["p90_ms"],
                "infer_step_spread": r.get("spread"),
                "infer_batch_size": r["batch_size"],
                "param_count": km["params"] / 1e6,
            }
        )
    if not rows:
        raise UserError(f"latency file {latency_file} times no descendant of {pool.path}")
    best, alts, notes = pick(rows, budget, wide_spread=WIDE_SPREAD)
    d = lat["device"]
    stat = best[budget.column]
    name = (
        f"{device_slug(d.get('name', 'device'))}-{d['threads']}t-{best['precision']}"
        f"_lat@{stat:.1f}ms_top1@{best['top1']:.1f}"
    )
    folder, reused = _child_out(pool, out, name, force, best["model"], rid, fmt, best["precision"])
    if reused:
        return TargetResult(best, alts, folder, Path(latency_file), False, notes=notes, reused=True)
    child, trained, exported = _finish(
        pool,
        best,
        revision=rid,
        data=data,
        out=folder,
        force=force,
        train=train,
        fmt=fmt,
        precision=best["precision"],
        progress=progress,
    )
    if trained:
        notes.append(
            f"{best['model']} was untrained in the kit the device timed (revision {rid}): it was trained into "
            f"revision {exported} first, so the shipped weights are not the kit's file (same architecture: the "
            "device's latency holds); run `learngene kit` and probe.py again to time the very file"
        )
    return TargetResult(best, alts, child, Path(latency_file), False, trained, notes)
