"""`assemble`: stitch a pool's instances into descendants, train them, write a revision, export a child;
`descendants`: the table of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from learngene.api._common import Request, _open, _targs, verb
from learngene.zoo import resolve

if TYPE_CHECKING:
    from learngene.assembly.pipeline import AssembleSpec
    from learngene.assembly.select import Selection
    from learngene.core.training import TrainerArgs
    from learngene.pool.store import Pool


@dataclass(frozen=True)
class AssembleRequest(Request):
    pool: str | Path | Pool = "pools/embedded"
    selection: Selection | None = None
    _: KW_ONLY
    spec: AssembleSpec | None = None
    data: str | Path | None = None
    model: str | None = None
    pretrained: bool = False
    checkpoint: str | Path | None = None
    allow_download: bool = False
    out: str | Path | None = None
    force: bool = False
    trainer_args: TrainerArgs | None = None
    workers: int | None = None
    progress: Callable | None = None

    @classmethod
    def build(cls, *args, **kwargs) -> AssembleRequest:
        """``spec``'s fields given as keywords (``epochs=40``, ``train="all"``) replace its own."""
        from learngene.assembly.pipeline import AssembleSpec

        names = {f.name for f in dataclasses.fields(cls)}
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k not in names}
        if "export_program" in settings:  # the first spelling of fmt=timm
            settings.setdefault("fmt", None if settings.pop("export_program") else "timm")
        if settings or kwargs.get("spec") is None:
            kwargs["spec"] = dataclasses.replace(kwargs.get("spec") or AssembleSpec(), **settings)
        return cls(*args, **kwargs)

    def check(self):
        from learngene.core import limits

        self._set("spec", self.spec.check())
        limits.workers(self.workers)


@verb(AssembleRequest)
def assemble(r: AssembleRequest):
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
    if r.model or r.pretrained or r.checkpoint:
        anc = resolve(r.model, pretrained=r.pretrained, checkpoint=r.checkpoint, allow_download=r.allow_download).load()
    return run(
        r.pool,
        r.selection,
        spec=r.spec,
        data=r.data,
        ancestor=anc,
        out=r.out,
        force=r.force,
        trainer_args=_targs(r.trainer_args, "assemble", r.progress is not None),
        num_workers=r.workers,
        progress=r.progress or (lambda m: None),
    )


@dataclass(frozen=True)
class DescendantsRequest(Request):
    pool: str | Path | Pool = "pools/embedded"
    revision: str | None = "latest"


@verb(DescendantsRequest)
def descendants(r: DescendantsRequest) -> list[dict]:
    """Every descendant of a pool with its static numbers (blocks, params, FLOPs) and the
    accuracy the revision measured (``assemble --list``)."""
    from learngene.assembly.pipeline import descendant_rows

    p = _open(r.pool)
    pm, _ = p.model(r.revision)
    return descendant_rows(p, pm, p.revision(r.revision))
