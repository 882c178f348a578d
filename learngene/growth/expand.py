"""The six composable function-preserving expansions (Gesmundo & Maile, 2023).

Each takes a timm ViT and returns a grown copy computing the same function (up to float
rounding); they apply in any order and combination. The rule in each case: the new weights
on one side are zero so the new units contribute nothing yet, the other side is freshly
initialised so that training can use them.

1. ``mlp_hidden``: new fc1 rows random, new fc2 columns zero.
2. ``heads``: new heads' q/k/v rows random, their ``proj`` columns zero.
3. ``value_size``: new value rows random, their ``proj`` columns zero.
4. ``key_query_size``: new query rows random, new key rows zero; the old keys scaled by
   sqrt(new/old) so the softmax's 1/sqrt(d) scale still cancels.
5. ``hidden``: the residual width; exact for timm's pre-LayerNorm too, at any ratio
   (``surgery.ResidualMap``: the paper's zero padding is exact only for RMSNorm).
6. ``layers``: new blocks whose two residual branches output zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from learngene.core.errors import UserError
from learngene.growth import surgery
from learngene.growth.surgery import new_weights, set_linear


def _check(name: str, new: int, old: int) -> bool:
    if new < old:
        raise UserError(f"{name} {new} is smaller than the model's {old}: growth only makes models larger")
    return new > old


def _grown(model: nn.Module, fn) -> nn.Module:
    m = surgery.start(model)
    fn(m)
    return surgery.finish(m)


def mlp_hidden(model: nn.Module, new: int) -> nn.Module:
    def go(m):
        for blk in m.blocks:
            fc1, fc2 = blk.mlp.fc1, blk.mlp.fc2
            if not _check("MLP hidden size", new, fc1.out_features):
                continue
            extra = new - fc1.out_features
            b1 = None if fc1.bias is None else torch.cat([fc1.bias.detach(), torch.zeros(extra)])
            set_linear(fc1, torch.cat([fc1.weight.detach(), new_weights(extra, fc1.in_features)]), b1)
            set_linear(
                fc2, torch.cat([fc2.weight.detach(), torch.zeros(fc2.out_features, extra)], 1), surgery._bias(fc2)
            )

    return _grown(model, go)


def _per_block(model: nn.Module, fn) -> nn.Module:
    def go(m):
        for blk in m.blocks:
            p = blk.attn.heads()
            fn(p)
            blk.attn.set_heads(p)

    return _grown(model, go)


def heads(model: nn.Module, new: int) -> nn.Module:
    def fn(p):
        H, dq, C = p["q"].shape
        dv = p["v"].shape[1]
        if not _check("number of heads", new, H):
            return
        n = new - H
        for key, d in (("q", dq), ("k", dq), ("v", dv)):
            p[key] = torch.cat([p[key], new_weights(n, d, C)])
            p["b" + key] = torch.cat([p["b" + key], torch.zeros(n, d)])
        p["proj"] = torch.cat([p["proj"], torch.zeros(p["proj"].shape[0], n, dv)], 1)

    return _per_block(model, fn)


def value_size(model: nn.Module, new: int) -> nn.Module:
    def fn(p):
        H, dv, C = p["v"].shape
        if not _check("value size", new, dv):
            return
        n = new - dv
        p["v"] = torch.cat([p["v"], new_weights(H, n, C)], 1)
        p["bv"] = torch.cat([p["bv"], torch.zeros(H, n)], 1)
        p["proj"] = torch.cat([p["proj"], torch.zeros(p["proj"].shape[0], H, n)], 2)

    return _per_block(model, fn)


def key_query_size(model: nn.Module, new: int) -> nn.Module:
    def fn(p):
        H, dq, C = p["q"].shape
        if not _check("key/query size", new, dq):
            return
        n, scale = new - dq, math.sqrt(new / dq)
        p["q"] = torch.cat([p["q"], new_weights(H, n, C)], 1)
        p["bq"] = torch.cat([p["bq"], torch.zeros(H, n)], 1)
        p["k"] = torch.cat([p["k"] * scale, torch.zeros(H, n, C)], 1)
        p["bk"] = torch.cat([p["bk"] * scale, torch.zeros(H, n)], 1)

    return _per_block(model, fn)


def hidden(model: nn.Module, new: int) -> nn.Module:
    def go(m):
        if _check("embed dim", new, m.embed_dim):
            surgery.widen_residual(m, new, copies=1, fill="random")

    return _grown(model, go)


def layers(model: nn.Module, new: int) -> nn.Module:
    def go(m):
        if _check("depth", new, len(m.blocks)):
            surgery.deepen(m, new)

    return _grown(model, go)


EXPANSIONS = {
    "hidden": hidden,
    "heads": heads,
    "key_query_size": key_query_size,
    "value_size": value_size,
    "mlp_hidden": mlp_hidden,
    "layers": layers,
}


def expand(
    model: nn.Module, embed_dim=None, depth=None, num_heads=None, qk_dim=None, v_dim=None, mlp_hidden_size=None
) -> nn.Module:
    """All six, each only where asked, in one order that keeps every step valid."""
    steps = [
        ("hidden", embed_dim),
        ("heads", num_heads),
        ("key_query_size", qk_dim),
        ("value_size", v_dim),
        ("mlp_hidden", mlp_hidden_size),
        ("layers", depth),
    ]
    for name, size in steps:
        if size is not None:
            model = EXPANSIONS[name](model, size)
    return model
