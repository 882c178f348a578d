"""Stitch initialisation.

- ``lstsq`` (SN-Net): least squares, with bias, from narrow block j's output tokens to wide
  block k-1's output tokens on a batch of training images: the stitch starts as the best
  linear map between what the two auxiliary models compute at that depth.
- ``distill`` (Learngene Pool): from the W maps the pool was distilled with. W_n maps the
  ancestor's width to the narrow width (narrow ~ W_n a + b_n) and W_w to the wide width
  (wide ~ W_w a + b_w), so narrow -> wide is W_w pinv(W_n), bias b_w - W_w pinv(W_n) b_n,
  using the maps whose student blocks are nearest to j and to k-1.
"""

from __future__ import annotations

import torch

from learngene.core.errors import UserError
from learngene.core.vit import ViTView
from learngene.stitch.stitched import PoolModel, linear_part

INIT_IMAGES = 256  # training images for least-squares stitch init


@torch.no_grad()
def init_lstsq(
    pm: PoolModel,
    images: torch.Tensor,
    ridge: float = 1e-4,
    prefix_weight: float | None = None,
    norm_weight: bool = True,
    only: set[str] | None = None,
) -> None:
    was = pm.training
    pm.eval()
    n_tokens = [t.double() for t in ViTView(pm.narrow).forward_taps(images, attn=[]).blocks]
    w_tokens = [t.double() for t in ViTView(pm.wide).forward_taps(images, attn=[]).blocks]
    for spec in pm.specs:
        if spec.kind != "stitch" or (only is not None and spec.id not in only):
            continue
        x = n_tokens[spec.j]
        y = w_tokens[spec.k - 1]
        # Row weights: the class token alone reaches the head, but it is 1 of N tokens, so
        # by default it gets the weight of all patch tokens together.
        n_tok, n_pre = x.shape[1], pm.wide.num_prefix_tokens
        wt = torch.ones(n_tok, dtype=x.dtype)
        wt[:n_pre] = (n_tok - n_pre) / n_pre if prefix_weight is None else prefix_weight
        wt = wt.repeat(x.shape[0])
        if norm_weight:
            # what the next pre-norm block sees is the token after LayerNorm: weight each
            # token's error by 1/its variance, so small and large tokens count alike
            wt = wt / y.reshape(-1, y.shape[-1]).var(-1).clamp(min=1e-6)
        sw = wt.sqrt()[:, None]
        x = x.reshape(-1, x.shape[-1]) * sw
        y = y.reshape(-1, y.shape[-1]) * sw
        xa = torch.cat([x, sw], 1)
        # Normal equations with a tiny ridge: stable when tokens are nearly collinear
        # (few images, wide models) and the same answer as lstsq otherwise.
        gram = xa.T @ xa
        gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
        sol = torch.linalg.solve(gram, xa.T @ y)  # (dn + 1, dw)
        lin = linear_part(pm.stitches[spec.id])
        lin.weight.copy_(sol[:-1].T.to(lin.weight.dtype))
        lin.bias.copy_(sol[-1].to(lin.bias.dtype))
    pm.train(was)


def _nearest(maps: dict[str, torch.Tensor], pairs: list, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    i = min(range(len(pairs)), key=lambda n: (abs(pairs[n][1] - block), -pairs[n][1]))
    return maps[f"W.{i}.weight"].double(), maps[f"W.{i}.bias"].double()


@torch.no_grad()
def init_distill(
    pm: PoolModel,
    narrow_maps: dict,
    wide_maps: dict,
    narrow_pairs: list,
    wide_pairs: list,
    only: set[str] | None = None,
) -> None:
    if not narrow_maps or not wide_maps:
        raise UserError("the pool has no distillation maps: use --init lstsq")
    for spec in pm.specs:
        if spec.kind != "stitch" or (only is not None and spec.id not in only):
            continue
        wn, bn = _nearest(narrow_maps, narrow_pairs, spec.j)
        ww, bw = _nearest(wide_maps, wide_pairs, spec.k - 1)
        s = ww @ torch.linalg.pinv(wn)
        lin = linear_part(pm.stitches[spec.id])
        lin.weight.copy_(s.to(lin.weight.dtype))
        lin.bias.copy_((bw - s @ bn).to(lin.bias.dtype))


def init_images(dm) -> torch.Tensor:
    """The training images least-squares stitch init fits on: INIT_IMAGES spread evenly."""
    from learngene.core.data import sample_images

    return sample_images(dm, INIT_IMAGES)


def init_stitches(pm: PoolModel, how: str, dm=None, maps: tuple | None = None, only: set[str] | None = None) -> None:
    """Initialise every stitch (or those ``only`` names; a richer kind on its Linear path):
    ``lstsq`` on ``dm``'s training images, or ``distill`` from ``maps`` = (narrow maps, wide
    maps, narrow pairs, wide pairs) a pool recorded."""
    from learngene.core.registries import STITCH_INITS

    STITCH_INITS.check(how, "--init")
    if how == "lstsq":
        STITCH_INITS[how](pm, init_images(dm), only=only)
    else:
        STITCH_INITS[how](pm, *maps, only=only)
