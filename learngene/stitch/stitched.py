"""Stitched descendants as plain nn.Modules.

`PoolModel` holds two equal-depth timm ViTs (a pool's narrow and wide auxiliary models, or
SN-Net's anchors) and one stitch per stitched descendant; it runs any descendant on shared
weights, which is what joint training needs. `PoolModel.descendant(spec)` materialises one
descendant as a standalone module: the narrow or wide model itself, or a `StitchedViT`.

`StitchedViT` *is* a timm VisionTransformer whose ``blocks`` hold the narrow blocks, the
stitch and the wide blocks in one Sequential, with the wide final norm and head. So timm's
own forward_features / forward_head run it (no second forward to keep in step, and the
latency of a plain timm ViT with the same blocks), and it is registered with timm as
``learngene_stitched_vit``: after ``import learngene``, ``timm.create_model('local-dir:...')``
loads an exported child.

Stitches come from a registry of kinds (`STITCH_KINDS`): a new kind is a module class and
one line. A stitch's kind is part of the timm model_args (``stitch_kind``), so an exported
child records it in its config.json and loads back as the same kind.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer

from learngene.core.errors import UserError
from learngene.core.registries import STITCH_KINDS
from learngene.core.vit import EMBED_KEYS, HEAD_KEYS, ViTView, at_block, block_state
from learngene.stitch.descendants import DescSpec, descendants

STITCHED_ARCH = "learngene_stitched_vit"


# --------------------------------------------------------------------------- stitch kinds


def linear_stitch(d_in: int, d_out: int) -> nn.Module:
    """A Linear with bias (SN-Net's stitch); state keys 'weight', 'bias'."""
    return nn.Linear(d_in, d_out)


class MLPStitch(nn.Module):
    """A Linear plus a residual MLP beside it: ``linear(x) + fc2(gelu(fc1(norm(x))))``.

    One Linear is all a narrow token can be mapped through when the narrow side is a
    single block (stitch-0-K): what two wide blocks computed must then be a linear function
    of one narrow block's output. The MLP branch (hidden width = the wide width, pre-norm as
    in a transformer block) adds a non-linear correction. ``fc2`` starts at zero, so the
    stitch starts exactly as its Linear, which least squares / the distillation maps
    initialise like a plain linear stitch."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.norm = nn.LayerNorm(d_in, eps=1e-6)
        self.fc1 = nn.Linear(d_in, d_out)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(d_out, d_out)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.fc2(self.act(self.fc1(self.norm(x))))


DEFAULT_STITCH = "linear"  # kinds by name: learngene.core.registries.STITCH_KINDS


def make_stitch(kind: str, d_in: int, d_out: int) -> nn.Module:
    return STITCH_KINDS[kind](d_in, d_out)


def parse_stitch_kinds(text: str, specs: list[DescSpec]) -> dict[str, str]:
    """``--stitch-kind``: comma-separated items, each ``KIND`` (every stitched descendant),
    ``jN=KIND`` (those whose narrow part ends at block N) or ``ID=KIND`` (one descendant);
    later items win. {descendant id: kind} for the stitched descendants named."""
    stitched = [s for s in specs if s.kind == "stitch"]
    out: dict[str, str] = {}
    for item in (i.strip() for i in text.split(",")):
        where, _, kind = item.rpartition("=")
        if kind not in STITCH_KINDS:
            raise UserError(f"--stitch-kind {item!r}: unknown kind {kind!r} (known: {', '.join(STITCH_KINDS.names)})")
        if not where:
            picked = stitched
        elif where[:1] == "j" and where[1:].isdigit():
            picked = [s for s in stitched if s.j == int(where[1:])]
        else:
            picked = [s for s in stitched if s.id == where]
        if not picked:
            raise UserError(
                f"--stitch-kind {item!r}: {where!r} names no stitched descendant "
                f"(a kind alone, jN=KIND, or an id such as {stitched[0].id}=KIND)"
            )
        out.update({s.id: kind for s in picked})
    return out


def linear_part(stitch: nn.Module) -> nn.Linear:
    """The Linear of a stitch that least squares initialises (the stitch itself for a
    plain Linear; a richer kind names its linear path ``linear``)."""
    return stitch if isinstance(stitch, nn.Linear) else stitch.linear


# --------------------------------------------------------------------------- StitchedViT


class StitchedViT(VisionTransformer):
    """Narrow embedding + ``depth`` narrow blocks -> stitch (narrow width -> back_embed_dim)
    -> ``back_depth`` wide blocks -> wide norm + head. Keys: ``blocks.{depth}`` is the stitch."""

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        back_embed_dim: int,
        back_depth: int,
        back_num_heads: int,
        back_mlp_ratio: float | None = None,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        stitch_kind: str = DEFAULT_STITCH,
        **kwargs,
    ):
        super().__init__(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            num_classes=num_classes,
            **kwargs,
        )
        # The wide part is made by timm too, so its blocks, norm and head are built exactly as
        # the wide auxiliary model's were (same norm layer, eps, qkv bias, init).
        back_kwargs = {k: v for k, v in kwargs.items() if k not in ("img_size", "patch_size", "in_chans")}
        back = VisionTransformer(
            img_size=self.patch_embed.img_size,
            patch_size=self.patch_embed.patch_size,
            embed_dim=back_embed_dim,
            depth=back_depth,
            num_heads=back_num_heads,
            mlp_ratio=back_mlp_ratio or mlp_ratio,
            num_classes=num_classes,
            **back_kwargs,
        )
        self.blocks = nn.Sequential(*self.blocks, make_stitch(stitch_kind, embed_dim, back_embed_dim), *back.blocks)
        self.norm, self.fc_norm, self.head = back.norm, back.fc_norm, back.head
        self.num_features = self.head_hidden_size = self.embed_dim = back_embed_dim
        self.front_depth = depth

    @property
    def stitch(self) -> nn.Module:
        return self.blocks[self.front_depth]


default_cfgs = generate_default_cfgs(
    {
        f"{STITCHED_ARCH}.untrained": {
            "input_size": (3, 224, 224),
            "num_classes": 1000,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    }
)


@register_model
def learngene_stitched_vit(pretrained: bool = False, **kwargs) -> StitchedViT:
    return build_model_with_cfg(StitchedViT, STITCHED_ARCH, pretrained, **kwargs)


def stitched_args(spec: DescSpec, narrow_args: dict, wide_args: dict, kind: str = DEFAULT_STITCH) -> dict:
    """timm model_args of a stitched descendant, from the two models' model_args."""
    args = dict(
        img_size=narrow_args["img_size"],
        patch_size=narrow_args["patch_size"],
        num_classes=wide_args["num_classes"],
        embed_dim=narrow_args["embed_dim"],
        depth=len(spec.narrow_blocks),
        num_heads=narrow_args["num_heads"],
        mlp_ratio=narrow_args.get("mlp_ratio", 4.0),
        back_embed_dim=wide_args["embed_dim"],
        back_depth=len(spec.wide_blocks),
        back_num_heads=wide_args["num_heads"],
        back_mlp_ratio=wide_args.get("mlp_ratio", 4.0),
    )
    if kind != DEFAULT_STITCH:  # a Linear stitch's config stays as it always was
        args["stitch_kind"] = kind
    return args


# --------------------------------------------------------------------------- PoolModel


def flat_stitches(stitches: nn.ModuleDict) -> dict[str, torch.Tensor]:
    """Every stitch's tensors in one flat dict, keys ``<descendant id>/<key in the stitch>``."""
    return {f"{sid}/{k}": v for sid, m in stitches.items() for k, v in m.state_dict().items()}


def unflatten_stitches(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The inverse of flat_stitches; also reads the first format, ``<id>.weight``."""
    out: dict[str, dict] = {}
    for key, v in flat.items():
        sid, name = key.split("/", 1) if "/" in key else key.rsplit(".", 1)
        out.setdefault(sid, {})[name] = v
    return out


class PoolModel(nn.Module):
    """Every descendant of two equal-depth ViTs on shared weights: the narrow and wide models
    and one stitch per stitched descendant (``stitches[spec.id]``, of kind ``kinds[spec.id]``)."""

    def __init__(
        self,
        narrow: nn.Module,
        wide: nn.Module,
        narrow_args: dict,
        wide_args: dict,
        stitches: dict | None = None,
        aux_arch: str = "deit_tiny_patch16_224",
        kinds: dict[str, str] | None = None,
        aux_names: tuple[str, str] = ("narrow", "wide"),
    ):
        super().__init__()
        self.aux_arch = aux_arch
        self.aux_names = aux_names
        self.narrow, self.wide = narrow, wide
        self.narrow_args, self.wide_args = dict(narrow_args), dict(wide_args)
        nv, wv = ViTView(narrow), ViTView(wide)
        if nv.depth != wv.depth:
            raise ValueError(f"narrow and wide models differ in depth ({nv.depth} vs {wv.depth})")
        self.depth = nv.depth
        self.specs = descendants(self.depth)
        dn, dw = nv.shape.embed_dim, wv.shape.embed_dim
        self.kinds = {s.id: (kinds or {}).get(s.id, DEFAULT_STITCH) for s in self.specs if s.kind == "stitch"}
        self.stitches = nn.ModuleDict({sid: make_stitch(kind, dn, dw) for sid, kind in self.kinds.items()})
        for sid, v in (stitches or {}).items():
            self.stitches[sid].load_state_dict(v.state_dict() if isinstance(v, nn.Module) else v)

    def set_kinds(self, kinds: dict[str, str]) -> list[str]:
        """Give stitched descendants other stitch kinds: a changed stitch is made afresh (for
        the caller to initialise); the ids changed."""
        dn, dw = ViTView(self.narrow).shape.embed_dim, ViTView(self.wide).shape.embed_dim
        changed = [sid for sid, kind in kinds.items() if self.kinds[sid] != kind]
        for sid in changed:
            self.kinds[sid] = kinds[sid]
            self.stitches[sid] = make_stitch(kinds[sid], dn, dw)
        return changed

    @property
    def img_size(self) -> int:
        return int(self.narrow_args["img_size"])

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
        model = StitchedViT(**self.descendant_args(spec)[1])
        nsd, wsd = self.narrow.state_dict(), self.wide.state_dict()
        sd = {k: v for k, v in nsd.items() if k.startswith(EMBED_KEYS)}
        for i in spec.narrow_blocks:
            sd.update(at_block(block_state(nsd, i), i))
        front = len(spec.narrow_blocks)
        sd.update(at_block(self.stitches[spec.id].state_dict(), front))
        for n, i in enumerate(spec.wide_blocks):
            sd.update(at_block(block_state(wsd, i), front + 1 + n))
        sd.update({k: v for k, v in wsd.items() if k.startswith(HEAD_KEYS)})
        model.load_state_dict(sd, strict=True)
        return model.eval()

    def descendant_args(self, spec: DescSpec) -> tuple[str, dict]:
        """(timm architecture, model_args) of a descendant, for its config.json."""
        if spec.kind == "narrow":
            return self.aux_arch, dict(self.narrow_args)
        if spec.kind == "wide":
            return self.aux_arch, dict(self.wide_args)
        return STITCHED_ARCH, stitched_args(spec, self.narrow_args, self.wide_args, self.kinds[spec.id])


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


def static_rows(pm: PoolModel) -> list[dict]:
    """id, kind, j, k, blocks, params, FLOPs (per image) of every descendant."""
    rows = []
    for s in pm.specs:
        model = pm.descendant(s)
        rows.append(
            {
                "id": s.id,
                "kind": s.kind,
                "j": s.j,
                "k": s.k,
                "blocks": s.n_blocks,
                "params": count_params(model),
                "flops": count_flops(model, pm.img_size),
            }
        )
    return rows


@torch.no_grad()
def evaluate_specs(pm: PoolModel, specs: list[DescSpec], loader, device="cpu") -> dict[str, dict]:
    """top1 / top5 of several descendants in one pass over the loader."""
    from learngene.core.evaluation import topk_hits

    pm.eval().to(device)
    hits = {s.id: {1: 0, 5: 0} for s in specs}
    n = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        for s in specs:
            for k, h in topk_hits(pm(x, s), y).items():
                hits[s.id][k] += h
        n += len(y)
    pm.cpu()
    return {sid: {f"top{k}": round(100 * h / n, 2) for k, h in hs.items()} for sid, hs in hits.items()}
