"""Image folders as users have them: `ImageFolderSource` (``DIR/train`` + ``DIR/val``, or one
folder of class folders split 70/10/20) and timm's transforms; scanning, reading (every image
mode becomes RGB the same way in training and evaluation) and bad files (skipped with a count,
or refused up front with ``strict``) are `learngene.core.images`.

Rules, in the order a folder meets them:

- ``ROOT/<class>/**/<image>``; hidden folders and files are ignored; symlinks are followed,
  but a folder already visited (a ``-> .`` link, a loop) is not entered twice.
- A class folder without images is refused, naming it (a class nothing can be learnt of);
  so are fewer than 2 classes and a val/ folder whose classes differ from train/'s.
- Reading: EXIF orientation applied; 16-bit and 32-bit integer images scaled to 8 bits
  (``convert('RGB')`` would clip them to white); float images taken as 0..1 when their
  maximum is <= 1, else 0..255; transparency (RGBA, LA, palette with a transparent colour)
  composited on the background that contrasts with what is opaque (black behind a light
  subject, white behind a dark one, white when nothing is opaque), so a cut-out stays
  visible: on white, a light animal cut out of a dark photo vanished (nearest neighbours
  found 64% of such images, 88% of the rest), and on black a dark logo would; CMYK,
  grayscale, palette and 1-bit images converted to RGB.
- Unreadable files (empty, truncated, not an image): by default the scan checks every
  header and skips the files that fail, with one warning line giving the count and the
  first; a file that fails only when decoded (a truncated JPEG passes the header check) is
  replaced in its batch by the next readable image of the split, with a warning naming it,
  so a bad file never kills a run hours in. ``strict`` decodes every image up front instead
  and refuses the first bad one, naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from learngene.core.errors import UserError
from learngene.core.images import ImageFiles, check_images, scan_image_folder
from learngene.core.limits import cores
from learngene.core.sources import Split, TensorImages, files_hash

# --------------------------------------------------------------------------- ImageFolder


# Below this input size a folder is read into memory once (decoded, resized, center-cropped)
# and augmented by shifts and flips: at 16 px DeiT's RandAugment and random-resized crops cut
# the object itself (fitting a silhouette folder: 69.5% val after 13 epochs with them against
# ~85% with shifts; benchmarks/own_data.py), and decoding a file per sample per epoch costs
# more than the training step of a small model.
SMALL_INPUT = 64
MAX_IN_MEMORY = 1 << 30  # bytes of uint8 pixels a folder may hold in memory (else read from files)


class ImageFolderSource:
    """``ROOT/train`` + ``ROOT/val`` (+ ``ROOT/test``), or one folder of class folders split
    70/10/20. Without a test/ folder a fixed stratified half of val/ is the test split (seed 0),
    so a model chosen on validation is never reported on the same images (``test_from`` says
    which). The folder is scanned (and every header checked) when the source is made, so bad
    input fails before any model is loaded."""

    embedded = False
    # decoding and augmenting files wants worker processes; half the cores, so that with
    # torch's threads on the other half (core_plan) the two never exceed the cores. Held in
    # memory (a small input size), none are needed.
    default_workers = min(8, cores() // 2)

    def __init__(self, root: str | os.PathLike, strict: bool = False):
        self.root = Path(root).expanduser()
        self.name = str(self.root)
        train_dir, val_dir, test_dir = self.root / "train", self.root / "val", self.root / "test"
        if train_dir.is_dir() and val_dir.is_dir():
            self.classes, train = scan_image_folder(train_dir)
            _, val = scan_image_folder(val_dir, classes=self.classes)
            train, val = check_images(train, strict), check_images(val, strict)
            if test_dir.is_dir():
                _, test = scan_image_folder(test_dir, classes=self.classes)
                test, self.test_from = check_images(test, strict), "test/"
            else:
                val, test = half_split(val, seed=0)
                self.test_from = "half of val/ (stratified, seed 0)"
            self.samples = {"train": train, "val": val, "test": test}
        else:
            self.classes, samples = scan_image_folder(self.root)
            self.samples = dict(zip(("train", "val", "test"), split_samples(check_images(samples, strict), seed=0)))
            self.test_from = "20% of the folder (stratified, seed 0)"
        for split, s in self.samples.items():
            missing = set(range(len(self.classes))) - {label for _, label in s}
            if missing:
                raise UserError(
                    f"data {self.root}: the {split} split has no readable image of class {self.classes[min(missing)]!r}"
                )
        self._memory: dict = {}
        self._flip: dict = {}

    def config_for(self, model_config: dict | None) -> dict | None:
        return dict(model_config) if model_config else None

    def count(self, split: str) -> int:
        return len(self.samples[split])

    def in_memory(self, data_config: dict) -> bool:
        size = int(data_config["input_size"][-1])
        return size < SMALL_INPUT and sum(map(len, self.samples.values())) * 3 * size * size <= MAX_IN_MEMORY

    def pixels(self, split: str, data_config: dict) -> Split:
        """A split decoded once at the model's input size: uint8 (N, 3, H, W), as the eval
        transform would read them (shorter side resized to size / crop_pct, center-cropped)."""
        size = int(data_config["input_size"][-1])
        key = (split, size, float(data_config.get("crop_pct") or 1.0), data_config.get("interpolation"))
        if key not in self._memory:
            _, eval_tf = transforms({**data_config, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}, False)
            samples = self.samples[split]
            imgs = torch.empty(len(samples), 3, size, size, dtype=torch.uint8)
            ds = ImageFiles(samples, eval_tf)
            for i in range(len(samples)):
                x, _ = ds[i]
                imgs[i] = (x * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
            self._memory[key] = Split(imgs, torch.tensor([lab for _, lab in samples], dtype=torch.int64))
        return self._memory[key]

    def flip_invariant(self, data_config: dict) -> bool:
        """Do the classes survive a horizontal flip? Raw-pixel nearest neighbours of the
        validation images, as they are and flipped, against the training images: flipped, at
        least 90% as accurate (animals facing either way, crops of photographs) or not (digits,
        letters). Decides whether training flips images; deterministic, seconds."""
        size = int(data_config["input_size"][-1])
        if size not in self._flip:
            from sklearn.neighbors import KNeighborsClassifier

            tr, va = self.pixels("train", data_config), self.pixels("val", data_config)
            knn = KNeighborsClassifier(1).fit(tr.images.flatten(1).float().numpy(), tr.labels.numpy())
            plain = knn.score(va.images.flatten(1).float().numpy(), va.labels.numpy())
            flipped = knn.score(va.images.flip(-1).flatten(1).float().numpy(), va.labels.numpy())
            self._flip[size] = bool(flipped >= 0.9 * plain)
        return self._flip[size]

    def datasets(self, data_config: dict, augment: bool) -> dict[str, Dataset]:
        if self.in_memory(data_config):
            size = int(data_config["input_size"][-1])
            flip = augment and self.flip_invariant(data_config)
            shift = max(1, round(size / 16))
            mean, std = data_config["mean"], data_config["std"]
            return {
                name: TensorImages(
                    self.pixels(name, data_config),
                    mean,
                    std,
                    train=(name == "train" and augment),
                    shift=shift,
                    flip=flip,
                )
                for name in self.samples
            }
        train_tf, eval_tf = transforms(data_config, augment)
        return {name: ImageFiles(s, train_tf if name == "train" else eval_tf) for name, s in self.samples.items()}

    def workers_for(self, data_config: dict | None) -> int:
        """DataLoader workers this folder wants at a data config: none when held in memory."""
        return 0 if data_config and self.in_memory(data_config) else self.default_workers

    def fingerprint(self) -> dict:
        rel = sorted(
            f"{split}:{os.path.relpath(p, self.root)}"
            for split in ("train", "val", "test")
            for p, _ in self.samples[split]
        )
        return {
            "source": "imagefolder",
            "root": str(self.root.resolve()),
            "classes": self.classes,
            "counts": {n: len(s) for n, s in self.samples.items()},
            "files": files_hash(rel),
            "test_from": self.test_from,
        }


def half_split(samples, seed: int = 0):
    """A fixed stratified half of a split (val/ into val and test), or all of it to both when
    a class has a single image."""
    from sklearn.model_selection import train_test_split

    labels = [lab for _, lab in samples]
    try:
        a, b = train_test_split(np.arange(len(samples)), test_size=0.5, stratify=labels, random_state=seed)
    except ValueError:
        raise UserError(
            "the val/ folder is too small to halve into val and test (need >= 2 images per class): "
            "add images or a test/ folder"
        ) from None
    return [samples[i] for i in sorted(a)], [samples[i] for i in sorted(b)]


def split_samples(samples, fractions=(0.7, 0.1, 0.2), seed=0):
    """Deterministic stratified split of one folder into train/val/test."""
    from sklearn.model_selection import train_test_split

    labels = [lab for _, lab in samples]
    idx = np.arange(len(samples))
    try:
        rest, test = train_test_split(idx, test_size=fractions[2], stratify=labels, random_state=seed)
        val_of_rest = fractions[1] / (fractions[0] + fractions[1])
        train, val = train_test_split(
            rest, test_size=val_of_rest, stratify=[labels[i] for i in rest], random_state=seed
        )
    except ValueError:
        raise UserError("data folder is too small to split into train/val/test: need >= 10 images per class") from None
    return [[samples[i] for i in sorted(part)] for part in (train, val, test)]


# =========================================================================== image folders as users have them


# DeiT's training augmentation (timm's RandAugment, magnitude 9 +- 0.5, increasing severity).
DEIT_RAND_AUGMENT = "rand-m9-mstd0.5-inc1"


# --------------------------------------------------------------------------- transforms


def _posterize(img, bits_to_keep, **_):
    """timm's posterize, defined at 0 bits as Pillow < 13 defined it: no bit kept, a black
    image. PosterizeIncreasing keeps 4 - int(0.4 * magnitude) bits and the magnitude noise
    (mstd 0.5, clamped at 10) reaches 10, so 0 bits is drawn in every long run; Pillow 13
    refuses it ("bits must be between or equal to 1 and 8") and the DataLoader worker dies."""
    from PIL import ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point([0] * 256 * len(img.getbands()))
    return ImageOps.posterize(img, bits_to_keep)


def safe_posterize(transform) -> None:
    """Point the posterize ops of a timm transform's RandAugment at `_posterize` (only this
    transform's ops: timm itself is left as it is)."""
    for t in getattr(transform, "transforms", []):
        for op in getattr(t, "ops", []):
            if op.name.startswith("Posterize"):
                op.aug_fn = _posterize


# DeiT's random-resized crop keeps 8-100% of the image's area: at 224 px a crop is at least
# ~63 px wide. Below SMALL_INPUT (a folder too large to hold in memory at a small size), the
# smallest crop keeps half the area instead (at 16 px an 8% crop is a 4x4 scrap).
SMALL_INPUT_MIN_AREA = 0.5


def transforms(data_config: dict, augment: bool):
    """(train, eval) transforms of timm at a model's data config; training is DeiT's
    random-resized crop and RandAugment when ``augment``."""
    from timm.data import create_transform

    cfg = {
        k: data_config[k]
        for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
        if k in data_config
    }
    small = int(cfg["input_size"][-1]) < SMALL_INPUT
    train_tf = create_transform(
        **cfg,
        is_training=augment,
        auto_augment=DEIT_RAND_AUGMENT if augment else None,
        **({"scale": (SMALL_INPUT_MIN_AREA, 1.0)} if small and augment else {}),
    )
    safe_posterize(train_tf)
    return train_tf, create_transform(**cfg, is_training=False)
