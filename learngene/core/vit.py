"""The one place that knows timm's VisionTransformer.

Every stage (pool extraction, stitching, growth, bench) goes through `ViTView` instead of
reaching into timm internals: the embedding (patch_embed + prefix tokens + position
embedding), the list of blocks, the final norm + head, taps returning each block's output
and each block's attention sub-layer output (the residual branch ``ls1(attn(norm1(x)))``
before it is added back), the timm ``model_args`` of a model's shape, and every edit of
state-dict keys by block (``blocks.N.``): cutting a model into pieces and putting blocks
together under new indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from learngene.core.errors import UserError


def is_vit(model: nn.Module) -> bool:
    """A timm VisionTransformer whose blocks are all transformer blocks (what ViTView reads)."""
    from timm.models.vision_transformer import Block, VisionTransformer

    return isinstance(model, VisionTransformer) and all(isinstance(b, Block) for b in model.blocks)


def is_timm_vit(model: nn.Module) -> bool:
    """Any timm VisionTransformer, a stitched descendant (a stitch among its blocks) included."""
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


def input_size(model: nn.Module) -> int:
    """The image side any timm VisionTransformer (a stitched descendant too) reads."""
    img = model.patch_embed.img_size
    return int(img[0] if isinstance(img, (tuple, list)) else img)


def outline(model: nn.Module) -> dict:
    """The shape facts of any timm VisionTransformer, a stitched descendant included (whose
    blocks are a narrow part, a stitch and a wide part): what `learngene ancestor` and the
    model records print. A plain ViT gives its `ViTShape`; a stitched one its two widths."""
    from timm.models.vision_transformer import Block

    patch = model.patch_embed.patch_size
    blocks = [b for b in model.blocks if isinstance(b, Block)]
    heads = [b.attn.num_heads for b in blocks]
    out = {
        "embed_dim": model.embed_dim,
        "depth": len(blocks),
        "heads": heads[-1] if heads else None,
        "img_size": input_size(model),
        "patch_size": int(patch[0] if isinstance(patch, (tuple, list)) else patch),
        "num_classes": model.num_classes,
    }
    front = model.patch_embed.proj.out_channels
    if front != model.embed_dim:  # stitched: narrow blocks, a stitch into the wide width, wide blocks
        out["embed_dim"] = f"{front} -> {model.embed_dim}"
        out["heads"] = " -> ".join(str(h) for h in dict.fromkeys(heads))
    return out


@dataclass
class Taps:
    """What one forward pass recorded. ``blocks[i]`` / ``attn[i]`` are (B, N, C) tensors of
    block i (None where that block was not tapped)."""

    logits: torch.Tensor
    features: torch.Tensor  # pre-logits (pooled, after fc_norm): the kNN-probe features
    blocks: list = field(default_factory=list)
    attn: list = field(default_factory=list)


@dataclass(frozen=True)
class ViTShape:
    """The architecture numbers later stages reason about."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    img_size: int
    patch_size: int
    num_prefix_tokens: int
    num_classes: int

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


class ViTView:
    """A block-level view of a timm VisionTransformer (no copy: it wraps the model)."""

    def __init__(self, model: nn.Module):
        if not is_vit(model):
            raise UserError(
                f"{type(model).__name__} is not a timm VisionTransformer with pre-norm blocks; "
                "learngene works on ViT/DeiT models"
            )
        self.model = model

    # -- structure ---------------------------------------------------------------------------
    @property
    def blocks(self) -> nn.ModuleList | nn.Sequential:
        return self.model.blocks

    @property
    def depth(self) -> int:
        return len(self.model.blocks)

    @property
    def shape(self) -> ViTShape:
        m = self.model
        blk = m.blocks[0]
        img = m.patch_embed.img_size
        patch = m.patch_embed.patch_size
        return ViTShape(
            embed_dim=m.embed_dim,
            depth=len(m.blocks),
            num_heads=blk.attn.num_heads,
            mlp_hidden=blk.mlp.fc1.out_features,
            img_size=int(img[0] if isinstance(img, (tuple, list)) else img),
            patch_size=int(patch[0] if isinstance(patch, (tuple, list)) else patch),
            num_prefix_tokens=m.num_prefix_tokens,
            num_classes=m.num_classes,
        )

    def model_args(self) -> dict:
        """timm ``create_model`` keyword arguments that rebuild this shape."""
        s = self.shape
        return dict(
            img_size=s.img_size,
            patch_size=s.patch_size,
            embed_dim=s.embed_dim,
            depth=s.depth,
            num_heads=s.num_heads,
            mlp_ratio=s.mlp_hidden / s.embed_dim,
            num_classes=s.num_classes,
        )

    # -- pieces of the forward pass ------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> tokens (B, N, C) entering block 0."""
        m = self.model
        x = m.patch_embed(x)
        x = m._pos_embed(x)
        x = m.patch_drop(x)
        return m.norm_pre(x)

    def run_blocks(self, tokens: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Blocks start..stop-1 (python slice semantics)."""
        for blk in list(self.model.blocks)[start:stop]:
            tokens = blk(tokens)
        return tokens

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final norm + pooling + fc_norm: the pre-logit features."""
        return self.model.forward_head(self.model.norm(tokens), pre_logits=True)

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens after the last block -> logits (final norm, pooling, classifier)."""
        return self.model.forward_head(self.model.norm(tokens))

    # -- taps --------------------------------------------------------------------------------
    def forward_taps(
        self,
        x: torch.Tensor,
        blocks: list[int] | None = None,
        attn: list[int] | None = None,
    ) -> Taps:
        """One forward pass recording block outputs and attention-branch outputs.

        ``blocks`` / ``attn``: indices to record (None = all). Recording goes through
        forward hooks, so the model's own Block.forward runs unchanged.
        """
        n = self.depth
        want_b = set(range(n) if blocks is None else [i % n for i in blocks])
        want_a = set(range(n) if attn is None else [i % n for i in attn])
        out_b: list = [None] * n
        out_a: list = [None] * n
        handles = []
        try:
            for i, blk in enumerate(self.model.blocks):
                if i in want_b:
                    handles.append(blk.register_forward_hook(_store(out_b, i)))
                if i in want_a:
                    handles.append(blk.ls1.register_forward_hook(_store(out_a, i)))
            tokens = self.run_blocks(self.embed(x))
        finally:
            for h in handles:
                h.remove()
        normed = self.model.norm(tokens)
        return Taps(
            logits=self.model.forward_head(normed),
            features=self.model.forward_head(normed, pre_logits=True),
            blocks=out_b,
            attn=out_a,
        )


# --------------------------------------------------------------------------- state-dict keys

EMBED_KEYS = ("patch_embed.", "cls_token", "pos_embed", "reg_token", "norm_pre.")
HEAD_KEYS = ("norm.", "fc_norm.", "head.")


def split_pieces(sd: dict) -> dict[str, dict]:
    """A timm ViT's state dict cut into pieces: 'embed', 'b<i>' per block (keys inside a
    block without the ``blocks.i.`` prefix), 'head' (final norm, fc_norm, classifier)."""
    pieces: dict[str, dict] = {"embed": {}, "head": {}}
    for k, v in sd.items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            pieces.setdefault(f"b{int(i)}", {})[rest] = v
        elif k.startswith(EMBED_KEYS):
            pieces["embed"][k] = v
        else:
            pieces["head"][k] = v
    return pieces


def is_block_piece(name: str) -> bool:
    return name.startswith("b") and name[1:].isdigit()


def join_pieces(pieces: dict[str, dict]) -> dict:
    """The inverse of split_pieces."""
    sd = {}
    for name, tensors in pieces.items():
        for k, v in tensors.items():
            sd[f"blocks.{int(name[1:])}.{k}" if is_block_piece(name) else k] = v
    return sd


def block_prefix(i: int) -> str:
    return f"blocks.{i}."


def parse_block_key(key: str) -> tuple[int, str] | None:
    """(block index, key inside the block) of a ``blocks.i.rest`` key; None for any other key."""
    if not key.startswith("blocks."):
        return None
    _, i, rest = key.split(".", 2)
    return int(i), rest


def block_state(sd: dict, i: int) -> dict:
    """Block i's tensors, keys without the ``blocks.i.`` prefix."""
    pre = block_prefix(i)
    return {k[len(pre) :]: v for k, v in sd.items() if k.startswith(pre)}


def at_block(tensors: dict, i: int) -> dict:
    """Tensors of one block (or any module placed in ``blocks``) under index i."""
    return {block_prefix(i) + k: v for k, v in tensors.items()}


def _store(slot: list, i: int):
    def hook(module, inputs, output):
        slot[i] = output

    return hook


def fractional_positions(depth: int, fractions=(1 / 3, 2 / 3, 1.0)) -> list[int]:
    """Block indices at the given fractions of the depth (1.0 -> the last block).
    Used to pair student and teacher blocks ('front,end' distillation)."""
    return [max(0, round(f * depth) - 1) for f in fractions]
