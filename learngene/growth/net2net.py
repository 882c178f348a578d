"""Net2Net (Chen, Goodfellow & Shlens, ICLR 2016) for timm ViTs.

Wider: a new unit copies an existing one through a mapping g (its incoming weights copied),
and the outgoing weights of a unit and all its copies are divided by its copy count, so
the next layer sees the same sum. Units are MLP hidden units and attention heads (a head is
one unit: its q/k/v rows copied, its ``proj`` input columns divided). The residual width
goes through LayerNorm, where a random g would change the mean and variance; there every
channel is copied floor(E'/E) times and the rest carry the mean (``surgery.ResidualMap``),
which keeps LayerNorm exact. Optional noise on the copies' incoming weights breaks the
symmetry between a unit and its copies; then the function is only approximately preserved.

Deeper: new blocks whose residual branches output zero (zero ``proj`` and ``fc2``), the
transformer form of Net2Net's identity layers.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from learngene.core.errors import UserError
from learngene.growth import surgery
from learngene.growth.surgery import set_linear


def mapping(old: int, new: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Net2Net's g: the first ``old`` units map to themselves, the others to random units."""
    extra = torch.randint(0, old, (new - old,), generator=generator)
    return torch.cat([torch.arange(old), extra])


def _noisy(t: torch.Tensor, old: int, noise: float, dim: int = 0) -> torch.Tensor:
    """Relative noise on the copies (indices >= old along ``dim``) only."""
    if noise <= 0 or t.shape[dim] == old:
        return t
    t = t.clone()
    new = t.narrow(dim, old, t.shape[dim] - old)
    new.add_(torch.randn_like(new) * noise * (t.narrow(dim, 0, old).std() + 1e-12))
    return t


def wider_mlp(m: nn.Module, new: int, noise: float = 0.0, generator=None) -> None:
    for blk in m.blocks:
        fc1, fc2 = blk.mlp.fc1, blk.mlp.fc2
        old = fc1.out_features
        if new == old:
            continue
        g = mapping(old, new, generator)
        count = torch.bincount(g, minlength=old).float()
        b1 = None if fc1.bias is None else fc1.bias.detach()[g]
        set_linear(fc1, _noisy(fc1.weight.detach()[g], old, noise), b1)
        set_linear(fc2, fc2.weight.detach()[:, g] / count[g], surgery._bias(fc2))


def wider_heads(m: nn.Module, new: int, noise: float = 0.0, generator=None) -> None:
    for blk in m.blocks:
        p = blk.attn.heads()
        old = p["q"].shape[0]
        if new == old:
            continue
        g = mapping(old, new, generator)
        count = torch.bincount(g, minlength=old).float()
        for key in ("q", "k", "v"):
            p[key] = _noisy(p[key][g], old, noise)
            p["b" + key] = p["b" + key][g]
        p["proj"] = p["proj"][:, g] / count[g][None, :, None]
        blk.attn.set_heads(p)


def net2net(
    model: nn.Module, embed_dim=None, depth=None, num_heads=None, mlp_hidden=None, noise: float = 0.0, seed: int = 0
) -> nn.Module:
    """Net2WiderNet on the residual width, heads and MLP units, then Net2DeeperNet."""
    m = surgery.start(model)
    d = surgery.dims(m)
    want = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_hidden=mlp_hidden)
    for k, v in want.items():
        if v is not None and v < d[k]:
            raise UserError(
                f"{k.replace('_', ' ')} {v} is smaller than the model's {d[k]}: growth only makes models larger"
            )
    gen = torch.Generator().manual_seed(seed)
    if embed_dim is not None and embed_dim > d["embed_dim"]:
        surgery.widen_residual(m, embed_dim, copies=embed_dim // d["embed_dim"], fill="zero")
    if num_heads is not None:
        wider_heads(m, num_heads, noise, gen)
    if mlp_hidden is not None:
        wider_mlp(m, mlp_hidden, noise, gen)
    if depth is not None:
        surgery.deepen(m, depth)
    return surgery.finish(m)
