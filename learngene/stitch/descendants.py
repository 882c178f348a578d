"""Which descendants two equal-depth ViTs (a pool's narrow and wide models) give, and their ids.

A descendant of a pool with a narrow and a wide auxiliary model of depth D is

    narrow embedding -> narrow instances 0..j -> stitch (Linear narrow->wide) -> wide instances k..D-1
    -> wide final norm + head

or one of the two auxiliary models themselves. The (j, k) pairs follow SN-Net's paired
stitching (kernel 2, stride 1): SN-Net pairs front block j with back block k' for j, k' in a
sliding window of 2 and resumes the back model after k'; here k = k' + 1 names the first
wide block that runs. D=6 gives 16 stitched descendants + 2 pure = 18; D=9 gives 27.
"""

from __future__ import annotations

from dataclasses import dataclass

from learngene.core.errors import UserError


def paired_stitching(depth: int, kernel: int = 2, stride: int = 1) -> list[tuple[int, int]]:
    """SN-Net's (front block, back block) pairs, in SN-Net's order."""
    cfgs: list[tuple[int, int]] = []
    for i in range(0, depth, stride):
        ids = list(range(depth))[i : i + kernel]
        for j in ids:
            for k in ids:
                if (j, k) not in cfgs:
                    cfgs.append((j, k))
    return cfgs


@dataclass(frozen=True)
class DescSpec:
    """One descendant. kind 'narrow'/'wide' are the auxiliary models themselves."""

    kind: str  # narrow | wide | stitch
    j: int | None = None  # last narrow block (inclusive)
    k: int | None = None  # first wide block
    depth: int = 0  # auxiliary depth D

    @property
    def id(self) -> str:
        return f"stitch-{self.j}-{self.k}" if self.kind == "stitch" else self.kind

    @property
    def narrow_blocks(self) -> list[int]:
        if self.kind == "wide":
            return []
        return list(range((self.depth - 1 if self.kind == "narrow" else self.j) + 1))

    @property
    def wide_blocks(self) -> list[int]:
        if self.kind == "narrow":
            return []
        return list(range(0 if self.kind == "wide" else self.k, self.depth))

    @property
    def n_blocks(self) -> int:
        return len(self.narrow_blocks) + len(self.wide_blocks)


def descendants(depth: int) -> list[DescSpec]:
    """Every descendant of a depth-D pool: the narrow model, the stitched ones, the wide model."""
    stitched = [DescSpec("stitch", j, k + 1, depth) for j, k in paired_stitching(depth)]
    return [DescSpec("narrow", depth=depth), *stitched, DescSpec("wide", depth=depth)]


def check_config_syntax(text) -> None:
    """What `parse_config` can refuse without a pool: not J,K, an id or narrow / wide."""
    t = str(text).strip()
    if t in ("narrow", "wide"):
        return
    parts = t.replace("stitch-", "").replace("-", ",").split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise UserError(
            f"--descendant {text}: not J,K (narrow blocks 0..J, a stitch, wide blocks K..), an id such as "
            "stitch-1-2, or narrow / wide"
        )


def parse_config(text: str, depth: int) -> DescSpec:
    """`--descendant j,k`, a descendant id (`stitch-1-3`) or `narrow` / `wide`."""
    all_ = {d.id: d for d in descendants(depth)}
    t = text.strip()
    if t in all_:
        return all_[t]
    parts = t.replace("stitch-", "").replace("-", ",").split(",")
    if len(parts) == 2 and all(p.strip().lstrip("-").isdigit() for p in parts):
        j, k = (int(p) for p in parts)
        d = all_.get(f"stitch-{j}-{k}")
        if d is not None:
            return d
    raise UserError(
        f"--descendant {text}: not a descendant of this pool (depth {depth}: j,k with k in j..j+2, "
        f"e.g. 1,2; or narrow / wide; see `learngene assemble --list`)"
    )
