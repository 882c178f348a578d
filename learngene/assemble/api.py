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

from learngene.assemble.select import Selection, select
from learngene.core.errors import UserError
from learngene.core.io import check_output
from learngene.core.joint import DEFAULT_EPOCHS, SAMPLING, TUNE, AssembleSpec, train_descendants
from learngene.core.stitch_init import INITS, init_stitches
from learngene.core.stitching import PoolModel, evaluate_specs, flat_stitches, parse_stitch_kinds, static_rows
from learngene.core.vit import is_block_piece, split_pieces
from learngene.pool.store import Pool

TRAIN_MODES = ("auto", "all", "target", "none")


@dataclass
class AssembleResult:
    pool: Pool
    revision: dict | None
    rows: list[dict]
    chosen: dict | None = None
    child: Path | None = None
    trained: dict = field(default_factory=dict)
    seconds: float = 0.0


def descendant_rows(pool: Pool, pm: PoolModel, rev: dict | None) -> list[dict]:
    """Every descendant's static numbers with the accuracy a revision measured."""
    acc = pool.accuracy(rev)
    keys = ("val_top1", "test_top1", "test_top5", "init_val_top1")
    return [{**r, **{k: acc.get(r["id"], {}).get(k) for k in keys}} for r in static_rows(pm)]


def pool_data(pool: Pool, data, batch_size: int = 64, num_workers: int | None = None, augment: bool = True):
    """The data the pool's members read (the pool's ancestor's data config), refused when
    its classes differ from those the pool was built with. No data: the embedded source the
    pool was built on (the digits, the animals)."""
    from learngene.core.data import LearngeneDataModule, same_classes

    if data is None:
        data = pool.embedded_data
    dm = data if isinstance(data, LearngeneDataModule) else LearngeneDataModule(data, num_workers=num_workers, augment=augment)
    dm.batch_size = batch_size
    if not dm.embedded:
        dm.for_model(pool.data_config)
    if dm.num_classes != pool.num_classes:
        raise UserError(f"data {dm.name} has {dm.num_classes} classes but the pool's heads have {pool.num_classes}")
    same_classes(pool.data, dm, f"pool {pool.path}")
    return dm


def assemble(
    pool: str | os.PathLike | Pool = "pools/embedded",
    *,
    selection: Selection | None = None,
    train: str = "auto",
    init: str = "lstsq",
    stitch_kinds: str | None = None,
    spec: AssembleSpec | None = None,
    revision: str | None = "latest",
    data=None,
    ancestor=None,
    out: str | os.PathLike | None = None,
    force: bool = False,
    export_program: bool = True,
    fmt: str | None = None,
    precision: str = "fp32",
    trainer_args=None,
    num_workers: int | None = None,
    progress=print,
) -> AssembleResult:
    t0 = time.perf_counter()
    sel = selection or Selection()
    spec = spec or AssembleSpec()
    _check_spec(spec, train, init)
    sel.check()  # what needs no pool: refused before the pool is opened (and every file re-hashed)
    pool = pool if isinstance(pool, Pool) else Pool.open(pool)
    pool.check_writable()  # a read-only pool is refused now, not after the training
    depth = pool.depth
    sel.check(depth)  # a bad --config / --size is refused before any work
    if sel.given and (out is not None or sel.config is not None):  # the child folder is known already
        from learngene.core.descendants import parse_config

        check_output(Path(out) if out is not None else pool.children_dir / parse_config(sel.config, depth).id, force, "child")

    # One assemble at a time per pool, from reading its revision to writing its own and the
    # child: a second one waits, then starts from the newest revision, so concurrent runs chain
    # (r0 -> r1 -> r2) instead of forking from the same parent, where `latest` would hold only
    # the last one's training. DDP: only rank 0 writes, so only it locks.
    rank0 = int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
    with pool.writing(" (assembling)") if rank0 else contextlib.nullcontext():
        return _assemble(pool, sel, train=train, init=init, stitch_kinds=stitch_kinds, spec=spec, revision=revision,
                         data=data, ancestor=ancestor, out=out, force=force, export_program=export_program, fmt=fmt,
                         precision=precision, trainer_args=trainer_args, num_workers=num_workers, progress=progress, t0=t0)


def _assemble(pool: Pool, sel: Selection, *, train, init, stitch_kinds, spec, revision, data, ancestor, out, force,
              export_program, fmt, precision, trainer_args, num_workers, progress, t0) -> AssembleResult:
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
            progress(f"training {len(specs)} descendant(s): {spec.epochs} epochs, tune {spec.tune}, "
                     f"lr {spec.lr:g} (inherited) / {spec.stitch_lr:g} (stitches), sampling {spec.sampling}")
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
                r.update(val_top1=val[r["id"]]["top1"], test_top1=test[r["id"]]["top1"], test_top5=test[r["id"]]["top5"],
                         init_val_top1=round(init_acc[r["id"]], 2) if r["id"] in init_acc else None)
            else:
                r.update(val_top1=None, test_top1=None, test_top5=None, init_val_top1=None)

    chosen = select(rows, sel, anc_params, depth) if sel.given else None
    child_dir = None
    if chosen is not None:
        child_dir = check_output(Path(out) if out else pool.children_dir / chosen["id"], force, "child")  # before any write

    new_revision = None
    if dm is not None:  # new stitches and/or training: a new revision
        new_revision = write_revision(pool, pm, base, spec, init, mode, has_stitches, trained, rows, dm, restitched)
        progress(f"pool revision {new_revision['id']} written ({len(new_revision['files'])} files)")
    rev = new_revision or base

    if chosen is not None:
        fmt = fmt or ("pt2" if export_program else "timm")
        onnx_data = (dm or pool_data(pool, data, spec.batch_size, num_workers, augment=False)) if fmt == "onnx" else None
        with pool.writing(" (a child)"):
            child_dir = export_descendant(pool, pm, chosen, rev, child_dir, force=force, fmt=fmt, precision=precision,
                                          dm=onnx_data)
    return AssembleResult(pool, rev, rows, chosen, child_dir, trained, time.perf_counter() - t0)


def export_descendant(pool: Pool, pm: PoolModel, row: dict, rev: dict | None, out: Path, *, force: bool = False,
                      fmt: str = "pt2", precision: str = "fp32", dm=None) -> Path:
    """A descendant as a timm local-dir child plus its format's file (model.pt2, or an ONNX
    file at ``precision`` whose accuracy ONNX Runtime measures on ``dm``'s test split),
    recording its numbers, the pool revision and the manifest checksum it came from."""
    from learngene.core.export import export_model, onnx_options

    s = pm.spec(row["id"])
    arch, args = pm.descendant_args(s)
    anc = pool.ancestor
    meta = {
        "descendant": row, "pool": str(pool.path.resolve()), "pool_manifest_sha256": pool.manifest_sha256(),
        "pool_revision": (rev or {}).get("id", "r0"), "ancestor": {k: anc[k] for k in ("name", "sha256", "params")},
        "aux": dict(zip(("narrow", "wide"), pool.aux_names)), "data": pool.data,
    }
    options = onnx_options(dm, precision) if fmt == "onnx" else {}
    return export_model(pm.descendant(s), out, arch, args, pool.data_config, {"id": s.id, **meta}, fmt=fmt, force=force,
                        **options)


def write_revision(pool: Pool, pm: PoolModel, base: dict | None, spec: AssembleSpec, init: str, mode: str,
                   had_stitches: bool, trained: dict, rows: list[dict], dm, restitched: list[str] = ()) -> dict:
    """The stitches (and, when instances were tuned, the auxiliary models' pieces) as a new
    revision of the pool, with the settings, the validation history and the descendant table."""
    files = {"stitches.safetensors": ({"id": "stitches", "kind": "stitches", "source": "assemble"}, flat_stitches(pm.stitches))}
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
        "parent": (base or {}).get("id", "r0"),
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


def _check_spec(spec: AssembleSpec, train: str, init: str) -> None:
    if train not in TRAIN_MODES:
        raise UserError(f"unknown --train {train!r} (choose from {', '.join(TRAIN_MODES)})")
    if init not in INITS:
        raise UserError(f"unknown --init {init!r} (choose from {', '.join(INITS)})")
    if spec.tune not in TUNE:
        raise UserError(f"unknown --tune {spec.tune!r} (choose from {', '.join(TUNE)})")
    if spec.sampling not in SAMPLING:
        raise UserError(f"unknown --sampling {spec.sampling!r} (choose from {', '.join(SAMPLING)})")
    if spec.epochs is not None:
        from learngene.core.limits import epochs

        epochs(spec.epochs, low=0)
    from learngene.core import limits

    limits.batch_size(spec.batch_size)
    limits.seed(spec.seed)
    for name, v in (("--lr", spec.lr), ("--stitch-lr", spec.stitch_lr)):
        if v <= 0:
            raise UserError(f"{name} must be > 0, got {v:g}")
    if not 0 <= spec.kl_weight <= 1:
        raise UserError(f"--kl must be in [0, 1], got {spec.kl_weight:g}")
