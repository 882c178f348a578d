"""Datasets: the embedded default (scikit-learn digits) and any ImageFolder, behind one
LightningDataModule.

The embedded default is real data, only small: scikit-learn's bundled 1,797 handwritten
digits (8x8, 10 classes), upsampled bilinearly to 16x16 RGB so a patch-4 ViT sees a 4x4 grid.
It lives in memory as tensors, so a 2-core CPU trains on it in seconds per epoch.

Real data is an ImageFolder (``train/`` and ``val/`` class folders, or one folder of class
folders split deterministically) read with timm's transforms at the ancestor's input size.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from learngene.errors import UserError

EMBEDDED = "digits"
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# The fixed split of the embedded data: 25% test (the calibration's 450 images), 10% val,
# the rest train; stratified, seed 0. Changing these changes every cached number.
DIGITS_TEST_FRACTION = 0.25
DIGITS_VAL_FRACTION = 0.10
DIGITS_SPLIT_SEED = 0
DIGITS_IMG_SIZE = 16
# New tasks made from the embedded digits (``--data digits:NAME``), for adaptation: same
# images and split, something the pool never saw.
DIGITS_TASKS = {
    "rot90": "the digits rotated by 90 degrees (a held-out distortion), same labels",
}


# --------------------------------------------------------------------------- embedded data


@dataclass(frozen=True)
class Split:
    """Images in [0, 1] (N, 3, H, W) float32 and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def digits_splits(img_size: int = DIGITS_IMG_SIZE) -> dict[str, Split]:
    """The embedded dataset's fixed stratified train/val/test split, pixels in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # N,1,8,8
    x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    x = x.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(digits.target.astype(np.int64))
    idx = np.arange(len(y))
    rest, test = train_test_split(
        idx, test_size=DIGITS_TEST_FRACTION, stratify=y.numpy(), random_state=DIGITS_SPLIT_SEED
    )
    val_size = round(DIGITS_VAL_FRACTION * len(y))
    train, val = train_test_split(
        rest, test_size=val_size, stratify=y.numpy()[rest], random_state=DIGITS_SPLIT_SEED
    )
    return {
        name: Split(x[torch.from_numpy(np.sort(part))], y[torch.from_numpy(np.sort(part))])
        for name, part in (("train", train), ("val", val), ("test", test))
    }


def digits_data_config(img_size: int = DIGITS_IMG_SIZE) -> dict:
    """timm-style data config of the embedded data (mean/std of its training split)."""
    train = digits_splits(img_size)["train"].images
    mean = float(train.mean())
    std = float(train.std())
    return {
        "input_size": (3, img_size, img_size),
        "interpolation": "bilinear",
        "mean": (mean,) * 3,
        "std": (std,) * 3,
        "crop_pct": 1.0,
        "crop_mode": "center",
    }


class TensorImages(Dataset):
    """In-memory images, normalised on the fly; +-1 px random shift when training
    (the digits are centred, so a small shift is the augmentation that matters)."""

    def __init__(self, split: Split, mean: Sequence[float], std: Sequence[float], train: bool):
        self.split = split
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.train = train

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        x = self.split.images[i]
        if self.train:
            dx, dy = random.randint(-1, 1), random.randint(-1, 1)
            x = F.pad(x, (1, 1, 1, 1))[:, 1 + dy : 1 + dy + x.shape[1], 1 + dx : 1 + dx + x.shape[2]]
        return (x - self.mean) / self.std, int(self.split.labels[i])


# --------------------------------------------------------------------------- ImageFolder

# DeiT's training augmentation (timm's RandAugment, magnitude 9 +- 0.5, increasing severity).
DEIT_RAND_AUGMENT = "rand-m9-mstd0.5-inc1"


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



def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_image_folder(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, [(path, label)]) of a folder of class folders, with one-line errors."""
    if not root.exists():
        raise UserError(f"data path does not exist: {root}")
    if not root.is_dir():
        raise UserError(f"data path is not a folder: {root}")
    dirs = _class_dirs(root)
    if not dirs:
        if any(root.iterdir()):
            raise UserError(f"data folder has no class subfolders (expected ROOT/<class>/<image>): {root}")
        raise UserError(f"data folder is empty: {root}")
    names = [d.name for d in dirs]
    if classes is not None and names != classes:
        raise UserError(f"data folder {root} has classes {names[:5]}... that differ from the training classes")
    samples = []
    for label, d in enumerate(dirs):
        for dirpath, _, files in os.walk(d, followlinks=True):
            for f in sorted(files):
                if f.lower().endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(dirpath, f), label))
    if not samples:
        raise UserError(f"data folder has no images ({', '.join(IMG_EXTENSIONS)}): {root}")
    used = sorted({label for _, label in samples})
    if len(used) < 2:
        raise UserError(f"data folder needs at least 2 classes with images, found {len(used)}: {root}")
    return names, samples


def check_images(samples: list[tuple[str, int]], limit: int = 20000, seed: int = 0) -> None:
    """Open each image's header (cheap: no decoding); past `limit` files, a random sample.
    Catching a bad file here beats failing an hour into training."""
    from PIL import Image

    todo = samples if len(samples) <= limit else random.Random(seed).sample(samples, limit)
    for path, _ in todo:
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as e:  # PIL raises many types for bad files
            raise UserError(f"unreadable image {path}: {type(e).__name__}") from None


class ImageFiles(Dataset):
    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except Exception as e:
            raise UserError(f"unreadable image {path}: {type(e).__name__}") from None
        return self.transform(img), label


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


# --------------------------------------------------------------------------- the DataModule


class LearngeneDataModule(L.LightningDataModule):
    """The embedded digits (``data=None``) or an ImageFolder path, same interface.

    ``data_config`` is timm's ``resolve_data_config`` of the model that will see the images
    (input size, interpolation, mean/std, crop); the embedded data brings its own.
    ``train_fraction`` < 1 keeps a fixed stratified subset of the training split.
    Paths are checked when the module is made, so bad input fails before any training.
    """

    def __init__(
        self,
        data: str | os.PathLike | None = None,
        data_config: dict | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        train_fraction: float = 1.0,
        augment: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        if batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        if not 0 < train_fraction <= 1:
            raise UserError(f"train fraction must be in (0, 1], got {train_fraction}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.train_fraction = train_fraction
        self.augment = augment
        self.seed = seed
        self.task = None
        if isinstance(data, str) and data.startswith(EMBEDDED + ":"):
            self.task = data.split(":", 1)[1]
            if self.task not in DIGITS_TASKS:
                raise UserError(f"unknown embedded task {data!r} (known: {', '.join(EMBEDDED + ':' + t for t in DIGITS_TASKS)})")
            data = None
        self.root = None if data in (None, "", EMBEDDED) else Path(data).expanduser()
        if self.root is None:
            self.data_config = dict(data_config or digits_data_config())
            self.num_workers = 0 if num_workers is None else num_workers
            self.classes = [str(i) for i in range(10)]
            self.name = EMBEDDED if self.task is None else f"{EMBEDDED}:{self.task}"
        else:
            # The transforms need the reading model's data config; it may be set later
            # (the folder is checked now, before any model is loaded).
            self.data_config = dict(data_config) if data_config else None
            self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
            self.name = str(self.root)
            self._scan()
        self._sets: dict[str, Dataset] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def img_size(self) -> int:
        return int(self.data_config["input_size"][-1])

    def _scan(self) -> None:
        train_dir, val_dir = self.root / "train", self.root / "val"
        if train_dir.is_dir() and val_dir.is_dir():
            self.classes, train = scan_image_folder(train_dir)
            _, val = scan_image_folder(val_dir, classes=self.classes)
            # ImageNet convention: the val folder is the reported test set too.
            self._samples = {"train": train, "val": val, "test": val}
            check_images(train + val)
        else:
            self.classes, samples = scan_image_folder(self.root)
            check_images(samples)
            train, val, test = split_samples(samples, seed=0)
            self._samples = {"train": train, "val": val, "test": test}

    def setup(self, stage: str | None = None) -> None:
        if self._sets is not None:
            return
        if self.root is None:
            splits = digits_splits(self.img_size)
            if self.task == "rot90":
                splits = {n: Split(torch.rot90(s.images, 1, (2, 3)).contiguous(), s.labels) for n, s in splits.items()}
            mean, std = self.data_config["mean"], self.data_config["std"]
            self._sets = {
                name: TensorImages(s, mean, std, train=(name == "train" and self.augment))
                for name, s in splits.items()
            }
        else:
            from timm.data import create_transform

            if not self.data_config:
                raise ValueError("set data_config (the reading model's timm data config) before setup()")
            cfg = {k: self.data_config[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode") if k in self.data_config}
            train_tf = create_transform(**cfg, is_training=self.augment, auto_augment=DEIT_RAND_AUGMENT if self.augment else None)
            safe_posterize(train_tf)
            eval_tf = create_transform(**cfg, is_training=False)
            self._sets = {
                name: ImageFiles(s, train_tf if name == "train" else eval_tf)
                for name, s in self._samples.items()
            }
        if self.train_fraction < 1:
            self._sets["train"] = self._subset(self._sets["train"])

    def _subset(self, ds: Dataset) -> Dataset:
        from sklearn.model_selection import train_test_split

        labels = ds.split.labels.numpy() if isinstance(ds, TensorImages) else [lab for _, lab in ds.samples]
        keep, _ = train_test_split(
            np.arange(len(ds)), train_size=self.train_fraction, stratify=labels, random_state=self.seed
        )
        return torch.utils.data.Subset(ds, sorted(keep.tolist()))

    def dataset(self, split: str) -> Dataset:
        self.setup()
        return self._sets[split]

    def _loader(self, split: str, shuffle: bool, eval_batch: bool = False) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.dataset(split),
            batch_size=self.eval_batch_size if eval_batch or split != "train" else self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
            generator=g if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def eval_loader(self, split: str) -> DataLoader:
        """A split in order at the evaluation batch size; with ``augment=False`` the training
        split too sees the evaluation transform (features for a kNN probe)."""
        return self._loader(split, shuffle=False, eval_batch=True)

    def fingerprint(self) -> str:
        """Short id of the data a model was trained on (cache keys, manifests)."""
        if self.root is None:
            return f"{self.name}-{self.img_size}px-split{DIGITS_SPLIT_SEED}"
        return f"imagefolder:{self.root.resolve()}"
