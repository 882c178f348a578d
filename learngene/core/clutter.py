"""The third embedded testbed, ``clutter``: the animal silhouettes moved, scaled and rotated at
random on a 16x16 canvas among fragments of other silhouettes (cluttered-MNIST's idea).

Why it exists: on the plain silhouettes model size buys nothing (trained to their plateaus,
the 2.39M-parameter ancestor is 0.18 points above a width-48 model 7x smaller, and 0.65 above
one 60x smaller: the data, not the capacity, is the limit), so no comparison of zoo builders
can be told apart there. Here every training epoch draws new positions, scales, angles and
clutter for every image (effectively unlimited data), so what limits a model is what it can
represent: the slope between sizes that the comparison of methods needs.

Validation, test and the un-augmented training split are drawn once from fixed seeds (the
same images on every machine); their clutter comes from their own split, so no test
silhouette is seen in training, not even as a fragment.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from learngene.core.errors import UserError
from learngene.core.sources import ANIMALS, AnimalsSource, Split, TensorImages, animal_splits, gray_config

CANVAS = 16
# The object: 55-85% of the canvas, turned up to +-0.5 rad, moved up to +-35% of the canvas;
# three fragments of other silhouettes at 25-40% scale anywhere (max-composited at 0.9).
SCALE, TURN, SHIFT = (0.55, 0.85), 0.5, 0.35
FRAGMENTS, FRAGMENT_SCALE, FRAGMENT_SHIFT, FRAGMENT_LEVEL = 3, (0.25, 0.4), 0.8, 0.9
SEEDS = {"train": 789, "val": 123, "test": 456}  # the fixed draws of the un-augmented splits


def _place(img: torch.Tensor, scale, turn, dx, dy, size: int) -> torch.Tensor:
    """``img`` (N, 1, H, W) scaled, turned and moved onto an N x 1 x size x size canvas."""
    c, s = torch.cos(turn), torch.sin(turn)
    theta = torch.stack([torch.stack([c / scale, -s / scale, dx], 1), torch.stack([s / scale, c / scale, dy], 1)], 1)
    grid = F.affine_grid(theta, (img.shape[0], 1, size, size), align_corners=False)
    return F.grid_sample(img, grid, align_corners=False, padding_mode="zeros")


def draw(objects: torch.Tensor, pool: torch.Tensor, gen: torch.Generator | None = None, size: int = CANVAS):
    """Cluttered images (N, 3, size, size) in [0, 1] of ``objects`` (N, 1, 28, 28), their
    fragments drawn from ``pool`` (M, 1, 28, 28)."""
    n = objects.shape[0]

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    out = _place(objects, u(*SCALE), u(-TURN, TURN), u(-SHIFT, SHIFT), u(-SHIFT, SHIFT), size)
    for _ in range(FRAGMENTS):
        other = pool[torch.randint(0, pool.shape[0], (n,), generator=gen)]
        turn, shift = u(-torch.pi, torch.pi), FRAGMENT_SHIFT
        frag = _place(other, u(*FRAGMENT_SCALE), turn, u(-shift, shift), u(-shift, shift), size)
        out = torch.maximum(out, frag * FRAGMENT_LEVEL)
    return out.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


class ClutterImages(Dataset):
    """The training split drawn anew for every sample: its object, placement and clutter come
    from the global torch RNG (seeded per run by Lightning, so a run is reproducible)."""

    def __init__(self, objects: torch.Tensor, labels: torch.Tensor, mean, std):
        self.objects, self.labels_ = objects, labels
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels_)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]):
        # the DataLoader asks for a batch at once: one batched draw instead of one per image
        x = (draw(self.objects[indices], self.objects) - self.mean) / self.std
        return [(x[k], int(self.labels_[i])) for k, i in enumerate(indices)]

    def labels(self) -> list[int]:
        return self.labels_.tolist()


def _originals() -> dict[str, Split]:
    """The animals' splits at their native 28 px, one channel."""
    return {n: Split(s.images[:, :1], s.labels) for n, s in animal_splits(28).items()}


_FIXED: dict[str, Split] = {}


def fixed_split(name: str) -> Split:
    """A split drawn once from its fixed seed (cached in the process)."""
    if name not in _FIXED:
        s = _originals()[name]
        gen = torch.Generator().manual_seed(SEEDS[name])
        _FIXED[name] = Split(draw(s.images, s.images, gen), s.labels)
    return _FIXED[name]


class ClutterSource(AnimalsSource):
    """``clutter``: the animal silhouettes among clutter at 16 px (see the module's docstring)."""

    def __init__(self, task: str | None = None):
        if task is not None:
            raise UserError(f"the clutter testbed has no task {task!r}")
        self.task, self.name, self.classes = None, "clutter", list(ANIMALS)

    def config_for(self, model_config: dict | None) -> dict:
        img = int(model_config["input_size"][-1]) if model_config else CANVAS
        if img != CANVAS:
            raise UserError(f"the clutter testbed is drawn at {CANVAS}x{CANVAS}; this model reads {img}x{img}")
        return gray_config(CANVAS, fixed_split("val").images)  # the training split is drawn anew

    def datasets(self, data_config: dict, augment: bool) -> dict[str, Dataset]:
        mean, std = data_config["mean"], data_config["std"]
        out = {n: TensorImages(fixed_split(n), mean, std, train=False) for n in ("val", "test")}
        if augment:
            o = _originals()["train"]
            out["train"] = ClutterImages(o.images, o.labels, mean, std)
        else:
            out["train"] = TensorImages(fixed_split("train"), mean, std, train=False)
        return out

    def fingerprint(self) -> dict:
        fp = super().fingerprint()
        return {
            **fp,
            "source": "clutter",
            "files": fp["files"] + f"-clutter{CANVAS}-v1",
            "draw": [SCALE, TURN, SHIFT, FRAGMENTS, FRAGMENT_SCALE, FRAGMENT_SHIFT, FRAGMENT_LEVEL, SEEDS],
        }
