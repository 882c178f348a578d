"""Which child to hand out: size names scaled from the DeiT family, parameter / FLOPs
budgets, an explicit descendant, and the rule that picks within a budget."""

from __future__ import annotations

from dataclasses import dataclass

from learngene.core.errors import UserError
from learngene.stitch.descendants import parse_config

# DeiT-Ti / DeiT-S / DeiT-B parameter counts (millions): the size names scale to any ancestor.
DEIT_PARAMS_M = {"tiny": 5.7, "small": 22.1, "base": 86.6}
SIZES = tuple(DEIT_PARAMS_M)


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

    def check(self, depth: int | None = None) -> None:
        """Refuse a bad selection before any work (``depth`` None: what needs no pool, so a
        bad value is refused before the pool is even opened and re-hashed)."""
        import math

        from learngene.stitch.descendants import check_config_syntax

        if sum(v is not None for v in (self.size, self.params, self.flops, self.config)) > 1:
            raise UserError("choose the child one way: --size, --params, --flops or --descendant")
        if self.config is not None:
            check_config_syntax(self.config)
            if depth is not None:
                parse_config(self.config, depth)
        if self.size is not None:
            size_budget(self.size, 1)
        for name, v in (("--params", self.params), ("--flops", self.flops)):
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= 1e15):
                raise UserError(f"{name} must be a positive number, got {v!r}")


def size_budget(size: str, ancestor_params: int) -> float | None:
    """Parameter budget of a size name, scaled from the DeiT family to this ancestor;
    None for 'base' (the largest: no limit)."""
    if size not in DEIT_PARAMS_M:
        raise UserError(f"unknown size {size!r} (choose from {', '.join(SIZES)})")
    if size == "base":
        return None
    return DEIT_PARAMS_M[size] / DEIT_PARAMS_M["base"] * ancestor_params


def choose(
    rows: list[dict], max_params: float | None = None, max_flops: float | None = None, what: str = "budget"
) -> dict:
    """The descendant to hand out: among those within the budget, the best measured accuracy
    (`val_top1`: chosen on validation, never on the test split), else the largest.
    Nothing fits: an error naming the nearest descendants."""

    def fits(r):
        return (max_params is None or r["params"] <= max_params) and (max_flops is None or r["flops"] <= max_flops)

    ok = [r for r in rows if fits(r)]
    if not ok:
        key = "params" if max_params is not None else "flops"
        limit = max_params if max_params is not None else max_flops
        near = sorted(rows, key=lambda r: r[key])[:2]
        names = ", ".join(f"{r['id']} ({_fmt(r[key])} {key})" for r in near)
        raise UserError(f"no descendant fits {what} ({_fmt(limit)} {key}); the smallest are {names}")
    if all(r.get("val_top1") is not None for r in ok):
        return max(ok, key=lambda r: (r["val_top1"], -r["params"]))
    return max(ok, key=lambda r: r["params"])


def _fmt(n: float) -> str:
    return f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.3f}M" if n >= 1e5 else f"{int(n):,}"


def select(rows: list[dict], sel: Selection, ancestor_params: int, depth: int) -> dict:
    """The row ``sel`` picks among a pool's descendant rows."""
    sel.check(depth)
    if sel.config is not None:
        sid = parse_config(sel.config, depth).id
        return next(r for r in rows if r["id"] == sid)
    if sel.size is not None:
        return choose(rows, max_params=size_budget(sel.size, ancestor_params), what=f"--size {sel.size}")
    if sel.params is not None:
        return choose(rows, max_params=sel.params, what="--params")
    return choose(rows, max_flops=sel.flops, what="--flops")
