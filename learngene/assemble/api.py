"""`assemble`: from a pool to trained descendants and an exported child.

    open + verify the pool -> PoolModel at a revision -> stitch init (new stitches only)
    -> train (all jointly / one target / none) -> evaluate -> choose by budget
    -> new pool revision (never over the distilled originals) -> export the child
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from learngene.assemble.configs import DescSpec, choose, parse_config, size_budget
from learngene.assemble.model import PoolModel, count_flops, count_params
from learngene.assemble.stitch_init import INITS, init_distill, init_lstsq
from learngene.assemble.train import DEFAULT_EPOCHS, SAMPLING, TUNE, AssembleSpec, train_descendants
from learngene.errors import UserError
from learngene.pool.store import Pool, split_model

TRAIN_MODES = ("auto", "all", "target", "none")
INIT_IMAGES = 256  # training images for least-squares stitch init


@dataclass
class Selection:
    """How to pick the child to export (at most one of these)."""

    size: str | None = None
    params: float | None = None
    flops: float | None = None
    config: str | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.size, self.params, self.flops, self.config))


@dataclass
class AssembleResult:
    pool: Pool
    revision: dict | None
    rows: list[dict]
    chosen: dict | None = None
    child: Path | None = None
    trained: dict = field(default_factory=dict)
    seconds: float = 0.0


def aux_pair(pool: Pool) -> tuple[str, str]:
    """(narrow, wide) auxiliary model names: the two models of the pool, by width."""
    aux = pool.auxiliary
    if len(aux) != 2:
        raise UserError(f"pool {pool.path} has {len(aux)} auxiliary models; assemble stitches exactly two (narrow and wide)")
    a, b = sorted(aux, key=lambda n: aux[n]["model_args"]["embed_dim"])
    if aux[a]["model_args"]["depth"] != aux[b]["model_args"]["depth"]:
        raise UserError(f"pool {pool.path}: {a} and {b} differ in depth; stitching needs equal depths")
    return a, b


def load_pool_model(pool: Pool, revision: str | None = "latest") -> tuple[PoolModel, bool]:
    """The pool's descendants on shared weights as of a revision; True when the revision
    already holds trained stitches."""
    n, w = aux_pair(pool)
    rid = (pool.revision(revision) or {}).get("id")
    has = pool.has_piece("stitches", rid)
    stitches = {}
    if has:
        flat = pool.piece("stitches", rid)
        for key, v in flat.items():
            sid, name = key.rsplit(".", 1)
            stitches.setdefault(sid, {})[name] = v
    meta = pool.auxiliary
    pm = PoolModel(pool.aux_model(n, rid), pool.aux_model(w, rid), meta[n]["model_args"], meta[w]["model_args"],
                   stitches=stitches, aux_arch=meta[n]["architecture"])
    pm.aux_names = (n, w)
    return pm, has


def init_images(dm) -> torch.Tensor:
    """The training images least-squares stitch init fits on: INIT_IMAGES spread evenly."""
    ds = dm.dataset("train")
    idx = torch.linspace(0, len(ds) - 1, min(INIT_IMAGES, len(ds))).long().tolist()
    return torch.stack([ds[i][0] for i in idx])


def init_stitches(pool: Pool, pm: PoolModel, how: str, dm) -> None:
    if how not in INITS:
        raise UserError(f"unknown --init {how!r} (choose from {', '.join(INITS)})")
    if how == "lstsq":
        init_lstsq(pm, init_images(dm))
    else:
        n, w = pm.aux_names
        init_distill(pm, pool.component(n, "maps"), pool.component(w, "maps"),
                     pool.auxiliary[n]["pairs"], pool.auxiliary[w]["pairs"])


def static_rows(pm: PoolModel, img_size: int) -> list[dict]:
    """id, kind, j, k, blocks, params, FLOPs (per image) of every descendant."""
    rows = []
    for s in pm.specs:
        model = pm.descendant(s)
        rows.append({"id": s.id, "kind": s.kind, "j": s.j, "k": s.k, "blocks": s.n_blocks,
                     "params": count_params(model), "flops": count_flops(model, img_size)})
    return rows


@torch.no_grad()
def evaluate_specs(pm: PoolModel, specs: list[DescSpec], loader, device="cpu") -> dict[str, dict]:
    """top1 / top5 of several descendants in one pass over the loader."""
    from learngene.training import topk_hits

    pm.eval().to(device)
    hits = {s.id: {1: 0, 5: 0} for s in specs}
    n = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        for s in specs:
            for k, h in topk_hits(pm(x, s), y).items():
                hits[s.id][k] += h
        n += len(y)
    pm.cpu()
    return {sid: {f"top{k}": round(100 * h / n, 2) for k, h in hs.items()} for sid, hs in hits.items()}


def teacher_for(pool: Pool, ancestor=None):
    """The pool's ancestor (the KL teacher), checked against the checksum the pool recorded."""
    from learngene.ancestry import load_ancestor

    rec = pool.manifest["ancestor"]
    if ancestor is None:
        src = rec.get("source", "")
        if rec["name"] == "embedded":
            ancestor = load_ancestor(None, progress=False)
        elif src.startswith("checkpoint:"):
            ancestor = load_ancestor(rec["name"], checkpoint=src[len("checkpoint:"):])
        elif src.startswith("local-dir:"):
            ancestor = load_ancestor(src)
        elif src == "timm-cache":
            ancestor = load_ancestor(rec["name"], pretrained=True)
        else:
            raise UserError(f"cannot reload the ancestor of {pool.path} ({src}): pass --checkpoint FILE, or --kl 0")
    if ancestor.checksum != rec["sha256"]:
        raise UserError(f"ancestor {ancestor.name} ({ancestor.source}) is not the one pool {pool.path} was built from "
                        f"(sha256 {ancestor.checksum[:12]} vs {rec['sha256'][:12]})")
    return ancestor


def make_datamodule(pool: Pool, data, batch_size: int, num_workers: int | None):
    from learngene.data import LearngeneDataModule

    if isinstance(data, LearngeneDataModule):
        dm = data
        dm.batch_size = batch_size
    else:
        dm = LearngeneDataModule(data, batch_size=batch_size, num_workers=num_workers)
    if dm.root is not None:
        dm.data_config = dict(pool.manifest["ancestor"]["data_config"])
    n_cls = pool.auxiliary[aux_pair(pool)[1]]["model_args"]["num_classes"]
    if dm.num_classes != n_cls:
        raise UserError(f"data {dm.name} has {dm.num_classes} classes but the pool's heads have {n_cls}")
    return dm


def select(rows: list[dict], sel: Selection, ancestor_params: int, depth: int) -> dict:
    if sum(v is not None for v in (sel.size, sel.params, sel.flops, sel.config)) > 1:
        raise UserError("choose the child one way: --size, --params, --flops or --config")
    if sel.config is not None:
        sid = parse_config(sel.config, depth).id
        return next(r for r in rows if r["id"] == sid)
    if sel.size is not None:
        return choose(rows, max_params=size_budget(sel.size, ancestor_params), what=f"--size {sel.size}")
    if sel.params is not None:
        return choose(rows, max_params=sel.params, what="--params")
    return choose(rows, max_flops=sel.flops, what="--flops")


def assemble(
    pool: str | os.PathLike | Pool = "pools/embedded",
    selection: Selection | None = None,
    train: str = "auto",
    init: str = "lstsq",
    spec: AssembleSpec | None = None,
    revision: str | None = "latest",
    data=None,
    ancestor=None,
    out: str | os.PathLike | None = None,
    force: bool = False,
    export_program: bool = True,
    trainer_args=None,
    num_workers: int | None = None,
    progress=print,
) -> AssembleResult:
    t0 = time.perf_counter()
    sel = selection or Selection()
    spec = spec or AssembleSpec()
    _check_spec(spec, train, init)
    pool = pool if isinstance(pool, Pool) else Pool.open(pool)
    n, w = aux_pair(pool)
    depth = pool.auxiliary[n]["model_args"]["depth"]
    if sel.config is not None:
        parse_config(sel.config, depth)  # bad --config: refused before any work
    if sel.size is not None:
        size_budget(sel.size, 1)
    if sel.given and (out is not None or sel.config is not None):  # the child folder is known already
        from learngene.assemble.export import check_child_dir

        check_child_dir(Path(out) if out is not None else pool.path / "children" / parse_config(sel.config, depth).id, force)

    base = pool.revision(revision)
    pm, has_stitches = load_pool_model(pool, revision)
    img_size = pool.auxiliary[n]["model_args"]["img_size"]
    rows = static_rows(pm, img_size)
    # The child as far as it can be chosen now (the pool's evaluation, else the size): what
    # a target run trains, and an impossible budget refused before any work.
    target = select(_with_accuracy(rows, base), sel, pool.manifest["ancestor"]["params"], depth) if sel.given else None
    mode = train
    if mode == "auto":
        # Train what is not trained yet: everything when no child is asked for, else the child.
        done = trained_ids(pool, base)
        if target is None:
            mode = "none" if all(s.id in done for s in pm.specs) else "all"
        else:
            mode = "none" if target["id"] in done and has_stitches else "target"
    dm = None
    trained: dict = {}
    new_revision = None
    if mode != "none" or not has_stitches:
        dm = make_datamodule(pool, data, spec.batch_size, num_workers)
        if not has_stitches:
            import lightning as L

            L.seed_everything(spec.seed, verbose=False)
            init_stitches(pool, pm, init, dm)
            progress(f"stitches initialised ({init}) for {sum(s.kind == 'stitch' for s in pm.specs)} descendants")
        if mode == "target":
            if target is None:
                raise UserError("--train target needs the descendant: --size, --params, --flops or --config")
            specs = [pm.spec(target["id"])]
        elif mode == "all":
            specs = list(pm.specs)
        else:
            specs = []
        if specs:
            teacher = None
            if spec.kl_weight > 0:
                teacher = teacher_for(pool, ancestor).model
            if spec.epochs is None:
                spec.epochs = DEFAULT_EPOCHS["target" if mode == "target" else "all"]
            progress(f"training {len(specs)} descendant(s): {spec.epochs} epochs, tune {spec.tune}, "
                     f"lr {spec.lr:g} (inherited) / {spec.stitch_lr:g} (stitches), sampling {spec.sampling}")
            flops = {r["id"]: r["flops"] for r in rows}
            trained = train_descendants(pm, specs, spec, dm, teacher=teacher, flops=flops, trainer_args=trainer_args)
            trained["specs"] = [s.id for s in specs]
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
    else:
        rows = _with_accuracy(rows, base)

    chosen = select(rows, sel, pool.manifest["ancestor"]["params"], depth) if sel.given else None
    child_dir = None
    if chosen is not None:
        from learngene.assemble.export import check_child_dir

        child_dir = Path(out) if out else pool.path / "children" / chosen["id"]
        check_child_dir(child_dir, force)  # before anything is written

    if dm is not None:  # new stitches and/or training: a new revision
        new_revision = _write_revision(pool, pm, base, spec, init, mode, has_stitches, trained, rows, dm)
        progress(f"pool revision {new_revision['id']} written ({len(new_revision['files'])} files)")
    rev = new_revision or base

    if chosen is not None:
        from learngene.assemble.export import export_child
        from learngene.ancestry import file_sha256

        s = pm.spec(chosen["id"])
        arch, args = pm.descendant_args(s)
        meta = {
            "descendant": chosen, "pool": str(pool.path.resolve()), "pool_manifest_sha256": file_sha256(pool.path / "pool.json"),
            "pool_revision": (rev or {}).get("id", "r0"), "ancestor": {k: pool.manifest["ancestor"][k] for k in ("name", "sha256", "params")},
            "aux": {"narrow": n, "wide": w},
        }
        pcfg = {k: v for k, v in pool.manifest["ancestor"]["data_config"].items()}
        child_dir = export_child(pm.descendant(s), child_dir, arch, args, pcfg, meta, force=force, program=export_program)
    return AssembleResult(pool, rev, rows, chosen, child_dir, trained, time.perf_counter() - t0)


def trained_ids(pool: Pool, rev: dict | None) -> set[str]:
    """Descendants trained in a revision or its ancestors (the auxiliary models were
    trained by distillation)."""
    done = {"narrow", "wide"}
    while rev is not None:
        done |= set(rev.get("trained", []))
        rev = pool.revision(rev.get("parent"))
    return done


def _with_accuracy(rows: list[dict], rev: dict | None) -> list[dict]:
    measured = {d["id"]: d for d in (rev or {}).get("descendants", [])}
    out = []
    for r in rows:
        m = measured.get(r["id"], {})
        out.append({**r, **{k: m.get(k) for k in ("val_top1", "test_top1", "test_top5", "init_val_top1")}})
    return out


def _check_spec(spec: AssembleSpec, train: str, init: str) -> None:
    if train not in TRAIN_MODES:
        raise UserError(f"unknown --train {train!r} (choose from {', '.join(TRAIN_MODES)})")
    if init not in INITS:
        raise UserError(f"unknown --init {init!r} (choose from {', '.join(INITS)})")
    if spec.tune not in TUNE:
        raise UserError(f"unknown --tune {spec.tune!r} (choose from {', '.join(TUNE)})")
    if spec.sampling not in SAMPLING:
        raise UserError(f"unknown --sampling {spec.sampling!r} (choose from {', '.join(SAMPLING)})")
    if spec.epochs is not None and spec.epochs < 0:
        raise UserError(f"--epochs must be >= 0, got {spec.epochs}")
    if spec.lr <= 0 or spec.stitch_lr <= 0:
        raise UserError("--lr and --stitch-lr must be positive")
    if not 0 <= spec.kl_weight <= 1:
        raise UserError(f"--kl must be in [0, 1], got {spec.kl_weight}")


def _write_revision(pool, pm, base, spec, init, mode, had_stitches, trained, rows, dm) -> dict:
    import dataclasses

    files = {"stitches.safetensors": ({"id": "stitches", "kind": "stitches", "source": "assemble"},
                                      {f"{sid}.{k}": v for sid, m in pm.stitches.items() for k, v in m.state_dict().items()})}
    if trained and spec.tune == "all":
        for aux, model in zip(pm.aux_names, (pm.narrow, pm.wide)):
            for name, tensors in split_model(model).items():
                is_block = name.startswith("b") and name[1:].isdigit()
                sub = "instances" if is_block else "components"
                fields = {"id": f"{aux}.{name}", "source": aux, "kind": "instance" if is_block else name}
                if is_block:
                    fields["block"] = int(name[1:])
                files[f"{sub}/{aux}.{name}.safetensors"] = (fields, tensors)
    best = trained.get("best", {}) if trained else {}
    record = {
        "parent": (base or {}).get("id", "r0"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train": mode if trained else "none",
        "stitch_init": None if had_stitches else init,
        "settings": dataclasses.asdict(spec),
        "data": dm.fingerprint(),
        "trained": trained.get("specs", []) if trained else [],
        "steps": trained.get("steps", 0) if trained else 0,
        "best_epoch": best.get("epoch"),
        "val_history": [{"epoch": h["epoch"], "mean": round(h["mean"], 2)} for h in (trained or {}).get("history", [])],
        "descendants": rows,
    }
    return pool.add_revision(files, record)
