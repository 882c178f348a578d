"""Pool recipes: which auxiliary models to distil, and how. YAML in pools/, every field with
a default, any field overridable from the command line (`--set distill.alpha=0.2`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from learngene.core.errors import UserError
from learngene.core.io import check_name

POSITIONS = ("end", "front,end")
AUX_INITS = ("random", "ancestor", "pruned")  # how an auxiliary model starts


@dataclass
class AuxSpec:
    """One auxiliary model: a plain DeiT-style ViT with fewer blocks than the ancestor."""

    name: str
    embed_dim: int
    num_heads: int
    depth: int = 6
    mlp_ratio: float = 4.0
    positions: str = "end"  # which blocks are distilled: 'end' or 'front,end'
    epochs: int | str = 20  # or "auto": until validation top1 stops improving (DISTILL_AUTO)
    lr: float = 5e-4
    # 'ancestor': a same-width student starts from evenly spaced ancestor blocks; 'pruned': a
    # narrower one from those of the ancestor pruned to its width (Torch-Pruning)
    init: str = "random"


@dataclass
class DistillSpec:
    alpha: float = 0.1  # weight of the label CE; (1 - alpha) goes to KL + feature MSEs
    temperature: float = 1.0
    batch_size: int = 64
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    seed: int = 0
    max_steps: int = -1  # > 0 caps every auxiliary model's training (smoke runs)


@dataclass
class Recipe:
    name: str
    ancestor: str = "embedded"
    # the data to distil on when build-pool is given none: an embedded testbed (``animals``);
    # empty for the digits (left out of to_dict then, so older pools' keys stay the same)
    data: str = ""
    auxiliary: list[AuxSpec] = field(default_factory=list)
    distill: DistillSpec = field(default_factory=DistillSpec)
    source: str = "recipe"  # where it was read from, for error messages

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source")
        d["auxiliary"] = {a.pop("name"): a for a in d["auxiliary"]}
        if not d["data"]:
            d.pop("data")
        return d


def _typed(cls, values: dict, where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise UserError(
            f"unknown recipe field {where}.{unknown[0]} (known: {', '.join(n for n in names if n != 'name')})"
        )
    out = {}
    for k, v in values.items():
        default = names[k].default
        # YAML reads 1e-3 as a string and 2.0 as a float: coerce to the field's number type.
        if isinstance(default, float) and not isinstance(v, bool):
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise UserError(f"recipe field {where}.{k} must be a number, got {v!r}") from None
        elif type(default) is int and isinstance(v, float) and v.is_integer():
            v = int(v)
        elif k == "epochs" and isinstance(v, str) and v.strip().lower() == "auto":
            out[k] = "auto"
            continue
        elif isinstance(default, str) and not isinstance(v, str):
            raise UserError(f"recipe field {where}.{k} must be text, got {v!r}")
        if type(default) is int and (not isinstance(v, int) or isinstance(v, bool)):
            raise UserError(f"recipe field {where}.{k} must be an integer, got {v!r}")
        out[k] = v
    return out


def recipe_from_dict(d: dict, source: str = "recipe") -> Recipe:
    if not isinstance(d, dict):
        raise UserError(f"{source}: a recipe is a YAML mapping")
    unknown = sorted(set(d) - {"name", "ancestor", "data", "auxiliary", "distill"})
    if unknown:
        raise UserError(
            f"{source}: unknown recipe field {unknown[0]} (known: name, ancestor, data, auxiliary, distill)"
        )
    data = str(d.get("data") or "")
    if data:
        from learngene.core.data import DATA_SOURCES, is_embedded

        if not is_embedded(data):
            raise UserError(
                f"{source}: data {data!r} is not an embedded source ({', '.join(DATA_SOURCES)}); "
                "a folder is given with --data"
            )
    aux = d.get("auxiliary") or {}
    if not isinstance(aux, dict) or not aux:
        raise UserError(f"{source}: 'auxiliary' must map names to auxiliary model settings")
    for section in ("distill",):
        if d.get(section) is not None and not isinstance(d[section], dict):
            raise UserError(f"{source}: '{section}' must be a mapping of settings, got {d[section]!r}")
    check_name(str(d.get("name", Path(source).stem)), f"{source}: recipe name")
    try:
        specs = []
        for name, vals in aux.items():
            check_name(str(name), f"{source}: auxiliary model name")
            if vals is not None and not isinstance(vals, dict):
                raise UserError(f"{source}: auxiliary.{name} must be a mapping of settings, got {vals!r}")
            vals = dict(vals or {})
            for req in ("embed_dim", "num_heads"):
                if req not in vals:
                    raise UserError(f"{source}: auxiliary.{name} needs {req}")
            specs.append(AuxSpec(name=str(name), **_typed(AuxSpec, vals, f"auxiliary.{name}")))
        distill = DistillSpec(**_typed(DistillSpec, dict(d.get("distill") or {}), "distill"))
    except TypeError as e:
        raise UserError(f"{source}: {e}") from None
    return validate(
        Recipe(
            name=str(d.get("name", Path(source).stem)),
            ancestor=str(d.get("ancestor", "embedded")),
            data=data,
            auxiliary=specs,
            distill=distill,
            source=source,
        )
    )


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"recipe not found: {p}")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"recipe {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    d = apply_overrides(d or {}, overrides, str(p))
    return recipe_from_dict(d, str(p))


def apply_overrides(d: dict, overrides, source: str) -> dict:
    """`key.sub=value` strings; values parsed as YAML scalars. `auxiliary.*.epochs=5` sets all."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise UserError(f"--set {key}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
        parts = key.strip().split(".")
        targets = [d]
        for part in parts[:-1]:
            nxt = []
            for t in targets:
                if part == "*" and isinstance(t, dict):
                    nxt.extend(v for v in t.values() if isinstance(v, dict))
                elif isinstance(t, dict):
                    nxt.append(t.setdefault(part, {}))
                else:
                    raise UserError(f"--set {key}: {part} is not a section")
            targets = nxt
        for t in targets:
            t[parts[-1]] = value
    return d


def validate(recipe: Recipe, ancestor_depth: int | None = None) -> Recipe:
    """Refuse a recipe that cannot build a pool, in one line naming the field; all but the
    depth check (which needs the ancestor) run when the recipe is read, before any model is
    loaded."""
    source = recipe.source
    names = [a.name for a in recipe.auxiliary]
    if len(set(names)) != len(names):
        raise UserError(f"{source}: auxiliary model names must be unique")
    for a in recipe.auxiliary:
        where = f"{source}: auxiliary.{a.name}"
        for k in ("embed_dim", "num_heads", "depth", "epochs"):
            v = getattr(a, k)
            if k == "epochs" and v == "auto":
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(
                    f"{where}.{k} must be a positive integer{' or auto' if k == 'epochs' else ''}, got {v!r}"
                )
            if v > {"embed_dim": 16384, "num_heads": 1024, "depth": 1024, "epochs": 10000}[k]:
                raise UserError(f"{where}.{k} = {v} is beyond any model learngene builds")
        if a.embed_dim % a.num_heads:
            raise UserError(f"{where}: width {a.embed_dim} is not divisible by its {a.num_heads} heads")
        if ancestor_depth is not None and a.depth > ancestor_depth:
            raise UserError(f"{where}: depth {a.depth} is deeper than the ancestor's {ancestor_depth} blocks")
        if a.positions not in POSITIONS:
            raise UserError(f"{where}.positions must be one of {', '.join(POSITIONS)}, got {a.positions!r}")
        if a.init not in AUX_INITS:
            raise UserError(f"{where}.init must be one of {', '.join(AUX_INITS)}, got {a.init!r}")
        if not (isinstance(a.lr, float) and a.lr > 0):
            raise UserError(f"{where}.lr must be a positive number, got {a.lr!r}")
        if not (isinstance(a.mlp_ratio, float) and 0 < a.mlp_ratio <= 64):
            raise UserError(f"{where}.mlp_ratio must be a number in (0, 64], got {a.mlp_ratio!r}")
    d = recipe.distill
    if not 0 <= d.alpha <= 1:
        raise UserError(f"{source}: distill.alpha must be in [0, 1], got {d.alpha}")
    if d.temperature <= 0 or d.batch_size < 1:
        raise UserError(f"{source}: distill.temperature and distill.batch_size must be positive")
    return recipe
