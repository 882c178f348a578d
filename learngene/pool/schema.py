"""What a pool manifest may hold: a pool is a folder a user copies from elsewhere, so its
pool.json is untrusted input. `validate` refuses, in one line naming the field, anything a
reader would otherwise trust: ids and auxiliary names that are not plain names, files that
are not where their kind lives (or climb out), versions and counts that are not numbers,
model_args beyond the keys a ViT needs (no pretrained / hub / checkpoint / file keys reach
timm), revision chains that are not a line from r0."""

from __future__ import annotations

import re

from learngene.core.errors import UserError
from learngene.core.io import SAFE_NAME

# the manifest, the writers' lock file, and the folders a pool may hold
MANIFEST = "pool.json"
LOCK = ".lock"
SUBDIRS = ("instances", "components", "revisions", "children", "reports", "adapters")


FORMAT = "learngene-pool"
FORMAT_VERSION = 1
HEX64 = re.compile(r"[0-9a-f]{64}")
REVISION = re.compile(r"r[1-9][0-9]{0,5}")
REVISION_FOLDER = re.compile(r"revisions/r[1-9][0-9]{0,5}(/instances|/components)?")
TIMM_NAME = re.compile(r"[a-z0-9_]{1,80}")
# the keyword arguments of a timm VisionTransformer (and learngene's stitched one) that a
# pool's models may set; anything else (pretrained, pretrained_cfg_overlay, checkpoint_path,
# file or hub names, ...) is refused before it reaches timm.create_model
VIT_ARGS = {
    "img_size": int,
    "patch_size": int,
    "in_chans": int,
    "num_classes": int,
    "embed_dim": int,
    "depth": int,
    "num_heads": int,
    "mlp_ratio": (int, float),
    "qkv_bias": bool,
    "class_token": bool,
    "global_pool": str,
    "no_embed_class": bool,
    "reg_tokens": int,
    "pre_norm": bool,
    "fc_norm": (bool, type(None)),
    "init_values": (int, float, type(None)),
    "back_embed_dim": int,
    "back_depth": int,
    "back_num_heads": int,
    "back_mlp_ratio": (int, float),
    "stitch_kind": str,
}
GLOBAL_POOL = ("token", "avg", "max", "avgmax", "map", "")


def _fail(where, what):
    raise UserError(f"manifest {where}: {what}")


def _dict(v, where, what) -> dict:
    if not isinstance(v, dict):
        _fail(where, f"{what} is not an object")
    return v


def _list(v, where, what) -> list:
    if not isinstance(v, list):
        _fail(where, f"{what} is not a list")
    return v


def _int(v, where, what, low: int = 0) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        _fail(where, f"{what} must be an integer >= {low}, got {v!r}")
    return v


def _name(v, where, what) -> str:
    if not isinstance(v, str) or not SAFE_NAME.fullmatch(v):
        _fail(where, f"{what} {v!r} is not a plain name")
    return v


def _file(v, where, what, folder: str) -> str:
    parts = v.split("/") if isinstance(v, str) else []
    if len(parts) < 2 or "/".join(parts[:-1]) != folder or not SAFE_NAME.fullmatch(parts[-1]):
        _fail(where, f"{what} {v!r} is not a file of {folder}/")
    return v


def _sha(v, where, what) -> str:
    if not isinstance(v, str) or not HEX64.fullmatch(v):
        _fail(where, f"{what} is not a sha256")
    return v


def model_args(args, where, what: str = "model_args") -> dict:
    args = _dict(args, where, what)
    for k, v in args.items():
        if k not in VIT_ARGS:
            _fail(where, f"{what}.{k} is not a ViT argument learngene passes to timm")
        if not isinstance(v, VIT_ARGS[k]) or (isinstance(v, bool) and VIT_ARGS[k] is int):
            _fail(where, f"{what}.{k} has the wrong type: {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not 0 <= v <= 1_000_000:
            _fail(where, f"{what}.{k} = {v!r} is out of range")
    if args.get("global_pool", "token") not in GLOBAL_POOL:
        _fail(where, f"{what}.global_pool {args['global_pool']!r} is not a timm pooling")
    if args.get("stitch_kind") is not None:
        _name(args["stitch_kind"], where, f"{what}.stitch_kind")
    return args


def validate(m, where) -> dict:
    """The manifest, or a one-line UserError naming what is wrong with it."""
    m = _dict(m, where, "the manifest")
    if m.get("format") != FORMAT:
        _fail(where, "not a learngene pool manifest")
    version = _int(m.get("version"), where, "version", 1)
    if version > FORMAT_VERSION:
        _fail(where, f"format version {version}; this learngene reads up to {FORMAT_VERSION}")
    anc = _dict(m.get("ancestor"), where, "ancestor")
    if not isinstance(anc.get("name"), str):
        _fail(where, "ancestor.name is not a string")
    _sha(anc.get("sha256"), where, "ancestor.sha256")
    _int(anc.get("params"), where, "ancestor.params", 1)
    cfg = _dict(anc.get("data_config"), where, "ancestor.data_config")
    size = cfg.get("input_size")
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(x, int) and 0 < x <= 100_000 for x in size)):
        _fail(where, "ancestor.data_config.input_size is not [channels, height, width]")
    aux = _dict(m.get("auxiliary"), where, "auxiliary")
    for name, meta in aux.items():
        _name(name, where, "auxiliary model")
        meta = _dict(meta, where, f"auxiliary.{name}")
        if not isinstance(meta.get("architecture"), str) or not TIMM_NAME.fullmatch(meta["architecture"]):
            _fail(where, f"auxiliary.{name}.architecture is not a timm model name")
        model_args(meta.get("model_args"), where, f"auxiliary.{name}.model_args")
        for pair in _list(meta.get("pairs", []), where, f"auxiliary.{name}.pairs"):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int) for x in pair)):
                _fail(where, f"auxiliary.{name}.pairs holds {pair!r}, not [ancestor block, student block]")
    for kind, folder in (("instances", "instances"), ("components", "components")):
        for e in _list(m.get(kind), where, kind):
            e = _dict(e, where, f"an entry of {kind}")
            _name(e.get("id"), where, f"{kind} id")
            if e.get("source") not in aux:
                _fail(where, f"{kind} {e['id']}: source {e.get('source')!r} is not an auxiliary model of the pool")
            _file(e.get("file"), where, f"{kind} {e['id']}: file", folder)
            _sha(e.get("sha256"), where, f"{kind} {e['id']}: sha256")
            _int(e.get("params", 0), where, f"{kind} {e['id']}: params")
    seen = {"r0"}
    for rev in _list(m.get("revisions", []), where, "revisions"):
        rev = _dict(rev, where, "a revision")
        rid = rev.get("id")
        if not isinstance(rid, str) or not REVISION.fullmatch(rid) or rid in seen:
            _fail(where, f"revision id {rid!r} is not a new rN")
        if rev.get("parent") not in seen:  # a parent is r0 or a revision listed before: no cycles
            _fail(where, f"revision {rid}: parent {rev.get('parent')!r} is not an earlier revision")
        for e in _list(rev.get("files"), where, f"revision {rid}: files"):
            e = _dict(e, where, f"a file of revision {rid}")
            name = e.get("file", "")
            sub = "/".join(name.split("/")[:-1]) if isinstance(name, str) else ""
            # its own folder, or (folded in by `pool gc`) the folder of a revision it replaced
            if not REVISION_FOLDER.fullmatch(sub):
                _fail(where, f"revision {rid}: file {name!r} is not a file of revisions/{rid}/")
            _file(name, where, f"revision {rid}: file", sub)
            _sha(e.get("sha256"), where, f"revision {rid}: sha256 of {name}")
        for sid, kind in _dict(rev.get("stitch_kinds", {}), where, f"revision {rid}: stitch_kinds").items():
            _name(kind, where, f"revision {rid}: stitch kind of {sid}")
        for sid in _list(rev.get("restitched", []), where, f"revision {rid}: restitched"):
            _name(sid, where, f"revision {rid}: restitched id")
        seen.add(rid)
    return m
