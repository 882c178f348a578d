"""`assemble`: stitch a pool's instances into descendants, train them, write a revision, export a child;
`descendants`: the table of them."""

from __future__ import annotations

from learngene.api._common import _open, _targs
from learngene.zoo import resolve


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
