"""The one model-reference resolver.

A reference is what a user types after ``--ancestor``, ``--from``, ``--model`` or
``learngene export``. Like timm's ``parse_model_name``, a reference is ``SOURCE:ID`` or a
plain timm name, and it is never guessed over: a path is never taken for a timm name.

    embedded                 the embedded ancestor (trained and cached on first use)
    embedded:TESTBED         another testbed's embedded ancestor (embedded:animals)
    local-dir:DIR | DIR      a timm local-dir folder (config.json + model.safetensors): an
                             exported child, a grown or merged model, a fitted ancestor
    POOL:MEMBER              a member of the pool in folder POOL (narrow, wide, stitch-J-K,
                             a child, ancestor); a bare MEMBER when a pool is given
    NAME                     a timm model name (random init, --pretrained from timm's
                             cache, or --checkpoint FILE)

`parse_ref` tells which; `load_model` loads every kind but pool members, which the zoo
(`learngene.zoo.resolve`) reads through the pool.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from learngene.core.errors import UserError
from learngene.models.embedded import DEFAULT_TESTBED, testbed
from learngene.models.loading import DEFAULT_TIMM_ANCESTOR, LoadedModel, load_timm

EMBEDDED = "embedded"
REMOTE_SOURCES = ("hf-hub", "hf_hub", "timm")  # timm's remote prefixes: learngene never downloads at run time


@dataclass(frozen=True)
class Ref:
    kind: str  # embedded | local-dir | pool | timm
    target: str  # the testbed, the folder, the pool folder, or the timm name
    member: str | None = None  # for kind 'pool'


def parse_ref(text: str | os.PathLike | None, *, pool: str | os.PathLike | None = None, weights: bool = False) -> Ref:
    """What a reference names. ``None`` is the embedded ancestor, or DeiT-Base when
    ``weights`` (--pretrained / --checkpoint) are given."""
    if text is None or str(text) == "":
        return Ref("timm", DEFAULT_TIMM_ANCESTOR) if weights else Ref(EMBEDDED, DEFAULT_TESTBED)
    text = str(text)
    scheme, sep, rest = text.partition(":")
    if scheme == EMBEDDED:
        testbed(rest or None)  # an unknown testbed is refused here
        return Ref(EMBEDDED, rest or DEFAULT_TESTBED)
    if sep and scheme == "local-dir":
        return Ref("local-dir", rest)
    if sep and scheme in REMOTE_SOURCES:
        raise UserError(
            f"{text}: learngene does not download at run time; save the model as a timm local-dir "
            "and pass local-dir:DIR, or pass a timm name with --pretrained (timm's cache)"
        )
    head, sep, member = text.rpartition(":")
    if sep and head and (Path(head).expanduser() / "pool.json").is_file():
        return Ref("pool", head, member)
    path = Path(text).expanduser()
    if (path / "config.json").is_file():
        return Ref("local-dir", text)
    if (path / "pool.json").is_file():
        raise UserError(
            f"{text} is a pool: name one of its members as {text}:MEMBER (narrow, wide, stitch-J-K, a child)"
        )
    if path.exists():
        raise UserError(f"not a model folder (no config.json) nor a pool: {text}")
    if pool is not None and _is_member(Path(pool).expanduser(), text):
        return Ref("pool", str(pool), text)
    if any(c in text for c in "/\\") or text.startswith("."):
        raise UserError(f"model folder not found: {text}")
    return Ref("timm", text)


def _is_member(pool: Path, name: str) -> bool:
    """A pool member's name: an exported child's folder, or a descendant id."""
    if not (pool / "pool.json").is_file():
        return False
    return (
        (pool / "children" / name / "config.json").is_file()
        or name in ("narrow", "wide", "ancestor")
        or re.fullmatch(r"stitch-\d+-\d+", name) is not None
    )


def load_model(
    ref: Ref | str | None,
    *,
    pretrained: bool = False,
    checkpoint: str | os.PathLike | None = None,
    num_classes: int | None = None,
    allow_download: bool = False,
    progress: bool = True,
) -> LoadedModel:
    """A LoadedModel for every kind of reference but pool members."""
    if not isinstance(ref, Ref):
        ref = parse_ref(ref, weights=pretrained or checkpoint is not None)
    if pretrained and checkpoint:
        raise UserError("give either --pretrained or --checkpoint, not both")
    if ref.kind == EMBEDDED:
        if pretrained or checkpoint:
            raise UserError("the embedded ancestor takes no --pretrained/--checkpoint (use --retrain to retrain it)")
        from learngene.models.embedded import embedded_ancestor

        return embedded_ancestor(progress=progress, name=ref.target)
    if ref.kind == "local-dir":
        if pretrained:
            raise UserError("--pretrained is for a timm name, not a model folder")
        return load_timm(f"local-dir:{ref.target}", checkpoint=checkpoint, num_classes=num_classes)
    if ref.kind == "timm":
        return load_timm(
            ref.target,
            pretrained=pretrained,
            checkpoint=checkpoint,
            num_classes=num_classes,
            allow_download=allow_download,
        )
    raise UserError(f"{ref.target}:{ref.member} is a pool member: resolve it through learngene.zoo.resolve")
