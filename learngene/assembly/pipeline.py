"""`assemble`: from a pool to trained descendants and an exported child.

open + verify the pool -> PoolModel at a revision -> stitch init (new stitches only)
-> train (all jointly / one target / none) -> evaluate -> choose by budget
-> new pool revision (never over the distilled originals) -> export the child
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from learngene.assembly.select import Selection, select
from learngene.core.errors import UserError
from learngene.core.io import check_output
from learngene.core.registries import FORMATS, SAMPLING, STITCH_INITS, TRAIN_MODES, TUNE
from learngene.core.vit import is_block_piece, split_pieces
from learngene.pool.store import Pool, Revision
from learngene.stitch.init import init_stitches
from learngene.stitch.joint import DEFAULT_EPOCHS, JointSpec, train_descendants
from learngene.stitch.stitched import PoolModel, evaluate_specs, flat_stitches, parse_stitch_kinds, static_rows
from learngene.zoo import pool_data


@dataclass
class AssembleResult:
    pool: Pool
    revision: dict | None
    rows: list[dict]
    chosen: dict | None = None
    child: Path | None = None
    trained: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def revision_id(self) -> str:
        return Revision.of(self.revision).id

    def to_dict(self) -> dict:
        """What ``learngene assemble --json`` prints."""
        return {
            "revision": self.revision_id,
            "descendants": self.rows,
            "chosen": self.chosen,
            "child": str(self.child) if self.child else None,
            "seconds": round(self.seconds, 1),
        }


def descendant_rows(pool: Pool, pm: PoolModel, rev: dict | None) -> list[dict]:
    """Every descendant's static numbers with the accuracy a revision measured."""
    acc = pool.accuracy(rev)
    keys = ("val_top1", "test_top1", "test_top5", "init_val_top1")
    return [{**r, **{k: acc.get(r["id"], {}).get(k) for k in keys}} for r in static_rows(pm)]


@dataclass(frozen=True)
class AssembleSpec(JointSpec):
    """Everything `assemble` takes besides where it runs: how descendants train (`JointSpec`),
    what trains (``train``: auto | all | target | none), how new stitches start (``init``) and
    of which kinds (``stitch_kinds``), the revision to start from, and the child's format and
    precision. Frozen: change a copy with `dataclasses.replace`."""

    train: str = "auto"
    init: str = "lstsq"
    stitch_kinds: str | None = None
    revision: str | None = "latest"
    fmt: str | None = None  # the child's format (default pt2)
    precision: str = "fp32"  # the child's precision, with fmt onnx

    def check(self) -> AssembleSpec:
        """Refuse a bad spec in one line, before any work."""
        from learngene.core import limits

        if self.train not in TRAIN_MODES:
            raise UserError(f"unknown --train {self.train!r} (choose from {', '.join(TRAIN_MODES)})")
        STITCH_INITS.check(self.init, "--init")
        if self.tune not in TUNE:
            raise UserError(f"unknown --tune {self.tune!r} (choose from {', '.join(TUNE)})")
        if self.sampling not in SAMPLING:
            raise UserError(f"unknown --sampling {self.sampling!r} (choose from {', '.join(SAMPLING)})")
        if self.epochs is not None:
            limits.epochs(self.epochs, low=0)
        limits.batch_size(self.batch_size)
        limits.seed(self.seed)
        for name, v in (("--lr", self.lr), ("--stitch-lr", self.stitch_lr)):
            limits.float_in(v, name, 0.0, 10.0, low_open=True)
        limits.float_in(self.kl_weight, "--kl", 0.0, 1.0)
        if self.fmt is not None:
            FORMATS.check(self.fmt, "--format")
        from learngene.onnx_cache import check_precisions

        check_precisions([self.precision])
        return self


def assemble(
    pool: str | os.PathLike | Pool = "pools/embedded",
    selection: Selection | None = None,
    *,
    spec: AssembleSpec | None = None,
    data=None,
    ancestor=None,
    out: str | os.PathLike | None = None,
    force: bool = False,
    trainer_args=None,
    num_workers: int | None = None,
    progress=print,
    **settings,
) -> AssembleResult:
    """Stitch a pool's instances into descendants, train what needs it, write a revision and,
    with a ``selection``, export the child. ``settings``: fields of `AssembleSpec` (``train``,
    ``epochs``, ``init``, ...) that replace those of ``spec``."""
    t0 = time.perf_counter()
    sel = selection or Selection()
    if "export_program" in settings:  # the first spelling of fmt=timm
        settings.setdefault("fmt", None if settings.pop("export_program") else "timm")
    spec = dataclasses.replace(spec or AssembleSpec(), **settings).check()
    sel.check()  # what needs no pool: refused before the pool is opened (and every file re-hashed)
    pool = pool if isinstance(pool, Pool) else Pool.open(pool)
    pool.check_writable()  # a read-only pool is refused now, not after the training
    depth = pool.depth
    sel.check(depth)  # a bad --descendant / --size is refused before any work
    if sel.given and (out is not None or sel.config is not None):  # the child folder is known already
        from learngene.stitch.descendants import parse_config

        check_output(
            Path(out) if out is not None else pool.children_dir / parse_config(sel.config, depth).id, force, "child"
        )

    # One assemble at a time per pool, from reading its revision to writing its own and the
    # child: a second one waits, then starts from the newest revision, so concurrent runs chain
    # (r0 -> r1 -> r2) instead of forking from the same parent, where `latest` would hold only
    # the last one's training. DDP: only rank 0 writes, so only it locks.
    rank0 = int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
    with pool.writing(" (assembling)") if rank0 else contextlib.nullcontext():
        return _assemble(
            pool,
            sel,
            spec,
            data=data,
            ancestor=ancestor,
            out=out,
            force=force,
            trainer_args=trainer_args,
            num_workers=num_workers,
            progress=progress,
            t0=t0,
        )


def _assemble(
    pool: Pool,
    sel: Selection,
    spec: AssembleSpec,
    *,
    data,
    ancestor,
    out,
    force,
    trainer_args,
    num_workers,
    progress,
    t0,
) -> AssembleResult:
    train, init, stitch_kinds, revision = spec.train, spec.init, spec.stitch_kinds, spec.revision
    depth = pool.depth
    base = pool.revision(revision)
    pm, has_stitches = pool.model(revision)
    # Other stitch kinds (--stitch-kind): those stitches are made afresh, initialised and
    # trained like new ones; the rest keep their trained weights.
    restitched = pm.set_kinds(parse_stitch_kinds(stitch_kinds, pm.specs)) if stitch_kinds else []
    rows = descendant_rows(pool, pm, base)
    anc_params = pool.ancestor["params"]
    # The child as far as it can be chosen now (the pool's evaluation, else the size): what
    # a target run trains, and an impossible budget refused before any work.
    target = select(rows, sel, anc_params, depth) if sel.given else None
    mode = train
    if mode == "auto":
        # Train what is not trained yet: everything when no child is asked for, else the child.
        done = pool.trained_ids(base) - set(restitched)
        if target is None:
            mode = "none" if all(s.id in done for s in pm.specs) else "all"
        else:
            mode = "none" if target["id"] in done and has_stitches else "target"
    dm = None
    trained: dict = {}
    if mode != "none" or not has_stitches or restitched:
        dm = pool_data(pool, data, spec.batch_size, num_workers)
        if not has_stitches or restitched:
            import lightning as L

            L.seed_everything(spec.seed, verbose=False)
            only = set(restitched) if has_stitches else None
            init_stitches(pm, init, dm, pool.distill_maps() if init == "distill" else None, only=only)
            n = len(only) if only is not None else sum(s.kind == "stitch" for s in pm.specs)
            progress(f"stitches initialised ({init}) for {n} descendants")
        specs = {"target": [pm.spec(target["id"])] if target else None, "all": list(pm.specs)}.get(mode, [])
        if specs is None:
            raise UserError("--train target needs the descendant: --size, --params, --flops or --config")
        if specs:
            teacher = None
            if spec.kl_weight > 0:
                from learngene.zoo import ancestor_of

                teacher = ancestor_of(pool, ancestor).model
            if spec.epochs is None:
                spec = dataclasses.replace(spec, epochs=DEFAULT_EPOCHS["target" if mode == "target" else "all"])
            progress(
                f"training {len(specs)} descendant(s): {spec.epochs} epochs, tune {spec.tune}, "
                f"lr {spec.lr:g} (inherited) / {spec.stitch_lr:g} (stitches), sampling {spec.sampling}"
            )
            flops = {r["id"]: r["flops"] for r in rows}
            trained = train_descendants(pm, specs, spec, dm, teacher=teacher, flops=flops, trainer_args=trainer_args)
            trained["specs"] = [s.id for s in specs] if spec.epochs == "auto" or spec.epochs > 0 else []
            if not trained.pop("rank0"):  # DDP: only global rank 0 evaluates and writes
                return AssembleResult(pool, base, rows, trained=trained, seconds=time.perf_counter() - t0)
        evaluated = specs if mode == "target" else pm.specs
        progress(f"evaluating {len(evaluated)} descendant(s) on validation and test")
        val = evaluate_specs(pm, evaluated, dm.val_dataloader())
        test = evaluate_specs(pm, evaluated, dm.test_dataloader())
        init_acc = trained.get("history", [{}])[0].get("acc", {}) if trained else {}
        for r in rows:
            if r["id"] in val:
                r.update(
                    val_top1=val[r["id"]]["top1"],
                    test_top1=test[r["id"]]["top1"],
                    test_top5=test[r["id"]]["top5"],
                    init_val_top1=round(init_acc[r["id"]], 2) if r["id"] in init_acc else None,
                )
            else:
                r.update(val_top1=None, test_top1=None, test_top5=None, init_val_top1=None)

    chosen = None
    if sel.given:
        # a target run exports what it trained (the others were not evaluated now); else the
        # pick among the rows as evaluated
        chosen = (
            next(r for r in rows if r["id"] == target["id"])
            if mode == "target"
            else select(rows, sel, anc_params, depth)
        )
    child_dir = None
    if chosen is not None:
        child_dir = check_output(
            Path(out) if out else pool.children_dir / chosen["id"], force, "child"
        )  # before any write

    new_revision = None
    if dm is not None:  # new stitches and/or training: a new revision
        new_revision = write_revision(pool, pm, base, spec, init, mode, has_stitches, trained, rows, dm, restitched)
        progress(f"pool revision {new_revision['id']} written ({len(new_revision['files'])} files)")
    rev = new_revision or base

    if chosen is not None:
        fmt = spec.fmt or "pt2"
        onnx_data = (
            (dm or pool_data(pool, data, spec.batch_size, num_workers, augment=False)) if fmt == "onnx" else None
        )
        with pool.writing(" (a child)"):
            child_dir = export_descendant(
                pool, pm, chosen, rev, child_dir, force=force, fmt=fmt, precision=spec.precision, dm=onnx_data
            )
    return AssembleResult(pool, rev, rows, chosen, child_dir, trained, time.perf_counter() - t0)


def export_descendant(
    pool: Pool,
    pm: PoolModel,
    row: dict,
    rev: dict | None,
    out: Path,
    *,
    force: bool = False,
    fmt: str = "pt2",
    precision: str = "fp32",
    dm=None,
) -> Path:
    """A descendant as a timm local-dir child plus its format's file (model.pt2, or an ONNX
    file at ``precision`` whose accuracy ONNX Runtime measures on ``dm``'s test split),
    recording its numbers, the pool revision and the manifest checksum it came from."""
    from learngene.formats import export_model, onnx_options

    s = pm.spec(row["id"])
    arch, args = pm.descendant_args(s)
    anc = pool.ancestor
    meta = {
        "descendant": row,
        "pool": str(pool.path.resolve()),
        "pool_manifest_sha256": pool.manifest_sha256(),
        "pool_revision": Revision.of(rev).id,
        "ancestor": {k: anc[k] for k in ("name", "sha256", "params")},
        "aux": dict(zip(("narrow", "wide"), pool.aux_names)),
        "data": pool.data,
    }
    options = onnx_options(dm, precision) if fmt == "onnx" else {}
    return export_model(
        pm.descendant(s), out, arch, args, pool.data_config, {"id": s.id, **meta}, fmt=fmt, force=force, **options
    )


def write_revision(
    pool: Pool,
    pm: PoolModel,
    base: dict | None,
    spec: AssembleSpec,
    init: str,
    mode: str,
    had_stitches: bool,
    trained: dict,
    rows: list[dict],
    dm,
    restitched: list[str] = (),
) -> dict:
    """The stitches (and, when instances were tuned, the auxiliary models' pieces) as a new
    revision of the pool, with the settings, the validation history and the descendant table."""
    files = {
        "stitches.safetensors": (
            {"id": "stitches", "kind": "stitches", "source": "assemble"},
            flat_stitches(pm.stitches),
        )
    }
    if trained and spec.tune == "all":
        for aux, model in zip(pm.aux_names, (pm.narrow, pm.wide)):
            for name, tensors in split_pieces(model.state_dict()).items():
                sub = "instances" if is_block_piece(name) else "components"
                fields = {"id": f"{aux}.{name}", "source": aux, "kind": "instance" if is_block_piece(name) else name}
                if is_block_piece(name):
                    fields["block"] = int(name[1:])
                files[f"{sub}/{aux}.{name}.safetensors"] = (fields, tensors)
    best = trained.get("best", {}) if trained else {}
    record = {
        "parent": Revision.of(base).id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train": mode if trained else "none",
        "stitch_init": init if restitched or not had_stitches else None,
        "stitch_kinds": dict(pm.kinds),
        "restitched": list(restitched),  # made afresh here: earlier revisions' training no longer counts for them
        "settings": dataclasses.asdict(spec),
        "data": dm.fingerprint(),
        "trained": trained.get("specs", []) if trained else [],
        "steps": trained.get("steps", 0) if trained else 0,
        "best_epoch": best.get("epoch"),
        "training": trained.get("training") if trained else None,
        "val_history": [{"epoch": h["epoch"], "mean": round(h["mean"], 2)} for h in (trained or {}).get("history", [])],
        "descendants": rows,
    }
    return pool.add_revision(files, record)
