"""The public Python API: one call per verb of the CLI (which only parses, calls one of these,
and prints). `import learngene as lg` reaches them lazily: ``lg.build_pool``, ``lg.assemble``,
``lg.bench``, ``lg.target``, ``lg.export``, ``lg.kit``, ``lg.grow``, ``lg.adapt`` (with
``lg.adapt.apply`` and ``lg.adapt.ls``), ``lg.ancestor``, ``lg.descendants``, ``lg.inspect_pool``,
``lg.verify_pool``, ``lg.gc_pool``, ``lg.resolve``, and the configs ``lg.Pool``, ``lg.Recipe``,
``lg.Selection``, ``lg.AssembleSpec``, ``lg.Budget``.

Stages never import one another; this module is where they meet: a pool's members measured
(`bench`), the best one under a budget exported (`target`, from this device's report or a
device's latency.json), the device kit (`kit`), any member in any format (`export`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from learngene.core.errors import UserError
from learngene.measure.budget import Budget
from learngene.pool.store import Pool, Revision
from learngene.zoo import DESCENDANT_KINDS, ancestor_of, children, of_model, pool_data, pool_zoo, resolve


def _open(pool) -> Pool:
    return pool if isinstance(pool, Pool) else Pool.open(pool)


def _targs(trainer_args, label: str, progress: bool = True):
    """The Trainer settings a verb trains with: the caller's, else quiet defaults (a bar on a
    terminal, a line per epoch in a log)."""
    import sys

    from learngene.core.training import TrainerArgs

    if trainer_args is not None:
        return trainer_args
    tty = sys.stderr.isatty()
    return TrainerArgs(progress=progress and tty, log_lines=progress and not tty, label=label)


# --------------------------------------------------------------------------- ancestors


def ancestor(
    model: str | None = None,
    *,
    data=None,
    fine_tune: bool = False,
    refit: bool = False,
    retrain: bool = False,
    epochs=None,
    seed: int | None = None,
    pretrained: bool = False,
    checkpoint=None,
    allow_download: bool = False,
    trainer_args=None,
    progress: bool = True,
) -> dict:
    """What an ancestor is, training the embedded one when needed, or fitting it to a folder.

    Args:
        model: a reference (``embedded``, ``embedded:animals``, a timm name, ``local-dir:DIR``,
            ``POOL:MEMBER``); default the embedded ancestor.
        data: a folder (or embedded source): evaluate the ancestor there, or fit it with ``fine_tune``.
        fine_tune: fit the ancestor to ``data``'s classes (cached); ``refit``: again even if cached.
        retrain: train the embedded ancestor again even if cached.
        epochs, seed: the embedded ancestor's training (or, ``epochs``, the fit's); ``"auto"``
            trains until validation stops improving.
        pretrained, checkpoint, allow_download: the weights of a timm name.
        trainer_args: Lightning's settings (`learngene.core.training.TrainerArgs`).

    Returns the facts ``learngene ancestor`` prints (name, source, params, shape, sha256 and
    the metrics known; after fitting, the accuracy before and after and the pixel baselines).
    """
    from learngene.core import limits
    from learngene.core.data import open_source
    from learngene.models.embedded import describe, embedded_ancestor
    from learngene.models.fitted import fit_ancestor
    from learngene.models.refs import EMBEDDED, load_model, parse_ref

    ref = parse_ref(model, weights=pretrained or checkpoint is not None)
    if epochs is not None:
        limits.epochs(epochs)
    if seed is not None:
        limits.seed(seed)
    source = open_source(data) if data is not None else None  # a bad folder is refused before any model is loaded
    if fine_tune or refit:
        if source is None:
            raise UserError("--fine-tune needs --data DIR: the folder whose classes the ancestor is fitted to")
        if retrain or seed is not None:
            raise UserError("--retrain/--seed are for the embedded ancestor's own training, not --fine-tune")
        base = load_model(
            ref, pretrained=pretrained, checkpoint=checkpoint, allow_download=allow_download, progress=progress
        )
        anc = fit_ancestor(
            base,
            source,
            epochs=epochs,
            trainer_args=_targs(trainer_args, "ancestor (fitting)", progress),
            progress=progress,
            refit=refit,
        )
        return {**describe(anc), "fitted_from": base.source, "fitted": anc.source.split(":", 1)[1]}
    if ref.kind == EMBEDDED:
        if pretrained or checkpoint:
            raise UserError("the embedded ancestor takes no --pretrained/--checkpoint (use --retrain to retrain it)")
        anc = embedded_ancestor(
            retrain=retrain,
            progress=progress,
            epochs=epochs,
            seed=seed,
            name=ref.target,
            trainer_args=_targs(trainer_args, "ancestor (embedded)", progress),
        )
    else:
        if retrain or epochs is not None or seed is not None:
            raise UserError("--retrain/--epochs/--seed apply to the embedded ancestor only")
        anc = resolve(
            model, pretrained=pretrained, checkpoint=checkpoint, allow_download=allow_download, progress=progress
        ).load()
    return describe(anc, source)


# --------------------------------------------------------------------------- the pool


def build_pool(
    recipe=None,
    *,
    model: str | None = None,
    data=None,
    out=None,
    epochs=None,
    overrides=(),
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    resume: bool = False,
    force: bool = False,
    pretrained: bool = False,
    checkpoint=None,
    allow_download: bool = False,
    trainer_args=None,
    workers: int | None = None,
    progress: bool = True,
) -> Pool | None:
    """Distil the ancestor into the auxiliary models of a recipe and store their blocks as a pool.

    Args:
        recipe: a recipe name shipped in pools/ (``embedded``, ``animals``, ``deit-base-d6``), a
            YAML path, or a `Recipe`; default ``embedded``.
        model: the ancestor (default: the recipe's); ``pretrained`` / ``checkpoint`` /
            ``allow_download`` give a timm name its weights.
        data: a folder (default: the recipe's embedded data); the ancestor fitted to its
            classes (``ancestor(fine_tune=True)``) is taken by itself.
        out: the pool folder (default ``pools/<recipe name>``).
        epochs: every auxiliary model's epochs, or ``"auto"``.
        overrides: ``KEY=VALUE`` recipe overrides (``distill.alpha=0.2``); ``lr``, ``batch_size``,
            ``seed`` are shorthands for ``auxiliary.*.lr``, ``distill.batch_size``, ``distill.seed``.
        resume: continue an interrupted build (a plain rerun does too); ``force``: replace the pool.
        trainer_args, workers: Lightning's settings and the DataLoader's worker processes.

    Returns the opened `Pool` (None on a DDP rank other than 0).
    """
    from learngene.core import limits
    from learngene.core.data import LearngeneDataModule
    from learngene.core.io import check_output
    from learngene.pool.build import build_pool as build
    from learngene.pool.build import resolve_recipe_path
    from learngene.pool.recipe import Recipe, load_recipe

    flags = [
        f"{k}={v}"
        for k, v in (("auxiliary.*.lr", lr), ("distill.batch_size", batch_size), ("distill.seed", seed))
        if v is not None
    ]
    limits.workers(workers)
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(resolve_recipe_path(recipe), [*overrides, *flags])
    out = Path(out).expanduser() if out else Path("pools") / rec.name
    if not resume:
        check_output(out, force, "pool")  # before loading (or training) any ancestor
    dm = LearngeneDataModule(data or rec.data or None, num_workers=workers)  # checks the folder now, too
    ref = model or (None if rec.ancestor == "embedded" else rec.ancestor)
    anc = resolve(
        ref, pretrained=pretrained, checkpoint=checkpoint, allow_download=allow_download, progress=progress
    ).load()
    return build(
        rec,
        out=out,
        ancestor=anc,
        data=dm,
        epochs=epochs,
        resume=resume,
        force=force,
        trainer_args=_targs(trainer_args, "build-pool", progress),
        num_workers=workers,
    )


def inspect_pool(path) -> dict:
    """What a pool holds: its ancestor, instances, auxiliary models, revisions and storage
    (bytes on disk, each file once, and the bytes each revision needs). Every file is re-hashed."""
    pool = Pool.open(path, verify=True)
    return {
        "path": str(pool.path),
        "ancestor": pool.ancestor,
        "instances": pool.info_rows(),
        "auxiliary": pool.auxiliary,
        "stored_params": pool.stored_params(),
        "storage": pool.storage(),
        "revisions": [
            {k: r.get(k) for k in ("id", "parent", "created", "train", "trained", "files")} for r in pool.revisions
        ],
    }


def verify_pool(path, clean: bool = False) -> dict:
    """Re-hash every file of a pool and check it holds finite numbers; list (``clean``:
    remove) what interrupted writers left. A file that fails is a one-line error naming it."""
    pool = Pool.open(path, verify=False)
    n = pool.verify(finite=True)
    left = pool.clean() if clean else pool.leftovers()
    return {
        "path": str(pool.path),
        "files": n,
        "leftovers": [str(p.relative_to(pool.path)) for p in left],
        "removed": clean,
    }


def gc_pool(path, keep=(), dry_run: bool = False) -> dict:
    """Drop the revisions neither latest, nor in ``keep``, nor named by a child or report, and
    the files no kept revision reads (see `Pool.gc`)."""
    return Pool.open(path, verify=True).gc([k for k in keep if k], dry_run=dry_run)


# --------------------------------------------------------------------------- descendants


def assemble(
    pool="pools/embedded",
    selection=None,
    *,
    spec=None,
    data=None,
    model: str | None = None,
    pretrained: bool = False,
    checkpoint=None,
    allow_download: bool = False,
    out=None,
    force: bool = False,
    trainer_args=None,
    workers: int | None = None,
    progress=None,
    **settings,
):
    """Stitch a pool's instances into descendants, train what is not trained yet, write a pool
    revision and, with a ``selection``, export the child.

    Args:
        pool: the pool (a folder or a `Pool`).
        selection: the child to export, a `Selection` (``size``, ``params``, ``flops`` or ``config``
            ``"J,K"``); none: train and write a revision only.
        spec: an `AssembleSpec` (training, stitch init and kinds, the revision to start from, the
            child's format and precision); ``settings``: its fields, replacing ``spec``'s
            (``epochs=40``, ``train="all"``, ``fmt="onnx"``, ...).
        data: the pool's data (default: the embedded source it was built on).
        model: the pool's ancestor, when it cannot be reloaded from where the pool recorded it.
        out, force: the child's folder (default ``POOL/children/<id>``), replace it.
        trainer_args, workers: Lightning's settings, DataLoader worker processes.
        progress: a callable taking a line per stage (default: silent).

    Returns an `AssembleResult`: the revision, the descendant table (params, FLOPs, accuracy),
    the chosen row and the child's folder.
    """
    from learngene.assembly.pipeline import assemble as run

    anc = None
    if model or pretrained or checkpoint:
        anc = resolve(model, pretrained=pretrained, checkpoint=checkpoint, allow_download=allow_download).load()
    return run(
        pool,
        selection,
        spec=spec,
        data=data,
        ancestor=anc,
        out=out,
        force=force,
        trainer_args=_targs(trainer_args, "assemble", progress is not None),
        num_workers=workers,
        progress=progress or (lambda m: None),
        **settings,
    )


def descendants(pool="pools/embedded", revision: str | None = "latest") -> list[dict]:
    """Every descendant of a pool with its static numbers (blocks, params, FLOPs) and the
    accuracy the revision measured (``assemble --list``)."""
    from learngene.assembly.pipeline import descendant_rows

    p = _open(pool)
    pm, _ = p.model(revision)
    return descendant_rows(p, pm, p.revision(revision))


# --------------------------------------------------------------------------- growth


def grow(
    model: str,
    *,
    method: str,
    out,
    embed_dim: int | None = None,
    depth: int | None = None,
    heads: int | None = None,
    head_dim: int | None = None,
    mlp_ratio: float | None = None,
    data=None,
    steps: int = 100,
    noise: float = 0.0,
    seed: int = 0,
    force: bool = False,
    checkpoint=None,
    pretrained: bool = False,
    trainer_args=None,
    progress: bool = True,
) -> dict:
    """A larger model that computes what the smaller one did, as a timm local-dir.

    Args:
        model: any reference (``embedded``, a timm name, ``local-dir:DIR``, ``POOL:MEMBER``).
        method: ``net2net``, ``expand`` (the exact expansions) or ``ligo`` (a learned operator).
        out, force: the grown model's folder; replace one learngene wrote.
        embed_dim, depth, heads, head_dim, mlp_ratio: the grown sizes (the rest kept).
        data, steps: what LiGO trains its operator on, and how many steps.
        noise: net2net's relative noise on the copies; seed: the new weights' random init.

    Returns the record saved with the model (sizes, params, max logit change, seconds).
    """
    from learngene.growth import methods

    out = methods.check_request(method=method, out=out, force=force, steps=steps, noise=noise, data=data, seed=seed)
    src = resolve(model, checkpoint=checkpoint, pretrained=pretrained, progress=progress).load()
    target = methods.resolve_target(src.model, method, embed_dim, depth, heads, mlp_ratio, head_dim)
    dm = methods.datamodule(src, data, seed=seed) if method == "ligo" else None
    return methods.grow_to_dir(
        src,
        method,
        out,
        target,
        dm=dm,
        steps=steps,
        noise=noise,
        seed=seed,
        force=force,
        trainer_args=_targs(trainer_args, "grow", progress),
    )


# --------------------------------------------------------------------------- deltas


def adapt(
    model: str,
    *,
    data,
    name: str,
    pool="pools/embedded",
    method: str = "lora",
    rank: int = 8,
    targets="qkv,proj,fc1,fc2",
    train_head: bool = False,
    epochs=10,
    lr: float | None = None,
    fraction: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    force: bool = False,
    checkpoint=None,
    trainer_args=None,
    progress: bool = True,
) -> dict:
    """Fit a model to a new task with a small stored delta (LoRA through PEFT, or a bottleneck
    adapter); the delta is stored as ``POOL/adapters/<name>`` (the pool the model belongs to).

    Args:
        model: a child or member of the pool, a timm local-dir, ``embedded``, or a timm name.
        data: the new task (a folder, or ``digits:rot90``).
        name: the task's name (the delta's folder).
        method, rank, targets, train_head: the delta (``lora`` / ``adapter``, its rank, the
            block linears it adapts, whether the classifier trains too).
        epochs, lr, fraction, seed, batch_size: its training (``epochs="auto"``: until
            validation stops improving; ``lr`` default per method).

    Returns the delta's record (test top1, trainable params, bytes, where it is).
    ``adapt.apply(model, delta, ...)`` applies or merges one; ``adapt.ls(pool)`` lists them.
    """
    from learngene.deltas import tasks

    adapters = tasks.adapters_for(model, pool)
    tasks.check_request(name=name, method=method, lr=lr, rank=rank, adapters=adapters, force=force)
    member = resolve(model, pool=pool, checkpoint=checkpoint, progress=False)
    return tasks.adapt(
        member.load(),
        data,
        name=name,
        adapters=adapters,
        ref=tasks.base_ref(model, member),
        method=method,
        rank=rank,
        targets=targets,
        train_head=train_head,
        epochs=epochs,
        lr=lr,
        train_fraction=fraction,
        seed=seed,
        force=force,
        trainer_args=_targs(trainer_args, "adapt", progress),
        progress=progress,
        batch_size=batch_size,
    )


def apply_delta(
    model: str,
    delta: str,
    *,
    pool="pools/embedded",
    merge: bool = False,
    out=None,
    data=None,
    force: bool = False,
    checkpoint=None,
) -> dict:
    """Apply a stored delta to its base (``merge``: fold a LoRA delta into the weights, written
    to ``out`` as a timm local-dir) and measure it on its task's test split.

    Args:
        model: the base the delta was trained on.
        delta: a task of the pool, or a delta folder.
        merge, out, force: fold it in, write the merged model there, replace that folder.
        data: the data to measure on (default: the delta's task).
    """
    from learngene.core.data import data_for
    from learngene.core.io import check_output
    from learngene.core.training import evaluate
    from learngene.core.vit import input_size
    from learngene.deltas import tasks
    from learngene.deltas.delta import read_meta

    if out and not merge:
        raise UserError("adapt apply: --out writes a merged model; add --merge")
    adapters = tasks.adapters_for(model, pool)
    if out:
        check_output(out, force)
    folder = tasks.resolve_delta(delta, adapters)
    read_meta(folder)  # a broken delta is refused before the base is loaded
    base = resolve(model, pool=pool, checkpoint=checkpoint, progress=False).load()
    merged, ad = tasks.apply(base, folder, merge=merge)
    dm = data_for(data or ad.meta.get("data"), base.data_config, augment=False)
    acc = evaluate(merged, dm.test_dataloader())
    res = {
        "task": ad.meta.get("task"),
        "method": ad.method,
        "data": dm.name,
        "test_top1": round(acc["top1"], 2),
        "merged": merge,
    }
    if merge:
        res["merge_max_logit_diff"] = tasks.max_diff(ad.model, merged, input_size(base.model))
        if out:
            res["out"] = str(tasks.export_merged(merged, ad, base, Path(out), force))
    return res


def list_deltas(pool="pools/embedded") -> list[dict]:
    """One row per delta stored in ``POOL/adapters`` (its task, method, base, accuracy, size)."""
    from learngene.deltas import tasks

    return tasks.ls(Path(pool) / "adapters")


adapt.apply = apply_delta
adapt.ls = list_deltas


# --------------------------------------------------------------------------- measuring and shipping

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


def bench(
    pool="pools/embedded",
    *,
    runtimes=("torch",),
    precisions=("fp32",),
    device: str = "cpu",
    threads: int | None = None,
    batch_sizes=(1, 32),
    data=None,
    include=(),
    revision: str | None = "latest",
    out=None,
    min_run_time: float = 0.3,
    num_workers: int | None = None,
    write: bool = True,
    progress: bool = False,
):
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
        revision: the pool revision measured.

    Returns a `BenchResult` (``.df``: one row per member, runtime, precision and batch size;
    ``.report``: where it went).
    """
    from learngene.measure.members import bench as measure
    from learngene.measure.members import parse_batch_sizes, resolve_device, set_threads
    from learngene.measure.runtimes import plan

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
    res = measure(
        members,
        dm,
        runtimes=runtimes,
        precisions=precisions,
        device=device,
        batch_sizes=batch_sizes,
        out=out,
        min_run_time=min_run_time,
        meta=meta,
        write=False,
        progress=progress,
    )
    res.report = Path(out) if out else pool.folder("reports") / f"{dev.type}-{res.meta['created']}"
    if write:
        from learngene.measure.report import write_report

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
    from learngene.core.io import read_local_dir_config

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


def target(
    pool="pools/embedded",
    budget: Budget | None = None,
    *,
    runtime: str = "torch",
    precision: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    data=None,
    out=None,
    force: bool = False,
    remeasure: bool = False,
    train: bool = True,
    fmt: str | None = None,
    latency_file=None,
    progress: bool = False,
) -> TargetResult:
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
    from learngene.core.registries import FORMATS
    from learngene.measure.budget import pick
    from learngene.measure.members import resolve_device, set_threads
    from learngene.measure.runtimes import plan

    if not isinstance(budget, Budget):
        raise UserError("target needs a Budget (at least --max-latency-ms)")
    if fmt is not None:
        FORMATS.check(fmt, "--format")
    pool = _open(pool)
    if latency_file is not None:
        return _target_on_device(
            pool,
            latency_file,
            budget,
            precision=precision,
            data=data,
            out=out,
            force=force,
            train=train,
            fmt=fmt or "onnx",
            progress=progress,
        )
    precision = precision or "fp32"
    plan([runtime], [precision])  # a bad runtime, precision or device: refused before any work
    resolve_device(device)
    set_threads(threads)
    fmt = fmt or ("onnx" if runtime == "onnxruntime" else "pt2")
    rev = pool.head("latest").id
    if out is not None and Path(out).exists() and not force:
        from learngene.core.io import check_output, learngene_output

        if learngene_output(out) != "model folder":  # taken by something else: refused before anything is measured
            check_output(out, force, "child")
    report, rows, measured = _frontier(
        pool, rev, runtime, precision, budget.batch_size, device, data=data, remeasure=remeasure, progress=progress
    )
    rows = [r for r in rows if r["kind"] in DESCENDANT_KINDS]
    from learngene.measure.budget import WIDE_SPREAD

    best, alts, notes = pick(rows, budget)
    if (best.get("infer_step_spread") or 0) > WIDE_SPREAD:  # measured here: say so, --remeasure on a quiet spell
        notes.append(
            f"the pick's timing spread is {best['infer_step_spread']:.0%} in {report.name}: "
            "pass --remeasure on a quieter machine to be sure of it"
        )
    folder, reused = _child_out(pool, out, best["model"], force, best["model"], rev, fmt, precision)
    if reused:
        return TargetResult(best, alts, folder, report, measured, notes=notes, reused=True)
    child, trained, _ = _finish(
        pool,
        best,
        revision=rev,
        data=data,
        out=folder,
        force=force,
        train=train,
        fmt=fmt,
        precision=precision,
        progress=progress,
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
    from learngene.formats import calibration_of, file_accuracy, onnx_file
    from learngene.measure.budget import WIDE_SPREAD, device_slug, pick

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


def kit(
    pool="pools/embedded",
    *,
    out,
    precisions=("fp32", "int8"),
    batch_sizes=(1, 8),
    members=None,
    data=None,
    force: bool = False,
    progress=lambda m: None,
) -> Path:
    """A folder to copy to a device: every descendant of the latest revision (``members``: only
    these ids) as ONNX at each precision, kit.json (checksums, the host's accuracy of each file)
    and probe.py, which times them there with onnxruntime and numpy alone.

    Args:
        pool: the pool; out, force: the kit folder, replace one learngene wrote.
        precisions: ``fp32``, ``int8``, ``int8-static`` (a list or comma-separated).
        batch_sizes: what probe.py times; data: the pool's data (calibration, accuracy).
        progress: a callable taking a line per stage.
    """
    from learngene.measure.kit import write_kit

    pool = _open(pool)
    rev = pool.revision("latest")
    if rev is None:
        raise UserError(
            f"pool {pool.path} has no assembled revision yet (its stitches are not stored): "
            "run `learngene assemble` first"
        )
    dm = pool_data(pool, data, 64, augment=False)
    identity = {
        "pool": str(pool.path.resolve()),
        "pool_revision": rev["id"],
        "ancestor_sha256": pool.ancestor["sha256"],
        "revision_files": {e["file"]: e["sha256"] for e in rev["files"]},
    }
    zoo = pool_zoo(pool, dm=dm)
    ids = [m.strip() for m in (members.split(",") if isinstance(members, str) else members or []) if m.strip()]
    chosen = [zoo.get(i) for i in ids] if ids else list(zoo)
    return write_kit(
        chosen,
        dm,
        out,
        identity=identity,
        precisions=precisions,
        batch_sizes=batch_sizes,
        force=force,
        progress=progress,
    )


def export(
    ref,
    *,
    out,
    fmt: str = "onnx",
    precision: str = "fp32",
    pool=None,
    data=None,
    checkpoint=None,
    pretrained: bool = False,
    force: bool = False,
) -> Path:
    """Any member (a pool descendant or child, the ancestor, a grown or merged model, a timm
    name) in a format: a timm local-dir, plus model.pt2 or an ONNX file (each checked against
    the eager model before it is written; an ONNX file's accuracy measured by ONNX Runtime).

    Args:
        ref: the member (``POOL:MEMBER``, a child or descendant id with ``pool``, ``local-dir:DIR``,
            ``embedded``, a timm name with ``pretrained`` / ``checkpoint``).
        out, force: the export folder, replace one learngene wrote.
        fmt: ``timm``, ``pt2`` or ``onnx``; precision: ``fp32``, ``int8``, ``int8-static`` (onnx).
        data: calibration images and the ONNX file's accuracy (default the embedded digits).
    """
    from learngene.core.data import data_for
    from learngene.core.registries import FORMATS
    from learngene.formats import check_precisions, export_model, onnx_options

    FORMATS.check(fmt, "--format")
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
            raise UserError(
                f"data {dm.name} has {dm.num_classes} classes but {member.id} has {member.model().num_classes}"
            )
        options = onnx_options(dm, precision)
    cfg = {**member.data_config, "architecture": member.architecture}
    meta = {"id": member.id, "kind": member.kind, "accuracy": member.accuracy, "provenance": member.provenance}
    return export_model(
        member.model(),
        out,
        member.architecture,
        member.model_args,
        cfg,
        meta,
        fmt=fmt,
        force=force,
        what="output",
        **options,
    )


# --------------------------------------------------------------------------- serving


def serve(
    pool="pools/embedded",
    *,
    members=None,
    runtime: str = "torch",
    host: str = "127.0.0.1",
    port: int = 8000,
    slo_ms: float | None = None,
    token_file=None,
    threads: int | None = None,
    max_batch_size: int = 16,
    batch_timeout_ms: float = 2.0,
    max_queue: int = 64,
    max_body_mb: float = 16.0,
    revision: str | None = "latest",
    data=None,
    log_level: str = "warning",
    on_ready=None,
) -> None:
    """Serve a pool's members behind one Open Inference Protocol (KServe v2) endpoint until
    SIGINT / SIGTERM (which drain the requests in flight first).

    Args:
        pool: the pool (a folder or a `Pool`).
        members: the member ids served (default: every descendant); each is a v2 model, and the
            pool's name is a virtual model that picks one per request from its ``parameters``
            ``max_latency_ms`` / ``min_top1`` (see `learngene.serving.policy`).
        runtime: ``torch`` (the members as paths through the pool's blocks, held once) or
            ``onnxruntime`` (a session per member, initializers with the same bytes held once).
        host, port: where to listen (127.0.0.1 unless told otherwise).
        slo_ms: the latency budget of a virtual-model request that names none: under load a
            smaller member answers, beyond what the smallest holds the answer is 503 + Retry-After.
        token_file: a file holding a bearer token every request but the health probes must carry.
        threads: the inference worker's intra-op threads (default: the cores).
        max_batch_size, batch_timeout_ms: LitServe's dynamic batching.
        max_queue: requests in flight before new ones get 503; max_body_mb: the largest body.
        revision, data: the pool revision served; the data its frontier is measured on when this
            host has no bench report of that revision yet (one is made then).
    """
    from learngene.core import limits

    try:
        from learngene.serving.engine import frontier_from_rows
        from learngene.serving.engine import serve as run
    except ImportError as e:
        need = f"learngene serve needs LitServe ({e.name} is missing)"
        raise UserError(f"{need}: pip install 'learngene[serve]'") from None

    if runtime not in ("torch", "onnxruntime"):
        raise UserError(f"--runtime {runtime!r}: serve runs the members in torch or onnxruntime")
    port = limits.int_in(port, "--port", 1, 65535)
    threads = limits.threads(threads) or limits.cores()
    max_batch_size = limits.int_in(max_batch_size, "--max-batch-size", 1, 256)
    max_queue = limits.int_in(max_queue, "--max-queue", 1, 10_000)
    batch_timeout_ms = limits.float_in(batch_timeout_ms, "--batch-timeout-ms", 0.0, 1000.0)
    max_body = int(limits.float_in(max_body_mb, "--max-body-mb", 0.001, 1024.0) * 2**20)
    if slo_ms is not None:
        slo_ms = limits.float_in(slo_ms, "--slo-ms", 0.0, 600_000.0, low_open=True)
    token = None
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise UserError(f"--token-file {token_file}: {e.strerror}") from None
        if not token or len(token) > 4096 or any(c.isspace() for c in token):
            raise UserError(f"--token-file {token_file}: expected one token (no spaces, at most 4096 characters)")
    pool = _open(pool)
    rev = pool.head(revision).id
    ids = [s["id"] for s in descendants(pool, revision)]
    wanted = ids if not members else [m.strip() for m in (members.split(",") if isinstance(members, str) else members)]
    unknown = [m for m in wanted if m not in ids]
    if unknown:
        raise UserError(f"--members: {unknown[0]!r} is not a descendant of {pool.path} (e.g. {', '.join(ids[:3])})")
    torch.set_num_threads(threads)
    # batch 1 for each member's latency, batch 32 (bench's default second size, when the report
    # has it) for what each further image of a request adds
    # in the runtime that will serve them
    _, rows, measured = _frontier(pool, rev, runtime, "fp32", (1, 32), "cpu", data=data, threads=threads)
    front = frontier_from_rows(rows, wanted)
    if len(front) < len(wanted) and not measured:  # a report that lacks a member: measure now
        _, rows, _ = _frontier(pool, rev, runtime, "fp32", (1, 32), "cpu", data=data, threads=threads, remeasure=True)
        front = frontier_from_rows(rows, wanted)
    onnx = None
    if runtime == "onnxruntime":  # the very files bench timed (cached by graph and weights)
        from learngene.formats import member_onnx_files, shared_ort_sessions
        from learngene.serving.engine import time_sessions

        zoo = pool_zoo(pool, rev, dm=pool_data(pool, data, 64, augment=False))
        onnx = member_onnx_files([zoo.get(m) for m in front])

        sessions, _ = shared_ort_sessions(onnx, threads)  # the worker's sessions, timed as it will run them
        time_sessions(sessions, tuple(pool.data_config["input_size"]), front)
        del sessions
    cfg = pool.data_config
    run(
        str(pool.path),
        pool.path.name,
        rev,
        front,
        tuple(cfg["input_size"]),
        pool.num_classes,
        host=host,
        port=port,
        slo_ms=slo_ms,
        token=token,
        threads=threads,
        max_batch_size=max_batch_size,
        batch_timeout_ms=batch_timeout_ms,
        max_queue=max_queue,
        max_body=max_body,
        onnx=onnx,
        log_level=log_level,
        on_ready=on_ready,
    )
