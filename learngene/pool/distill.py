"""Auxiliary-model distillation (Learngene Pool, AAAI 2024), one LightningModule.

loss = a * CE(student, y)
     + (1 - a) * ( T^2 * KL(ancestor/T || student/T)
                   + sum_p MSE(student_block_p, W_p(ancestor_block_p))
                   + sum_p MSE(student_attn_p,  V_p(ancestor_attn_p)) )

W_p, V_p are learnable Linear maps ancestor width -> student width. They are parameters of
this module, so they are in the optimizer (the original release left them random), and the
trained W maps go into the pool: they initialise stitches in the assemble stage.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

from learngene.core.training import OptimConfig, configure_adamw, param_groups
from learngene.core.vit import ViTView, fractional_positions, join_pieces, split_pieces
from learngene.pool.recipe import AuxSpec, DistillSpec

STUDENT_ARCH = "deit_tiny_patch16_224"  # timm entry point of the DeiT architecture; sizes overridden


def student_args(spec: AuxSpec, ancestor: nn.Module) -> dict:
    """The ancestor's input and classes, the auxiliary's width, depth, heads and MLP."""
    sizes = dict(embed_dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads, mlp_ratio=spec.mlp_ratio)
    return {**ViTView(ancestor).model_args(), **sizes}


def make_student(spec: AuxSpec, ancestor: nn.Module, seed: int) -> nn.Module:
    import timm

    torch.manual_seed(seed)
    student = timm.create_model(STUDENT_ARCH, **student_args(spec, ancestor))
    check_init(spec, ancestor)  # build_pool checks every auxiliary up front; SN-Net's anchor comes here alone
    if spec.init == "ancestor":
        init_from_ancestor(student, ancestor)
    elif spec.init == "pruned":
        from learngene.pool.prune import pruned

        # the ancestor pruned to the student's width, then its evenly spaced blocks: a narrow
        # student that starts from what the ancestor knows instead of from noise
        init_from_ancestor(student, pruned(ancestor, spec.embed_dim))
    return student


def check_init(spec: AuxSpec, ancestor: nn.Module) -> None:
    """The start ``spec.init`` names is possible from this ancestor (checked for every
    auxiliary before the first one trains)."""
    from learngene.core.errors import UserError

    a = ViTView(ancestor).shape
    same = (spec.embed_dim, spec.num_heads, spec.embed_dim * spec.mlp_ratio) == (a.embed_dim, a.num_heads, a.mlp_hidden)
    if spec.init == "ancestor" and not same:
        raise UserError(
            f"auxiliary.{spec.name}: init: ancestor needs the ancestor's width and heads ({a.embed_dim}/"
            f"{a.num_heads}), got {spec.embed_dim}/{spec.num_heads}"
        )
    if spec.init == "pruned" and (
        spec.num_heads != a.num_heads or spec.embed_dim > a.embed_dim or spec.mlp_ratio * a.embed_dim != a.mlp_hidden
    ):
        raise UserError(
            f"auxiliary.{spec.name}: init: pruned keeps the ancestor's {a.num_heads} heads and MLP ratio and "
            f"narrows it: num_heads must be {a.num_heads}, embed_dim at most {a.embed_dim}, got "
            f"{spec.embed_dim}/{spec.num_heads}"
        )


def spaced_blocks(student_depth: int, ancestor_depth: int) -> list[int]:
    """Evenly spaced ancestor blocks, ending at the last: 6 of 12 -> 1,3,5,7,9,11."""
    return [round((i + 1) * ancestor_depth / student_depth) - 1 for i in range(student_depth)]


def init_from_ancestor(student: nn.Module, ancestor: nn.Module) -> None:
    """Same-width student: embedding, final norm, head and evenly spaced blocks copied."""
    s, a = ViTView(student).shape, ViTView(ancestor).shape
    # a user's recipe was refused by check_init before this: a mismatch here is our bug
    assert (s.embed_dim, s.num_heads, s.mlp_hidden) == (a.embed_dim, a.num_heads, a.mlp_hidden), (s, a)
    src = split_pieces(ancestor.state_dict())
    picked = {f"b{i}": src[f"b{m}"] for i, m in enumerate(spaced_blocks(s.depth, a.depth))}
    student.load_state_dict(join_pieces({"embed": src["embed"], "head": src["head"], **picked}))


def distill_pairs(spec: AuxSpec, ancestor_depth: int) -> list[tuple[int, int]]:
    """(ancestor block, student block) pairs whose outputs are matched."""
    if spec.positions == "end":
        return [(ancestor_depth - 1, spec.depth - 1)]
    return list(zip(fractional_positions(ancestor_depth), fractional_positions(spec.depth)))


class DistillModule(L.LightningModule):
    def __init__(self, student: nn.Module, ancestor: nn.Module, spec: AuxSpec, cfg: DistillSpec):
        super().__init__()
        self.student = student
        self.ancestor = ancestor.eval().requires_grad_(False)
        self.spec, self.cfg = spec, cfg
        a_dim = ViTView(ancestor).shape.embed_dim
        self.pairs = distill_pairs(spec, ViTView(ancestor).depth)
        self.W = nn.ModuleList(nn.Linear(a_dim, spec.embed_dim) for _ in self.pairs)
        self.V = nn.ModuleList(nn.Linear(a_dim, spec.embed_dim) for _ in self.pairs)
        if a_dim == spec.embed_dim:
            # Same width: start the maps at identity, so a student initialised from the
            # ancestor's blocks starts with (near) zero feature loss instead of a random target.
            for m in [*self.W, *self.V]:
                nn.init.eye_(m.weight)
                nn.init.zeros_(m.bias)
        self.optim = OptimConfig(lr=spec.lr, weight_decay=cfg.weight_decay, warmup_fraction=cfg.warmup_fraction)

    def train(self, mode: bool = True):
        super().train(mode)
        self.ancestor.eval()  # frozen teacher: no dropout / drop-path, ever
        return self

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        a_idx = [a for a, _ in self.pairs]
        s_idx = [s for _, s in self.pairs]
        with torch.no_grad():
            t = ViTView(self.ancestor).forward_taps(x, blocks=a_idx, attn=a_idx)
        s = ViTView(self.student).forward_taps(x, blocks=s_idx, attn=s_idx)
        T = self.cfg.temperature
        ce = F.cross_entropy(s.logits, y)
        kl = (
            F.kl_div(
                F.log_softmax(s.logits / T, -1), F.log_softmax(t.logits / T, -1), log_target=True, reduction="batchmean"
            )
            * T
            * T
        )
        feat = sum(F.mse_loss(s.blocks[si], W(t.blocks[ai])) for (ai, si), W in zip(self.pairs, self.W))
        attn = sum(F.mse_loss(s.attn[si], V(t.attn[ai])) for (ai, si), V in zip(self.pairs, self.V))
        a = self.cfg.alpha
        total = a * ce + (1 - a) * (kl + feat + attn)
        return {
            "loss": total,
            "ce": ce,
            "kl": kl,
            "feat": feat,
            "attn": attn,
            "acc": (s.logits.argmax(-1) == y).float().mean(),
        }

    def training_step(self, batch, batch_idx):
        out = self.losses(*batch)
        # Epoch means, accumulated on the device: per-step logging would force a GPU sync
        # every step (measured: 0.81x a bare loop's throughput for base6 on an H100).
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in out.items() if k in ("loss", "ce", "kl")},
            prog_bar=True,
            on_step=False,
            on_epoch=True,
            batch_size=len(batch[1]),
        )
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        x, y = batch
        acc = (self.student(x).argmax(-1) == y).float().mean() * 100
        self.log("val/top1", acc, prog_bar=True, batch_size=len(y), sync_dist=True)

    def configure_optimizers(self):
        groups = param_groups([self.student, self.W, self.V], self.optim.weight_decay)
        return configure_adamw(self, groups, self.optim)
