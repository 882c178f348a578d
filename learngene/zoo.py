"""The zoo: the one interface between stages.

A `Member` is a model of the zoo: an id, a kind, how to build its ``nn.Module`` (lazily:
a pool's 18 descendants share weights until one is built), how timm rebuilds it
(architecture + model_args, so it exports as a timm local-dir), the data config it reads,
params and FLOPs, the accuracy measured where it was made, its provenance (pool, revision,
checksums, trained or at its init) and the task it was made for (None: the zoo's data).

Producers hand out members: a pool's descendants and exported children and its ancestor
(here, reading the pool), grown and adapted models, the baselines. Consumers take them:
bench, target, export, the device kit. `resolve` turns any model reference a user types
into a member (`learngene.models.refs` for files; the pool for ``POOL:MEMBER``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from learngene.core.errors import UserError
from learngene.models.loading import LoadedModel
from learngene.models.refs import Ref, load_model, parse_ref
from learngene.pool.store import Pool, Revision

DESCENDANT_KINDS = ("narrow", "wide", "stitch")


@dataclass
class Member:
    id: str
    kind: str  # narrow | wide | stitch | child | ancestor | model | grown | adapted | snnet | vanilla | scratch
    build: Callable[[], nn.Module]
    architecture: str
    model_args: dict
    data_config: dict
    params: int | None = None
    flops: int | None = None
    accuracy: dict = field(default_factory=dict)  # val_top1 / test_top1 / test_top5, where measured
    provenance: dict = field(default_factory=dict)  # pool, revision, trained, source, checksums
    task: str | None = None  # the data it was made for, when not the zoo's
    _model: nn.Module | None = field(default=None, repr=False)
    _loaded: LoadedModel | None = field(default=None, repr=False)

    def model(self) -> nn.Module:
        """The member's module (built once)."""
        if self._model is None:
            self._model = self.build().eval()
        return self._model

    def load(self) -> LoadedModel:
        """The member as the core's LoadedModel (what grow, adapt and export take)."""
        if self._loaded is not None:
            return self._loaded
        return LoadedModel(
            model=self.model(),
            name=self.id,
            source=self.provenance.get("source", self.id),
            data_config=dict(self.data_config),
            metrics=dict(self.accuracy),
            architecture=self.architecture,
            model_args=dict(self.model_args),
        )

    @property
    def img_size(self) -> int:
        return (
            int(self.model_args["img_size"])
            if "img_size" in self.model_args
            else int(self.data_config["input_size"][-1])
        )

    @property
    def trained(self) -> bool:
        return bool(self.provenance.get("trained", True))

    def static(self) -> Member:
        """Count params and FLOPs if not known yet."""
        from learngene.stitch.stitched import count_flops, count_params

        if self.params is None:
            self.params = count_params(self.model())
        if self.flops is None:
            self.flops = count_flops(self.model(), self.img_size)
        return self

    def row(self) -> dict:
        return {"id": self.id, "kind": self.kind, "params": self.params, "flops": self.flops, **self.accuracy}


@dataclass
class Zoo:
    """Members of one method (a pool, a baseline) with what making them cost."""

    method: str
    members: list[Member]
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    stored_params: int = 0  # parameters kept on disk to make every member
    steps: int = 0  # optimizer steps spent training the members (all of them together)

    def __iter__(self):
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def get(self, member_id: str) -> Member:
        for m in self.members:
            if m.id == member_id:
                return m
        raise UserError(f"{self.method} has no member {member_id!r} (has: {', '.join(m.id for m in self.members)})")

    @property
    def models(self) -> dict[str, nn.Module]:
        return {m.id: m.model() for m in self.members}

    @property
    def rows(self) -> list[dict]:
        return [m.row() for m in self.members]


def of_model(lm: LoadedModel, kind: str = "model", member_id: str | None = None, **provenance) -> Member:
    """A loaded model as a member."""
    acc = {k: v for k, v in lm.metrics.items() if k in ("val_top1", "test_top1", "test_top5")}
    return Member(
        member_id or lm.name,
        kind,
        lambda: lm.model,
        lm.architecture,
        dict(lm.model_args),
        dict(lm.data_config),
        accuracy=acc,
        provenance={"source": lm.source, **provenance},
        _model=lm.model,
        _loaded=lm,
    )


# --------------------------------------------------------------------------- a pool's members


def pool_zoo(pool: Pool, revision: str | None = "latest", dm=None, pm=None, static: bool = False) -> Zoo:
    """A pool's descendants as of a revision (``static``: with params and FLOPs counted
    now). A pool never assembled has no trained stitches: they are least-squares
    initialised on ``dm`` (required then) and marked untrained."""
    from learngene.stitch.init import init_stitches
    from learngene.stitch.stitched import count_params

    has = True
    if pm is None:
        pm, has = pool.model(revision)
    if not has:
        if dm is None:
            raise UserError(f"pool {pool.path} has no trained stitches yet: run `learngene assemble` first")
        init_stitches(pm, "lstsq", dm)
    rev = pool.revision(revision)
    done = pool.trained_ids(rev) if has else {"narrow", "wide"}
    acc = pool.accuracy(rev)
    members = []
    for s in pm.specs:
        arch, args = pm.descendant_args(s)
        a = {
            k: v for k, v in acc.get(s.id, {}).items() if k in ("val_top1", "test_top1", "test_top5") and v is not None
        }
        members.append(
            Member(
                s.id,
                s.kind,
                lambda s=s: pm.descendant(s),
                arch,
                args,
                pool.data_config,
                accuracy=a,
                provenance={
                    "pool": str(pool.path),
                    "revision": Revision.of(rev).id,
                    "trained": s.id in done,
                    "stitch_kind": pm.kinds.get(s.id),
                    "source": f"{pool.path}:{s.id}",
                },
            )
        )
    if static:
        for m in members:
            m.static()
    return Zoo("pool", members, stored_params=count_params(pm))


def pool_data(pool: Pool, data, batch_size: int = 64, num_workers: int | None = None, augment: bool = True):
    """The data the pool's members read (the pool's ancestor's data config), refused when
    its classes differ from those the pool was built with. No data: the embedded source the
    pool was built on (the digits, the animals)."""
    from learngene.core.data import LearngeneDataModule, same_classes

    if data is None:
        data = pool.embedded_data
    dm = (
        data
        if isinstance(data, LearngeneDataModule)
        else LearngeneDataModule(data, num_workers=num_workers, augment=augment)
    )
    dm.batch_size = batch_size
    if not dm.embedded:
        dm.for_model(pool.data_config)
    if dm.num_classes != pool.num_classes:
        raise UserError(f"data {dm.name} has {dm.num_classes} classes but the pool's heads have {pool.num_classes}")
    same_classes(pool.data, dm, f"pool {pool.path}")
    return dm


def children(pool: Pool) -> list[Member]:
    """The pool's exported children (timm local-dirs under POOL/children)."""
    out = []
    for cfg in sorted(pool.children_dir.glob("*/config.json")):
        if not cfg.parent.name.startswith("."):  # a killed export's staging folder is no child
            out.append(child(cfg.parent, f"child:{cfg.parent.name}"))
    return out


def child(folder: Path, member_id: str) -> Member:
    lm = load_model(Ref("local-dir", str(folder)))
    from learngene.core.localdir import read_local_dir_config

    meta = read_local_dir_config(folder).get("learngene", {})
    desc = meta.get("descendant", {})
    m = of_model(lm, "child", member_id, pool=meta.get("pool"), revision=meta.get("pool_revision"))
    m.accuracy.update({k: desc[k] for k in ("val_top1", "test_top1", "test_top5") if desc.get(k) is not None})
    return m


def ancestor_of(pool: Pool, ancestor: LoadedModel | None = None, progress: bool = False) -> LoadedModel:
    """The pool's ancestor, reloaded from where the pool recorded it (or the one given),
    checked against the checksum the pool recorded."""
    rec = pool.ancestor
    if ancestor is None:
        src = rec.get("source", "")
        if rec["name"] == "embedded" or rec["name"].startswith("embedded:"):  # an embedded testbed's
            ancestor = load_model(rec["name"], progress=progress)
        elif src.startswith("checkpoint:"):
            ancestor = load_model(Ref("timm", rec["name"]), checkpoint=src[len("checkpoint:") :])
        elif src.startswith(("local-dir:", "fitted:")):
            ancestor = load_model(Ref("local-dir", src.split(":", 1)[1]))
        elif src == "timm-cache":
            ancestor = load_model(Ref("timm", rec["name"]), pretrained=True)
        else:
            raise UserError(f"cannot reload the ancestor of {pool.path} ({src}): pass --checkpoint FILE, or --kl 0")
    if ancestor.checksum != rec["sha256"]:
        raise UserError(
            f"ancestor {ancestor.name} ({ancestor.source}) is not the one pool {pool.path} was built from "
            f"(sha256 {ancestor.checksum[:12]} vs {rec['sha256'][:12]})"
        )
    return ancestor


def pool_member(pool: Pool, name: str, dm=None) -> Member:
    """One member of a pool by name: an exported child first (it is finished), else a
    descendant id, or 'ancestor'."""
    if name == "ancestor":
        return of_model(ancestor_of(pool), "ancestor", "ancestor")
    folder = pool.children_dir / name
    if (folder / "config.json").is_file():
        return child(folder, name)
    return pool_zoo(pool, dm=dm).get(name)


def member_ids(members: str | Sequence | None) -> tuple[str, ...]:
    """Member ids as a user gives them: a list, or one comma-separated string; () for all."""
    items = members.split(",") if isinstance(members, str) else members or ()
    return tuple(dict.fromkeys(str(i).strip() for i in items if str(i).strip()))


def pick_members(members: Sequence, ids: Sequence[str], where) -> list:
    """The ``members`` (members, or their ids) whose ids are ``ids`` (all when empty), in the
    members' order; an unknown id is one line naming it and a few that are there (bench, kit
    and serve alike)."""
    have = [m if isinstance(m, str) else m.id for m in members]
    unknown = [i for i in ids if i not in have]
    if unknown:
        more = ", ..." if len(have) > 5 else ""
        raise UserError(f"--members: {unknown[0]!r} is not a member of {where} (has: {', '.join(have[:5])}{more})")
    return [m for m, i in zip(members, have) if not ids or i in ids]


def resolve(
    ref: str | os.PathLike | None,
    *,
    pool: str | os.PathLike | None = None,
    pretrained: bool = False,
    checkpoint: str | os.PathLike | None = None,
    allow_download: bool = False,
    num_classes: int | None = None,
    progress: bool = True,
) -> Member:
    """Any model reference as a member (see `learngene.models.refs` for the grammar).

    Args:
        ref: ``embedded``, ``embedded:TESTBED``, a timm name, ``local-dir:DIR`` (or a folder),
            ``POOL:MEMBER`` (a descendant, child or the ancestor of a pool), or None (the
            embedded ancestor).
        pool: the pool a bare member or child id belongs to.
        pretrained, checkpoint, allow_download: a timm name's weights (its cache, a file the
            user names; downloading only when allowed).
        num_classes: a new classifier of that many classes (timm's ``num_classes``).
        progress: show the embedded ancestor's training when it has to be trained.

    Returns a `Member`: its id, kind, architecture, data config, params, FLOPs and accuracy
    known, with ``.model()`` / ``.load()`` building the model on first use.
    """
    r = parse_ref(ref, pool=pool, weights=pretrained or checkpoint is not None)
    if r.kind == "pool":
        if pretrained or checkpoint:
            raise UserError("--pretrained / --checkpoint are for a timm name, not a pool member")
        return pool_member(Pool.open(r.target), r.member)
    lm = load_model(
        r,
        pretrained=pretrained,
        checkpoint=checkpoint,
        num_classes=num_classes,
        allow_download=allow_download,
        progress=progress,
    )
    return of_model(
        lm, "ancestor" if r.kind == "embedded" else "model", lm.name if r.kind == "embedded" else str(ref or lm.name)
    )
