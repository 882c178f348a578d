"""`build-pool`: distil the ancestor into each auxiliary model of a recipe, then store every
block as a learngene instance.

The build happens in a staging folder beside the output (``.<name>.partial``): finished
auxiliary models are written there at once, the one in training keeps Lightning
checkpoints there, and only when every model is done is the manifest written and the folder
renamed into place. So an interrupted build never leaves a half-written pool, and
``resume=True`` picks up where it stopped without losing a finished auxiliary model.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn as nn

from learngene.core import __version__
from learngene.core.convergence import Convergence
from learngene.core.data import LearngeneDataModule
from learngene.core.errors import UserError
from learngene.core.evaluation import evaluate
from learngene.core.io import check_finite, check_output, save_tensors, write_json_atomic
from learngene.core.processes import lock
from learngene.core.training import TrainerArgs, fit, resumable
from learngene.core.vit import ViTView, is_block_piece, split_pieces
from learngene.models.loading import LoadedModel
from learngene.pool.distill import STUDENT_ARCH, DistillModule, check_init, distill_pairs, make_student, student_args
from learngene.pool.recipe import Recipe, load_recipe, validate
from learngene.pool.store import FORMAT, FORMAT_VERSION, MANIFEST, Pool

RECIPES = Path(__file__).resolve().parents[2] / "pools"
# epochs: auto for an auxiliary model: at most 200 epochs, stopped 20 after its best validation top1
DISTILL_AUTO = Convergence(cap=200, patience=20)
DEFAULT_RECIPE = "embedded"


def resolve_recipe_path(recipe: str | os.PathLike | None) -> Path:
    """A path, or the name of a recipe shipped in pools/ ('embedded', 'deit-base-d6')."""
    if recipe is None:
        recipe = DEFAULT_RECIPE
    p = Path(recipe).expanduser()
    if p.is_file():
        return p
    for base in (Path.cwd() / "pools", RECIPES):
        cand = base / f"{recipe}.yaml"
        if cand.is_file():
            return cand
    raise UserError(f"recipe not found: {recipe}")


def _stage(out: Path, key: dict, resume: bool, force: bool) -> Path:
    stage = out.with_name(f".{out.name}.partial")
    if stage.exists():
        saved = {}
        try:
            saved = json.loads((stage / "build.json").read_text())
        except (OSError, json.JSONDecodeError):
            pass
        if saved == key and not force:
            # the same recipe, ancestor and data: a plain rerun continues it (--resume says so explicitly)
            if not resume:
                import sys

                print(f"learngene: continuing the interrupted build in {stage} (--force starts over)", file=sys.stderr)
            return stage
        if not force:
            raise UserError(
                f"the interrupted build in {stage} used another recipe, ancestor or data: "
                "pass --force to discard it and start over"
            )
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    write_json_atomic(stage / "build.json", key)
    return stage


def build_pool(
    recipe: str | os.PathLike | Recipe | None = None,
    *,
    out: str | os.PathLike | None = None,
    ancestor: LoadedModel | None = None,
    data: str | os.PathLike | LearngeneDataModule | None = None,
    epochs: int | None = None,
    overrides: list[str] = (),  # --set KEY=VALUE, when `recipe` is a name or path
    resume: bool = False,
    force: bool = False,
    trainer_args: TrainerArgs | None = None,
    callbacks: list | None = None,
    num_workers: int | None = None,
    allow_random_init: bool = False,
) -> Pool | None:
    """Build a pool and return it opened (None on DDP ranks other than 0). A random-init
    ancestor is refused (distilling it builds a meaningless pool) unless
    ``allow_random_init`` (tests of the mechanics)."""
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(resolve_recipe_path(recipe), list(overrides))
    if epochs is not None:
        from learngene.core.limits import epochs as bounded

        epochs = bounded(epochs)
        for a in rec.auxiliary:
            a.epochs = epochs
    out = Path(out).expanduser() if out else Path("pools") / rec.name
    check_output(out, force, "pool")
    if ancestor is None:
        from learngene.models.refs import load_model

        ancestor = load_model(None if rec.ancestor == "embedded" else rec.ancestor)
    if ancestor.source == "random-init" and not allow_random_init:
        raise UserError(
            f"ancestor {ancestor.name} has no weights: pass --pretrained or --checkpoint FILE "
            "(distilling a random-init model would build a meaningless pool)"
        )
    check_finite(ancestor.model.state_dict(), f"ancestor {ancestor.name} ({ancestor.source})")
    validate(rec, ancestor.view.depth)
    for a in rec.auxiliary:  # every start possible, before the first auxiliary trains
        check_init(a, ancestor.model)
    if isinstance(data, LearngeneDataModule):
        dm = data
        dm.batch_size = rec.distill.batch_size
    else:
        dm = LearngeneDataModule(
            data if data is not None else (rec.data or None), batch_size=rec.distill.batch_size, num_workers=num_workers
        )
    if not dm.embedded:
        from learngene.models.fitted import ancestor_for

        dm.for_model(ancestor.data_config)
        ancestor = ancestor_for(ancestor, dm)  # the one fitted to the data's classes, when the head has others
        dm.for_model(ancestor.data_config)
    elif ancestor.view.shape.img_size != dm.img_size:
        raise UserError(
            f"the embedded {dm.name} are {dm.img_size}x{dm.img_size} but {ancestor.name} reads "
            f"{ancestor.view.shape.img_size}x{ancestor.view.shape.img_size} images: pass --data DIR"
        )
    else:
        names = list(map(str, (ancestor.pretrained_cfg or {}).get("label_names") or dm.classes))
        if len(names) == dm.num_classes and names != list(dm.classes):  # e.g. the animals' ancestor on the digits
            raise UserError(
                f"ancestor {ancestor.name} knows other classes ({', '.join(names[:3])}, ...) than data "
                f"{dm.name} ({', '.join(dm.classes[:3])}, ...): pass the --data it was trained on"
            )
    n_cls = ancestor.view.shape.num_classes
    if dm.num_classes != n_cls:
        raise UserError(f"data {dm.name} has {dm.num_classes} classes but the ancestor's head has {n_cls}")

    key = {"recipe": rec.to_dict(), "ancestor_sha256": ancestor.checksum, "data": dm.fingerprint()}
    targs = trainer_args or TrainerArgs()
    rank0 = int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
    with contextlib.ExitStack() as held:
        stage = out.with_name(f".{out.name}.partial")
        if rank0:
            # one builder of this pool at a time, for the whole build (a second one, --force or
            # not, would delete or overwrite the first one's staging folder)
            held.enter_context(lock(out.with_name(f".{out.name}.lock"), f"pool {out}", wait=False))
            if force and out.exists():
                say_what_force_deletes(out)
            fresh = not stage.exists()
            stage = _stage(out, key, resume, force)
        try:
            fragments = _distil(rec, stage, ancestor, dm, targs, resume, callbacks)
        except Exception:
            # nothing to resume (no auxiliary model finished, no checkpoint): leave nothing behind
            if rank0 and fresh and not list(stage.glob("*.done.json")) and not list(stage.glob("checkpoints/*/*.ckpt")):
                shutil.rmtree(stage, ignore_errors=True)
            raise
        if not rank0:
            return None
        return _write(rec, stage, out, ancestor, dm, fragments, force)


def say_what_force_deletes(out: Path) -> None:
    """--force replaces a pool: say, in one line, what goes with it."""
    import sys

    try:
        old = Pool.open(out, verify=False)
        revisions = len(old.revisions)
    except UserError:
        revisions = 0
    counts = {"revision": revisions}
    for sub, what in (("children", "child"), ("reports", "report"), ("adapters", "delta")):
        d = out / sub
        counts[what] = len([p for p in d.iterdir() if not p.name.startswith(".")]) if d.is_dir() else 0
    lost = [f"{n} {w}{'ren' if w == 'child' and n != 1 else 's' if n != 1 else ''}" for w, n in counts.items() if n]
    if lost:
        print(f"learngene: --force replaces pool {out}: its {', '.join(lost)} go with it", file=sys.stderr)


def _distil(rec, stage: Path, ancestor, dm, targs, resume: bool, callbacks) -> dict:
    """Distil every auxiliary model of the recipe not finished yet; their manifest fragments."""
    import dataclasses

    import lightning as L

    from learngene.core.callbacks import StageClock

    fragments = {}
    todo = [a for a in rec.auxiliary if not (stage / f"{a.name}.done.json").is_file()]
    if len(todo) > 1:  # each auxiliary's lines say what the whole build has left (a cap where it is auto)
        dm.setup("fit")
        per_epoch = len(dm.train_dataloader())
        runs = [(DISTILL_AUTO.cap if a.epochs == "auto" else int(a.epochs)) * per_epoch for a in todo]
        if rec.distill.max_steps > 0:
            runs = [min(n, rec.distill.max_steps) for n in runs]
        targs = dataclasses.replace(targs, stage=StageClock("build-pool", sum(runs)))
    for spec in rec.auxiliary:
        done = stage / f"{spec.name}.done.json"
        if done.is_file():  # finished before an interruption: keep it
            fragments[spec.name] = json.loads(done.read_text())
            continue
        L.seed_everything(rec.distill.seed, verbose=False)
        student = make_student(spec, ancestor.model, rec.distill.seed)
        module = DistillModule(student, ancestor.model, spec, rec.distill)
        ckpt_dir = stage / "checkpoints" / spec.name
        targs.label = f"build-pool {spec.name}"
        extra = {"max_steps": rec.distill.max_steps} if rec.distill.max_steps > 0 else {}
        t0 = time.perf_counter()
        # the W maps go with the student: they initialise stitches later
        record, trainer = fit(
            module,
            dm,
            targs,
            epochs=spec.epochs,
            monitor="val/top1",
            auto=DISTILL_AUTO,
            part=lambda m: nn.ModuleDict({"student": m.student, "W": m.W, "V": m.V}),
            default_root_dir=stage,
            **resumable(ckpt_dir, callbacks or ()),
            **extra,
        )
        seconds = time.perf_counter() - t0
        if not trainer.is_global_zero:
            continue
        student = module.student.cpu().eval()
        test = evaluate(student, dm.test_dataloader())
        val = evaluate(student, dm.val_dataloader())
        # Only the W maps (block outputs) are kept: they initialise stitches. The V maps
        # served the attention loss alone.
        maps = {f"W.{i}.{k}": v for i, m in enumerate(module.W) for k, v in m.state_dict().items()}
        meta = {
            "name": spec.name,
            "architecture": STUDENT_ARCH,
            "model_args": student_args(spec, ancestor.model),
            "params": sum(p.numel() for p in student.parameters()),
            "init": spec.init,
            "pairs": [list(p) for p in distill_pairs(spec, ancestor.view.depth)],
            "metrics": {
                "test_top1": round(test["top1"], 2),
                "test_top5": round(test["top5"], 2),
                "val_top1": round(val["top1"], 2),
                "epochs": trainer.current_epoch,
                "steps": trainer.global_step,
                "seconds": round(seconds, 1),
                "devices": trainer.world_size,
                "training": {k: v for k, v in record.items() if k not in ("steps",)},
            },
        }
        fragments[spec.name] = write_aux(stage, spec.name, student, maps, meta)
        shutil.rmtree(ckpt_dir, ignore_errors=True)

    return fragments


def _write(rec, stage: Path, out: Path, ancestor, dm, fragments: dict, force: bool) -> Pool:
    info = ancestor.info()
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "learngene": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ancestor": {
            "name": ancestor.name,
            "source": ancestor.source,
            "sha256": ancestor.checksum,
            "params": info["params"],
            "embed_dim": info["embed_dim"],
            "depth": info["depth"],
            "heads": info["heads"],
            "test_top1": info.get("test_top1"),
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in ancestor.data_config.items()},
        },
        "data": dm.fingerprint(),
        "recipe": rec.to_dict(),
        "auxiliary": {n: f["aux"] for n, f in fragments.items()},
        "instances": [e for f in fragments.values() for e in f["instances"]],
        "components": [e for f in fragments.values() for e in f["components"]],
        "revisions": [],  # written by assemble
        "torch": torch.__version__,
    }
    finalize(stage, out, manifest, force)
    return Pool.open(out)


def write_aux(stage: Path, aux: str, model: torch.nn.Module, maps: dict[str, torch.Tensor], spec_meta: dict) -> dict:
    """Write one finished auxiliary model's instances and components into the staging folder
    and return its manifest fragment (also saved there, so a resumed build keeps it)."""
    shape = ViTView(model).shape
    instances, components = [], []
    for name, tensors in split_pieces(model.state_dict()).items():
        params = sum(v.numel() for v in tensors.values())
        if is_block_piece(name):
            file = f"instances/{aux}.{name}.safetensors"
            instances.append(
                {
                    "id": f"{aux}.{name}",
                    "source": aux,
                    "width": shape.embed_dim,
                    "heads": shape.num_heads,
                    "block": int(name[1:]),
                    "file": file,
                    "sha256": save_tensors(stage / file, tensors),
                    "params": params,
                }
            )
        else:
            file = f"components/{aux}.{name}.safetensors"
            components.append(
                {
                    "id": f"{aux}.{name}",
                    "source": aux,
                    "kind": name,
                    "file": file,
                    "sha256": save_tensors(stage / file, tensors),
                    "params": params,
                }
            )
    file = f"components/{aux}.maps.safetensors"
    components.append(
        {
            "id": f"{aux}.maps",
            "source": aux,
            "kind": "maps",
            "file": file,
            "sha256": save_tensors(stage / file, maps),
            "params": sum(v.numel() for v in maps.values()),
        }
    )
    instances.sort(key=lambda e: e["block"])
    fragment = {"aux": spec_meta, "instances": instances, "components": components}
    write_json_atomic(stage / f"{aux}.done.json", fragment)
    return fragment


def finalize(stage: Path, out: Path, manifest: dict, force: bool) -> Path:
    """Write the manifest last, then move the staged folder into place in one rename."""
    for leftover in list(stage.glob("*.done.json")) + [stage / "checkpoints"]:
        if leftover.is_dir():
            shutil.rmtree(leftover)
        elif leftover.exists():
            leftover.unlink()
    write_json_atomic(stage / MANIFEST, manifest)
    old = None
    if out.exists():
        if not force:
            raise UserError(f"pool exists: {out} (pass --force to replace it)")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out
