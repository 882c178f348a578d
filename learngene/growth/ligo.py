"""LiGO: a learned linear growth operator (Wang et al., ICLR 2023) for timm ViTs.

Width: every weight grows as W' = B W A^T. The paper's tying: one B_emb for the residual
stream (patch embedding, class token, position embedding, LayerNorm parameters, and the
output side of ``proj`` and ``fc2``), which is also the input side of q/k/v, ``fc1`` and the
classifier; per layer B_q, B_k, B_v for the attention's output side (``proj``'s input tied
to B_v) and B_fc for ``fc1``'s output (``fc2``'s input tied to it). The input side is B's
left inverse, A = B (B^T B)^-1, so that A^T B = I: a consumer reading a stream that was
widened by B sees what it saw before. For a selection matrix (Net2Net's copies) this is
exactly Net2Net's division by the copy count, which is how Net2Net is a special case.

Depth: each new layer's weight of each kind (qkv, proj, fc1, fc2, the norms; weights and
biases separately) is a learned combination of the old layers' (already widened) weights of
that kind, W'_j = sum_i D[j, i] W_i. Stacking (StackBERT) is D[j, i] = [i == j mod L];
Net2Net's identity blocks are D rows of zero for proj and fc2.

The operator starts as Net2Net (copies for the width, a copy of the previous block with
silenced branches for each new block) plus a little noise to break the symmetry between
copies, is trained on the task loss for ~100 steps with the small model frozen, and is then
materialised into a plain timm ViT that trains as usual.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.func import functional_call

from learngene.core.errors import UserError
from learngene.core.vit import block_prefix, parse_block_key
from learngene.growth import expand, surgery

# per-block weight kinds that get their own depth operator
KINDS = [
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "ls1.gamma",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
    "ls2.gamma",
]
SILENT = {"attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias"}


def left_inverse_t(b: torch.Tensor) -> torch.Tensor:
    """A with A^T B = I: B (B^T B)^-1."""
    return b @ torch.linalg.inv(b.T @ b)


def selection(old: int, new: int, groups: int = 1, generator=None) -> torch.Tensor:
    """A (new x old) 0/1 matrix copying units: unit j of the grown layer is unit g(j).
    ``groups`` > 1 copies blocks of ``old // groups`` units together (heads)."""
    from learngene.growth.net2net import mapping

    size = old // groups
    if groups > 1 and new % size == 0:  # whole heads copied together
        g = mapping(groups, new // size, generator)
        idx = (g[:, None] * size + torch.arange(size)).reshape(-1)
    else:
        # whole copies of every unit while they fit, then random single units for the rest: a
        # width that is not a multiple of the old one (48 -> 128) grows too
        whole = torch.arange(old).repeat(new // old)
        idx = torch.cat([whole, torch.randint(0, old, (new % old,), generator=generator)])
    s = torch.zeros(new, old)
    s[torch.arange(new), idx] = 1.0
    return s


class LigoOperator(nn.Module):
    """The growth operator from ``small`` (frozen, kept as buffers) to the sizes of ``template``."""

    def __init__(self, small: nn.Module, template: nn.Module, noise: float = 0.01, seed: int = 0):
        super().__init__()
        small = surgery.start(small)
        s, t = surgery.dims(small), surgery.dims(template)
        if s["qk_dim"] != s["v_dim"] or t["qk_dim"] != t["v_dim"]:
            raise UserError("LiGO grows models whose key/query and value head sizes agree")
        self.src_keys = list(small.state_dict())
        for k, v in small.state_dict().items():
            self.register_buffer("src__" + k.replace(".", "__"), v.detach().clone(), persistent=False)
        self.L, self.L2 = s["depth"], t["depth"]
        self.has_kind = {k for k in KINDS if block_prefix(0) + k in self.src_keys}
        gen = torch.Generator().manual_seed(seed)
        E, E2, L = s["embed_dim"], t["embed_dim"], self.L

        def p(x: torch.Tensor) -> nn.Parameter:
            return nn.Parameter(
                x + noise * torch.randn(x.shape, generator=gen) * (x.abs().max() + 1e-12) / max(1, x.shape[-1]) ** 0.5
            )

        # Net2Net start: whole-channel copies (the same for all layers) ...
        self.b_emb = p(selection(E, E2, generator=gen))
        q_old, q_new = s["num_heads"] * s["qk_dim"], t["num_heads"] * t["qk_dim"]
        # q, k and v copy the same heads, so a copied head attends as its original does
        if t["qk_dim"] == s["qk_dim"]:
            hsel = selection(q_old, q_new, s["num_heads"], gen)
        else:
            hsel = selection(q_old, q_new, generator=gen)
        self.b_q, self.b_k, self.b_v = (p(hsel.expand(L, -1, -1).clone()) for _ in range(3))
        self.b_fc = p(torch.stack([selection(s["mlp_hidden"], t["mlp_hidden"], generator=gen) for _ in range(L)]))
        # ... and each new block a copy of the block before it, branches silenced.
        order = surgery.spread(self.L, self.L2)
        src = []
        for i in order:
            src.append(src[-1] if i < 0 else i)
        d = {}
        for kind in sorted(self.has_kind):
            m = torch.zeros(self.L2, self.L)
            for j, (i, o) in enumerate(zip(src, order)):
                m[j, i] = 0.0 if (o < 0 and kind in SILENT) else 1.0
            d[kind.replace(".", "__")] = nn.Parameter(m)
        self.depth_ops = nn.ParameterDict(d)

    # -- materialise ---------------------------------------------------------------------
    def source(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, "src__" + k.replace(".", "__")) for k in self.src_keys}

    def forward(self) -> dict[str, torch.Tensor]:
        """The grown model's state dict (a differentiable function of the operator)."""
        src = self.source()
        B = self.b_emb
        A = left_inverse_t(B)

        def out(t, dim=0):  # residual producer side
            return torch.movedim(torch.tensordot(B, torch.movedim(t, dim, 0), dims=1), 0, dim)

        sd: dict[str, torch.Tensor] = {}
        width: list[dict[str, torch.Tensor]] = [{} for _ in range(self.L)]
        for k, v in src.items():
            mb = parse_block_key(k)
            if mb is None:
                if k.startswith("patch_embed.proj."):
                    sd[k] = out(v)
                elif k in ("cls_token", "reg_token", "pos_embed"):
                    sd[k] = out(v, -1)
                elif k.startswith(("norm.", "fc_norm.")):
                    sd[k] = B @ v
                elif k == "head.weight":
                    sd[k] = v @ A.T
                else:
                    sd[k] = v
                continue
            layer, kind = mb
            width[layer][kind] = self._widen_block(layer, kind, v, B, A, src)
        for kind in self.has_kind:
            D = self.depth_ops[kind.replace(".", "__")]
            stacked = torch.stack([width[layer][kind] for layer in range(self.L)])
            grown = torch.tensordot(D, stacked, dims=1)
            for j in range(self.L2):
                sd[block_prefix(j) + kind] = grown[j]
        return sd

    def _widen_block(self, layer, kind, v, B, A, src) -> torch.Tensor:
        if kind.startswith(("norm1.", "norm2.", "ls1.", "ls2.")) or kind in ("attn.proj.bias", "mlp.fc2.bias"):
            return B @ v
        if kind == "attn.qkv.weight" or kind == "attn.qkv.bias":
            nq = self.b_q.shape[2]
            nv = self.b_v.shape[2]
            q, k, val = v.split([nq, nq, nv])
            parts = [self.b_q[layer] @ q, self.b_k[layer] @ k, self.b_v[layer] @ val]
            if kind.endswith("weight"):
                parts = [x @ A.T for x in parts]
            return torch.cat(parts)
        if kind == "attn.proj.weight":
            return B @ v @ left_inverse_t(self.b_v[layer]).T
        if kind == "mlp.fc1.weight":
            return self.b_fc[layer] @ v @ A.T
        if kind == "mlp.fc1.bias":
            return self.b_fc[layer] @ v
        if kind == "mlp.fc2.weight":
            return B @ v @ left_inverse_t(self.b_fc[layer]).T
        raise UserError(f"LiGO does not know how to grow block weight {kind!r}")


def template_for(
    small: nn.Module, embed_dim=None, depth=None, num_heads=None, qk_dim=None, v_dim=None, mlp_hidden=None
) -> nn.Module:
    """A model of the grown sizes (its weights are replaced; only the shapes matter)."""
    return expand.expand(
        small,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        qk_dim=qk_dim,
        v_dim=v_dim,
        mlp_hidden_size=mlp_hidden,
    )


def materialise(op: LigoOperator, template: nn.Module) -> nn.Module:
    """A plain timm ViT holding the operator's grown weights."""
    import copy

    m = copy.deepcopy(template).cpu()
    with torch.no_grad():
        sd = {k: v.detach().cpu() for k, v in op().items()}
    m.load_state_dict(sd, strict=True)
    return m.requires_grad_(True).eval()  # the operator's training froze the template


def ligo_module(op: LigoOperator, template: nn.Module, lr: float = 1e-3, label_smoothing: float = 0.1):
    import lightning as L

    class _Ligo(L.LightningModule):
        """Trains the operator only: the small model is frozen (buffers) and the template
        is just the grown architecture that ``functional_call`` runs with the grown weights."""

        def __init__(self):
            super().__init__()
            self.op = op
            self.template = template
            for q in self.template.parameters():
                q.requires_grad_(False)
            self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = functional_call(self.template, self.op(), (x,))
            loss = self.loss(logits, y)
            self.log("train_loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.op.parameters(), lr=lr, weight_decay=0.0)

    return _Ligo()


def ligo(
    small: nn.Module,
    dm,
    steps: int = 100,
    embed_dim=None,
    depth=None,
    num_heads=None,
    qk_dim=None,
    v_dim=None,
    mlp_hidden=None,
    lr: float = 1e-3,
    seed: int = 0,
    trainer_args=None,
) -> nn.Module:
    """Grow ``small`` with an operator trained ``steps`` steps on ``dm``'s training split."""
    from learngene.core.training import TrainerArgs, fit

    template = template_for(small, embed_dim, depth, num_heads, qk_dim, v_dim, mlp_hidden)
    op = LigoOperator(small, template, seed=seed)
    if steps > 0:
        import lightning as L

        # The batches' augmentation draws from python's `random` (the digits' pixel shift) and
        # torch's RNG; without this the operator, and so the grown model, depended on whatever
        # had run before in the process (and on nothing at all in a fresh CLI process).
        L.seed_everything(seed, verbose=False)
        module = ligo_module(op, template, lr=lr)
        targs = trainer_args or TrainerArgs(progress=False)
        targs.label = "grow: LiGO operator"
        fit(module, dm, targs, steps=steps, limit_val_batches=0)
    return materialise(op, template)
