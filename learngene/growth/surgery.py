"""Weight surgery on timm ViTs, shared by every growth method.

Growth works on a timm ``VisionTransformer`` whose attention modules are first turned into
``SplitAttention``: the same fused ``qkv`` / ``proj`` layout as timm's ``Attention`` (rows
``[q heads | k heads | v heads]``), but with the key/query size and the value size free to
differ, which two of the six expansions need. ``finish`` turns them back into timm's own
``Attention`` wherever the two sizes agree again.

The residual stream and LayerNorm (timm ViTs are pre-LN): ``ResidualMap`` widens the stream
from E to E' channels as x' = alpha * [x; x; ...(k copies); m 1] where m is the mean of x over
its E channels (r = E' - kE such "mean channels"). Then LayerNorm sees the same mean, and a
variance scaled by alpha^2 * kE/E'. Choosing alpha = sqrt(E'/(kE)) makes the variance *and*
the epsilon term come out unchanged, so timm's eps is kept as it is and only the gain moves:
gamma' = gamma / alpha on the copies (so LN'(x') on a copy of channel i equals LN(x)_i), and
the mean channels normalise to exactly 0 (beta' = 0 there). Consumers of LN outputs divide
their input columns by k. This is exact for any E' >= E, integer ratio or not; k = 1 is the
composable "hidden size" expansion, k = floor(E'/E) Net2Net's copy rule.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from learngene.core.errors import UserError

INIT_STD = 0.02  # timm's ViT init for new weights


def new_weights(*shape: int) -> torch.Tensor:
    t = torch.empty(*shape)
    nn.init.trunc_normal_(t, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
    return t


class SplitAttention(nn.Module):
    """timm's multi-head self-attention with separate key/query and value head sizes."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qk_dim: int,
        v_dim: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.num_heads, self.qk_dim, self.v_dim = num_heads, qk_dim, v_dim
        self.qkv = nn.Linear(dim, num_heads * (2 * qk_dim + v_dim), bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(num_heads * v_dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        B, N, _ = x.shape
        H, dq, dv = self.num_heads, self.qk_dim, self.v_dim
        q, k, v = self.qkv(x).split([H * dq, H * dq, H * dv], dim=-1)
        q, k = (t.view(B, N, H, dq).transpose(1, 2) for t in (q, k))
        v = v.view(B, N, H, dv).transpose(1, 2)
        # scaled_dot_product_attention scales by 1/sqrt(q's last size), as timm does.
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=self.attn_drop if self.training else 0.0
        )
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, H * dv)))

    # -- the fused weights, head by head -----------------------------------------------------
    def heads(self) -> dict[str, torch.Tensor]:
        """q, k: (H, dq, C); v: (H, dv, C); their biases (H, d) (zeros when qkv has no bias);
        proj: (C_out, H, dv)."""
        H, dq, dv = self.num_heads, self.qk_dim, self.v_dim
        w = self.qkv.weight.detach()
        b = self.qkv.bias.detach() if self.qkv.bias is not None else torch.zeros(w.shape[0])
        wq, wk, wv = w.split([H * dq, H * dq, H * dv])
        bq, bk, bv = b.split([H * dq, H * dq, H * dv])
        C = w.shape[1]
        return {
            "q": wq.reshape(H, dq, C),
            "k": wk.reshape(H, dq, C),
            "v": wv.reshape(H, dv, C),
            "bq": bq.reshape(H, dq),
            "bk": bk.reshape(H, dq),
            "bv": bv.reshape(H, dv),
            "proj": self.proj.weight.detach().reshape(-1, H, dv),
        }

    def set_heads(self, p: dict[str, torch.Tensor]) -> None:
        H, dq, C = p["q"].shape
        dv = p["v"].shape[1]
        self.num_heads, self.qk_dim, self.v_dim = H, dq, dv
        w = torch.cat([p["q"].reshape(-1, C), p["k"].reshape(-1, C), p["v"].reshape(-1, C)])
        b = torch.cat([p["bq"].reshape(-1), p["bk"].reshape(-1), p["bv"].reshape(-1)])
        set_linear(self.qkv, w, b if self.qkv.bias is not None else None)
        set_linear(self.proj, p["proj"].reshape(p["proj"].shape[0], H * dv), _bias(self.proj))


def _bias(lin: nn.Linear):
    return None if lin.bias is None else lin.bias.detach()


def set_linear(lin: nn.Linear, w: torch.Tensor, b: torch.Tensor | None) -> None:
    lin.weight = nn.Parameter(w.contiguous().clone())
    if b is not None:
        lin.bias = nn.Parameter(b.contiguous().clone())
    lin.out_features, lin.in_features = w.shape


def set_norm(norm: nn.LayerNorm, g: torch.Tensor, b: torch.Tensor) -> None:
    norm.weight, norm.bias = nn.Parameter(g.clone()), nn.Parameter(b.clone())
    norm.normalized_shape = (g.numel(),)


# --------------------------------------------------------------------------- attention form


def to_split(attn: nn.Module) -> SplitAttention:
    if isinstance(attn, SplitAttention):
        return attn
    from timm.models.vision_transformer import Attention

    if not isinstance(attn, Attention):
        raise UserError(f"cannot grow a {type(attn).__name__} attention: learngene grows timm's standard ViT Attention")
    extras = [n for n in ("q_norm", "k_norm", "norm") if not isinstance(getattr(attn, n, nn.Identity()), nn.Identity)]
    if extras or getattr(attn, "gate", None) is not None:
        raise UserError(f"cannot grow attention with {', '.join(extras) or 'a gate'}: not a plain ViT/DeiT attention")
    dim = attn.qkv.in_features
    sa = SplitAttention(
        dim,
        attn.num_heads,
        attn.head_dim,
        attn.head_dim,
        attn.qkv.bias is not None,
        attn.proj.bias is not None,
        attn.attn_drop.p,
        attn.proj_drop.p,
    )
    sa.qkv.load_state_dict(attn.qkv.state_dict())
    sa.proj.load_state_dict(attn.proj.state_dict())
    return sa


def to_timm(sa: SplitAttention) -> nn.Module:
    """Back to timm's Attention (only when key/query and value sizes agree)."""
    from timm.models.vision_transformer import Attention

    dim = sa.proj.out_features
    # attn_head_dim only where the head size is not dim / heads (older timm lacks it)
    extra = {} if sa.qk_dim * sa.num_heads == dim else {"attn_head_dim": sa.qk_dim}
    attn = Attention(
        dim,
        sa.num_heads,
        qkv_bias=sa.qkv.bias is not None,
        proj_bias=sa.proj.bias is not None,
        attn_drop=sa.attn_drop,
        proj_drop=sa.proj_drop.p,
        **extra,
    )
    attn.qkv.load_state_dict(sa.qkv.state_dict())
    attn.proj.load_state_dict(sa.proj.state_dict())
    return attn


def start(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` ready for surgery (the caller's model is never changed)."""
    from learngene.core.vit import ViTView

    ViTView(model)  # one-line error when it is not a timm ViT
    m = copy.deepcopy(model).cpu().float()
    if not isinstance(m.norm_pre, nn.Identity) or not isinstance(m.patch_embed.norm, nn.Identity):
        raise UserError("cannot grow a ViT with a pre-norm on the embedding (CLIP-style): not a DeiT/ViT layout")
    if m.global_pool not in ("token", "avg", ""):
        raise UserError(f"cannot grow a ViT with global_pool={m.global_pool!r}: token or avg pooling only")
    for blk in m.blocks:
        if not isinstance(blk.mlp.norm, nn.Identity):
            raise UserError("cannot grow an MLP with a norm inside (not a plain ViT MLP)")
        blk.attn = to_split(blk.attn)
    return m


def finish(m: nn.Module) -> nn.Module:
    for blk in m.blocks:
        if isinstance(blk.attn, SplitAttention) and blk.attn.qk_dim == blk.attn.v_dim:
            blk.attn = to_timm(blk.attn)
    return m.eval()


def dims(m: nn.Module) -> dict[str, int]:
    """embed_dim, depth, num_heads, qk_dim, v_dim, mlp_hidden of a (possibly split) ViT;
    per-block sizes are taken from block 0 (every method keeps blocks uniform)."""
    blk = m.blocks[0]
    a = blk.attn
    if isinstance(a, SplitAttention):
        h, dq, dv = a.num_heads, a.qk_dim, a.v_dim
    else:
        h, dq, dv = a.num_heads, a.head_dim, a.head_dim
    return dict(
        embed_dim=m.embed_dim,
        depth=len(m.blocks),
        num_heads=h,
        qk_dim=dq,
        v_dim=dv,
        mlp_hidden=blk.mlp.fc1.out_features,
    )


# --------------------------------------------------------------------------- residual width


def layer_norms(m: nn.Module) -> list[nn.LayerNorm]:
    norms = [n for blk in m.blocks for n in (blk.norm1, blk.norm2)] + [m.norm, m.fc_norm]
    return [n for n in norms if isinstance(n, nn.LayerNorm)]


class ResidualMap:
    """E -> E' residual channels: k copies of every channel, then r mean channels, all
    scaled by alpha (see the module docstring)."""

    def __init__(self, old: int, new: int, copies: int = 1):
        if new < old:
            raise UserError(f"embed dim {new} is smaller than the model's {old}: growth only makes models larger")
        if not 1 <= copies <= new // old:
            raise ValueError(f"copies must be in 1..{new // old}")
        self.old, self.new, self.k = old, new, copies
        self.r = new - copies * old
        self.alpha = math.sqrt(new / (copies * old))

    def out(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """A producer's output side (rows of a weight writing into the stream, or the
        stream's own parameters such as pos_embed) along ``dim``."""
        t = t.movedim(dim, 0)
        parts = [t] * self.k
        if self.r:
            parts.append(t.mean(0, keepdim=True).expand(self.r, *t.shape[1:]))
        return (torch.cat(parts) * self.alpha).movedim(0, dim)

    def inp(self, w: torch.Tensor, fill: str = "random") -> torch.Tensor:
        """A consumer's input columns (the last dim): divided by k over the copies; the mean
        channels normalise to exactly zero, so their columns may be anything ('random' lets
        them learn, 'zero' leaves them silent)."""
        parts = [w / self.k] * self.k
        if self.r:
            extra = new_weights(w.shape[0], self.r) if fill == "random" else w.new_zeros(w.shape[0], self.r)
            parts.append(extra)
        return torch.cat(parts, dim=-1)

    def norm(self, norm: nn.LayerNorm) -> None:
        g, b = norm.weight.detach(), norm.bias.detach()
        ones, zeros = g.new_ones(self.r), g.new_zeros(self.r)
        set_norm(norm, torch.cat([g / self.alpha] * self.k + [ones]), torch.cat([b] * self.k + [zeros]))


def widen_residual(m: nn.Module, new: int, copies: int = 1, fill: str = "random") -> nn.Module:
    """Residual (hidden) size E -> new, exactly, for pre-LayerNorm timm ViTs."""
    rm = ResidualMap(m.embed_dim, new, copies)
    if rm.new == rm.old:
        return m
    pe = m.patch_embed.proj
    pe.weight = nn.Parameter(rm.out(pe.weight.detach()))
    if pe.bias is not None:
        pe.bias = nn.Parameter(rm.out(pe.bias.detach()))
    pe.out_channels = new
    for name in ("cls_token", "reg_token", "pos_embed"):
        p = getattr(m, name, None)
        if isinstance(p, nn.Parameter):
            setattr(m, name, nn.Parameter(rm.out(p.detach(), dim=-1)))
    for blk in m.blocks:
        for ls, lin in ((blk.ls1, blk.attn.proj), (blk.ls2, blk.mlp.fc2)):
            w, b = lin.weight.detach(), _bias(lin)
            if hasattr(ls, "gamma"):  # LayerScale: fold it in, then leave it at 1
                w, b = ls.gamma.detach()[:, None] * w, None if b is None else ls.gamma.detach() * b
                ls.gamma = nn.Parameter(torch.ones(new))
            set_linear(lin, rm.out(w), None if b is None else rm.out(b))
        for lin in (blk.attn.qkv, blk.mlp.fc1):
            set_linear(lin, rm.inp(lin.weight.detach(), fill), _bias(lin))
    for norm in layer_norms(m):
        rm.norm(norm)
    if isinstance(m.head, nn.Linear):
        set_linear(m.head, rm.inp(m.head.weight.detach(), fill), _bias(m.head))
    m.embed_dim = m.num_features = m.head_hidden_size = new
    return m


# --------------------------------------------------------------------------- depth


def identity_block(m: nn.Module) -> nn.Module:
    """A new block of the model's current sizes whose two residual branches output zero
    (zero proj and fc2): inserting it anywhere leaves the function unchanged."""
    blk = copy.deepcopy(m.blocks[0])
    for mod in blk.modules():
        if isinstance(mod, nn.Linear):
            mod.weight = nn.Parameter(new_weights(*mod.weight.shape))
            if mod.bias is not None:
                mod.bias = nn.Parameter(torch.zeros_like(mod.bias))
        elif isinstance(mod, nn.LayerNorm):
            set_norm(mod, torch.ones_like(mod.weight), torch.zeros_like(mod.bias))
    for lin in (blk.attn.proj, blk.mlp.fc2):
        nn.init.zeros_(lin.weight)
        if lin.bias is not None:
            nn.init.zeros_(lin.bias)
    return blk


def spread(old: int, new: int) -> list[int]:
    """Where the new blocks go: after evenly spaced old blocks (6 -> 12: after every block).
    Returns the source of each final position: an old index, or -1 for a new block."""
    extra = new - old
    after = [math.ceil((i + 1) * old / extra) - 1 for i in range(extra)]
    order: list[int] = []
    for b in range(old):
        order.append(b)
        order.extend([-1] * after.count(b))
    return order


def deepen(m: nn.Module, new_depth: int) -> nn.Module:
    old = len(m.blocks)
    if new_depth < old:
        raise UserError(f"depth {new_depth} is smaller than the model's {old}: growth only makes models larger")
    if new_depth == old:
        return m
    blocks = [m.blocks[i] if i >= 0 else identity_block(m) for i in spread(old, new_depth)]
    m.blocks = nn.Sequential(*blocks)
    return m
