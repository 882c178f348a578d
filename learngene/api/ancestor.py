"""`ancestor`: what an ancestor is, training the embedded one when needed, or fitting it to a folder."""

from __future__ import annotations

from learngene.api._common import _targs
from learngene.core.errors import UserError
from learngene.zoo import resolve


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
