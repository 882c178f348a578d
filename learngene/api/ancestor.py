"""`ancestor`: what an ancestor is, training the embedded one when needed, or fitting it to a folder."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from learngene.api._common import Request, _targs, verb
from learngene.core.errors import UserError
from learngene.zoo import resolve

if TYPE_CHECKING:
    from learngene.core.training import TrainerArgs


@dataclass(frozen=True)
class AncestorRequest(Request):
    model: str | None = None
    _: KW_ONLY
    data: str | Path | None = None
    fine_tune: bool = False
    refit: bool = False
    retrain: bool = False
    epochs: int | str | None = None
    seed: int | None = None
    pretrained: bool = False
    checkpoint: str | Path | None = None
    allow_download: bool = False
    trainer_args: TrainerArgs | None = None
    progress: bool = True

    def check(self):
        from learngene.core import limits

        if self.epochs is not None:
            self._set("epochs", limits.epochs(self.epochs))
        if self.seed is not None:
            self._set("seed", limits.seed(self.seed))
        if self.fine_tune or self.refit:
            if self.data is None:
                raise UserError("--fine-tune needs --data DIR: the folder whose classes the ancestor is fitted to")
            if self.retrain or self.seed is not None:
                raise UserError("--retrain/--seed are for the embedded ancestor's own training, not --fine-tune")


@verb(AncestorRequest)
def ancestor(r: AncestorRequest) -> dict:
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
    from learngene.core.data import open_source
    from learngene.models.embedded import describe, embedded_ancestor
    from learngene.models.fitted import fit_ancestor
    from learngene.models.refs import EMBEDDED, load_model, parse_ref

    ref = parse_ref(r.model, weights=r.pretrained or r.checkpoint is not None)
    source = open_source(r.data) if r.data is not None else None  # a bad folder is refused before any model is loaded
    if r.fine_tune or r.refit:
        base = load_model(
            ref, pretrained=r.pretrained, checkpoint=r.checkpoint, allow_download=r.allow_download, progress=r.progress
        )
        anc = fit_ancestor(
            base,
            source,
            epochs=r.epochs,
            trainer_args=_targs(r.trainer_args, "ancestor (fitting)", r.progress),
            progress=r.progress,
            refit=r.refit,
        )
        return {**describe(anc), "fitted_from": base.source, "fitted": anc.source.split(":", 1)[1]}
    if ref.kind == EMBEDDED:
        if r.pretrained or r.checkpoint:
            raise UserError("the embedded ancestor takes no --pretrained/--checkpoint (use --retrain to retrain it)")
        anc = embedded_ancestor(
            retrain=r.retrain,
            progress=r.progress,
            epochs=r.epochs,
            seed=r.seed,
            name=ref.target,
            trainer_args=_targs(r.trainer_args, "ancestor (embedded)", r.progress),
        )
    else:
        if r.retrain or r.epochs is not None or r.seed is not None:
            raise UserError("--retrain/--epochs/--seed apply to the embedded ancestor only")
        anc = resolve(
            r.model,
            pretrained=r.pretrained,
            checkpoint=r.checkpoint,
            allow_download=r.allow_download,
            progress=r.progress,
        ).load()
    return describe(anc, source)
