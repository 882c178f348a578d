"""Descendants as plain nn.Modules.

`PoolModel` holds a pool's narrow and wide auxiliary models (plain timm ViTs) and one stitch
per stitched descendant; it runs any descendant on shared weights, which is what joint
training needs. `PoolModel.descendant(spec)` materialises one descendant as a standalone
module: the auxiliary model itself, or a `StitchedViT`.

`StitchedViT` *is* a timm VisionTransformer whose ``blocks`` hold the narrow blocks, the
stitch Linear and the wide blocks in one Sequential, with the wide final norm and head. So
timm's own forward_features / forward_head run it (no second forward to keep in step, and
the latency of a plain timm ViT with the same blocks), and it is registered with timm as
``learngene_stitched_vit``: after ``import learngene``, ``timm.create_model('local-dir:...')``
loads an exported child.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer

from learngene.assemble.configs import DescSpec, descendants
from learngene.vit import ViTView

STITCHED_ARCH = "learngene_stitched_vit"


class StitchedViT(VisionTransformer):
    """Narrow embedding + ``depth`` narrow blocks -> Linear(embed_dim, back_embed_dim) ->
    ``back_depth`` wide blocks -> wide norm + head. Keys: ``blocks.{depth}`` is the stitch."""

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, back_embed_dim: int, back_depth: int,
                 back_num_heads: int, back_mlp_ratio: float | None = None, mlp_ratio: float = 4.0,
                 num_classes: int = 1000, **kwargs):
        super().__init__(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                         num_classes=num_classes, **kwargs)
        # The wide part is made by timm too, so its blocks, norm and head are built exactly as
        # the wide auxiliary model's were (same norm layer, eps, qkv bias, init).
        back_kwargs = {k: v for k, v in kwargs.items() if k not in ("img_size", "patch_size", "in_chans")}
        back = VisionTransformer(img_size=self.patch_embed.img_size, patch_size=self.patch_embed.patch_size,
                                 embed_dim=back_embed_dim, depth=back_depth, num_heads=back_num_heads,
                                 mlp_ratio=back_mlp_ratio or mlp_ratio, num_classes=num_classes, **back_kwargs)
        self.blocks = nn.Sequential(*self.blocks, nn.Linear(embed_dim, back_embed_dim), *back.blocks)
        self.norm, self.fc_norm, self.head = back.norm, back.fc_norm, back.head
        self.num_features = self.head_hidden_size = self.embed_dim = back_embed_dim
        self.front_depth = depth

    @property
    def stitch(self) -> nn.Linear:
        return self.blocks[self.front_depth]


default_cfgs = generate_default_cfgs({
    f"{STITCHED_ARCH}.untrained": {
        "input_size": (3, 224, 224), "num_classes": 1000, "first_conv": "patch_embed.proj", "classifier": "head",
    },
})


@register_model
def learngene_stitched_vit(pretrained: bool = False, **kwargs) -> StitchedViT:
    return build_model_with_cfg(StitchedViT, STITCHED_ARCH, pretrained, **kwargs)


def stitched_args(spec: DescSpec, narrow_args: dict, wide_args: dict) -> dict:
    """timm model_args of a stitched descendant, from the auxiliary models' model_args."""
    return dict(
        img_size=narrow_args["img_size"], patch_size=narrow_args["patch_size"],
        num_classes=wide_args["num_classes"],
        embed_dim=narrow_args["embed_dim"], depth=len(spec.narrow_blocks), num_heads=narrow_args["num_heads"],
        mlp_ratio=narrow_args.get("mlp_ratio", 4.0),
        back_embed_dim=wide_args["embed_dim"], back_depth=len(spec.wide_blocks),
        back_num_heads=wide_args["num_heads"], back_mlp_ratio=wide_args.get("mlp_ratio", 4.0),
    )


class PoolModel(nn.Module):
    """Every descendant of a pool on shared weights: narrow + wide auxiliary models and one
    stitch per stitched descendant (``stitches[spec.id]``)."""

    def __init__(self, narrow: nn.Module, wide: nn.Module, narrow_args: dict, wide_args: dict,
                 stitches: dict[str, nn.Linear] | None = None, aux_arch: str = "deit_tiny_patch16_224"):
        super().__init__()
        self.aux_arch = aux_arch
        self.narrow, self.wide = narrow, wide
        self.narrow_args, self.wide_args = dict(narrow_args), dict(wide_args)
        nv, wv = ViTView(narrow), ViTView(wide)
        if nv.depth != wv.depth:
            raise ValueError(f"narrow and wide auxiliary models differ in depth ({nv.depth} vs {wv.depth})")
        self.depth = nv.depth
        self.specs = descendants(self.depth)
        dn, dw = nv.shape.embed_dim, wv.shape.embed_dim
        self.stitches = nn.ModuleDict({s.id: nn.Linear(dn, dw) for s in self.specs if s.kind == "stitch"})
        if stitches:
            for k, v in stitches.items():
                self.stitches[k].load_state_dict(v.state_dict() if isinstance(v, nn.Module) else v)

    def spec(self, desc_id: str) -> DescSpec:
        for s in self.specs:
            if s.id == desc_id:
                return s
        raise KeyError(desc_id)

    def narrow_tokens(self, x: torch.Tensor, j: int) -> torch.Tensor:
        nv = ViTView(self.narrow)
        return nv.run_blocks(nv.embed(x), 0, j + 1)

    def forward(self, x: torch.Tensor, spec: DescSpec, pre_logits: bool = False) -> torch.Tensor:
        if spec.kind == "narrow":
            m = self.narrow
            return m.forward_head(m.forward_features(x), pre_logits=pre_logits)
        wv = ViTView(self.wide)
        if spec.kind == "wide":
            tokens = wv.run_blocks(wv.embed(x))
        else:
            tokens = wv.run_blocks(self.stitches[spec.id](self.narrow_tokens(x, spec.j)), spec.k)
        return wv.features(tokens) if pre_logits else wv.head(tokens)

    def descendant(self, spec: DescSpec) -> nn.Module:
        """A standalone copy of one descendant (no Lightning, no pool needed to run it)."""
        if spec.kind == "narrow":
            return copy.deepcopy(self.narrow).eval()
        if spec.kind == "wide":
            return copy.deepcopy(self.wide).eval()
        model = StitchedViT(**stitched_args(spec, self.narrow_args, self.wide_args))
        nsd, wsd = self.narrow.state_dict(), self.wide.state_dict()
        sd = {}
        for key, v in nsd.items():
            if not key.startswith("blocks.") and key.split(".")[0] not in ("norm", "fc_norm", "head"):
                sd[key] = v  # embedding: patch_embed, cls_token, pos_embed, norm_pre
        for i in spec.narrow_blocks:
            sd.update({f"blocks.{i}.{k[len(f'blocks.{i}.'):]}": v for k, v in nsd.items() if k.startswith(f"blocks.{i}.")})
        front = len(spec.narrow_blocks)
        sd.update({f"blocks.{front}.{k}": v for k, v in self.stitches[spec.id].state_dict().items()})
        for n, i in enumerate(spec.wide_blocks):
            pre = f"blocks.{i}."
            sd.update({f"blocks.{front + 1 + n}.{k[len(pre):]}": v for k, v in wsd.items() if k.startswith(pre)})
        for key, v in wsd.items():
            if key.split(".")[0] in ("norm", "fc_norm", "head"):
                sd[key] = v
        model.load_state_dict(sd, strict=True)
        return model.eval()

    def descendant_args(self, spec: DescSpec) -> tuple[str, dict]:
        """(timm architecture, model_args) of a descendant, for its config.json."""
        if spec.kind == "narrow":
            return self.aux_arch, dict(self.narrow_args)
        if spec.kind == "wide":
            return self.aux_arch, dict(self.wide_args)
        return STITCHED_ARCH, stitched_args(spec, self.narrow_args, self.wide_args)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(model: nn.Module, img_size: int, in_chans: int = 3) -> int:
    """FLOPs of one image through the model (torch's own counter; a multiply-add is 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, in_chans, img_size, img_size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(x)
    return int(counter.get_total_flops())
