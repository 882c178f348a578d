"""Data: sources behind one protocol (a registry), one LightningDataModule over any of them,
and one rule for "the data this model reads".

Sources (`DATA_SOURCES`, by scheme; a path is an ImageFolder):

- ``digits`` (the embedded default): scikit-learn's bundled 1,797 real handwritten digits
  (8x8, 10 classes), upsampled bilinearly to the reading model's input size (16x16 for
  the embedded models) as RGB; a fixed stratified split; in memory, so a 2-core CPU trains
  on it in seconds per epoch. ``digits:TASK`` is a new task made of the same images
  (``digits:rot90``), for adaptation.
- an ImageFolder: ``DIR/train/<class>/`` and ``DIR/val/<class>/`` (val is also the reported
  test split, as for ImageNet), or one folder of class folders split 70/10/20 (stratified,
  seed 0); read with timm's transforms at the reading model's data config
  (`learngene.core.images` holds the rules for files as users have them).

A new source is a class with the `DigitsSource` interface and one registry line.
"""

from __future__ import annotations

import functools
import hashlib
import json
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

from learngene.core.errors import UserError

EMBEDDED = "digits"

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


def files_hash(names) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- embedded digits


@dataclass(frozen=True)
class Split:
    """Images in [0, 1] (N, 3, H, W) float32 and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@functools.lru_cache(maxsize=4)
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
    rest, test = train_test_split(idx, test_size=DIGITS_TEST_FRACTION, stratify=y.numpy(), random_state=DIGITS_SPLIT_SEED)
    val_size = round(DIGITS_VAL_FRACTION * len(y))
    train, val = train_test_split(rest, test_size=val_size, stratify=y.numpy()[rest], random_state=DIGITS_SPLIT_SEED)
    return {
        name: Split(x[torch.from_numpy(np.sort(part))], y[torch.from_numpy(np.sort(part))])
        for name, part in (("train", train), ("val", val), ("test", test))
    }


def digits_data_config(img_size: int = DIGITS_IMG_SIZE) -> dict:
    """timm-style data config of the embedded data (mean/std of its training split)."""
    train = digits_splits(img_size)["train"].images
    mean, std = float(train.mean()), float(train.std())
    return {"input_size": (3, img_size, img_size), "interpolation": "bilinear", "mean": (mean,) * 3,
            "std": (std,) * 3, "crop_pct": 1.0, "crop_mode": "center"}


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

    def labels(self) -> list[int]:
        return self.split.labels.tolist()


class DigitsSource:
    """The embedded digits, or a task made of them (``digits:rot90``)."""

    embedded = True
    default_workers = 0

    def __init__(self, task: str | None = None):
        if task is not None and task not in DIGITS_TASKS:
            raise UserError(f"unknown embedded task {EMBEDDED}:{task} (known: {', '.join(EMBEDDED + ':' + t for t in DIGITS_TASKS)})")
        self.task = task
        self.name = EMBEDDED if task is None else f"{EMBEDDED}:{task}"
        self.classes = [str(i) for i in range(10)]

    def config_for(self, model_config: dict | None) -> dict:
        """The digits at the reading model's input size, normalised with their own statistics."""
        img = int(model_config["input_size"][-1]) if model_config else DIGITS_IMG_SIZE
        return digits_data_config(img)

    def datasets(self, data_config: dict, augment: bool) -> dict[str, Dataset]:
        splits = digits_splits(int(data_config["input_size"][-1]))
        if self.task == "rot90":
            splits = {n: Split(torch.rot90(s.images, 1, (2, 3)).contiguous(), s.labels) for n, s in splits.items()}
        mean, std = data_config["mean"], data_config["std"]
        return {name: TensorImages(s, mean, std, train=(name == "train" and augment)) for name, s in splits.items()}

    def fingerprint(self) -> dict:
        counts = {n: len(s) for n, s in digits_splits(DIGITS_IMG_SIZE).items()}
        return {"source": self.name, "classes": self.classes, "counts": counts,
                "files": f"sklearn-digits-split{DIGITS_SPLIT_SEED}"}


# --------------------------------------------------------------------------- ImageFolder


class ImageFolderSource:
    """``ROOT/train`` + ``ROOT/val``, or one folder of class folders split 70/10/20. The
    folder is scanned (and every header checked) when the source is made, so bad input
    fails before any model is loaded."""

    embedded = False
    default_workers = min(8, os.cpu_count() or 1)

    def __init__(self, root: str | os.PathLike, strict: bool = False):
        from learngene.core.images import check_images, scan_image_folder

        self.root = Path(root).expanduser()
        self.name = str(self.root)
        train_dir, val_dir = self.root / "train", self.root / "val"
        if train_dir.is_dir() and val_dir.is_dir():
            self.classes, train = scan_image_folder(train_dir)
            _, val = scan_image_folder(val_dir, classes=self.classes)
            train, val = check_images(train, strict), check_images(val, strict)
            # ImageNet convention: the val folder is the reported test set too.
            self.samples = {"train": train, "val": val, "test": val}
        else:
            self.classes, samples = scan_image_folder(self.root)
            self.samples = dict(zip(("train", "val", "test"), split_samples(check_images(samples, strict), seed=0)))
        for split, s in self.samples.items():
            missing = set(range(len(self.classes))) - {label for _, label in s}
            if missing:
                raise UserError(f"data {self.root}: the {split} split has no readable image of class "
                                f"{self.classes[min(missing)]!r}")

    def config_for(self, model_config: dict | None) -> dict | None:
        return dict(model_config) if model_config else None

    def datasets(self, data_config: dict, augment: bool) -> dict[str, Dataset]:
        from learngene.core.images import ImageFiles, transforms

        train_tf, eval_tf = transforms(data_config, augment)
        return {name: ImageFiles(s, train_tf if name == "train" else eval_tf) for name, s in self.samples.items()}

    def fingerprint(self) -> dict:
        rel = sorted(f"{split}:{os.path.relpath(p, self.root)}" for split in ("train", "val") for p, _ in self.samples[split])
        return {"source": "imagefolder", "root": str(self.root.resolve()), "classes": self.classes,
                "counts": {n: len(s) for n, s in self.samples.items()}, "files": files_hash(rel)}


def split_samples(samples, fractions=(0.7, 0.1, 0.2), seed=0):
    """Deterministic stratified split of one folder into train/val/test."""
    from sklearn.model_selection import train_test_split

    labels = [lab for _, lab in samples]
    idx = np.arange(len(samples))
    try:
        rest, test = train_test_split(idx, test_size=fractions[2], stratify=labels, random_state=seed)
        val_of_rest = fractions[1] / (fractions[0] + fractions[1])
        train, val = train_test_split(rest, test_size=val_of_rest, stratify=[labels[i] for i in rest], random_state=seed)
    except ValueError:
        raise UserError("data folder is too small to split into train/val/test: need >= 10 images per class") from None
    return [[samples[i] for i in sorted(part)] for part in (train, val, test)]


# --------------------------------------------------------------------------- the registry

DATA_SOURCES = {EMBEDDED: DigitsSource}  # scheme -> source class; anything else is a folder


def open_source(data, strict: bool = False):
    """``None`` / ``digits`` / ``digits:TASK`` / ``SCHEME:ARG`` of the registry, else a folder."""
    if data is None or data == "":
        return DigitsSource()
    if not isinstance(data, (str, os.PathLike)):
        return data  # a source already
    text = str(data)
    scheme, _, arg = text.partition(":")
    if scheme in DATA_SOURCES:
        return DATA_SOURCES[scheme](arg or None)
    return ImageFolderSource(text, strict=strict)


# --------------------------------------------------------------------------- the DataModule


class LearngeneDataModule(L.LightningDataModule):
    """Any data source behind one LightningDataModule.

    ``data_config`` is timm's ``resolve_data_config`` of the model that will see the images
    (input size, interpolation, mean/std, crop); it may also be set later with
    `for_model`. ``train_fraction`` < 1 keeps a fixed stratified subset of the training
    split. Paths are checked when the module is made, so bad input fails before any training.
    """

    def __init__(self, data=None, data_config: dict | None = None, batch_size: int = 64,
                 eval_batch_size: int | None = None, num_workers: int | None = None, train_fraction: float = 1.0,
                 augment: bool = True, seed: int = 0, strict: bool = False):
        super().__init__()
        if batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        if not 0 < train_fraction <= 1:
            raise UserError(f"train fraction must be in (0, 1], got {train_fraction}")
        if num_workers is not None and num_workers < 0:
            raise UserError(f"--workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.train_fraction = train_fraction
        self.augment = augment
        self.seed = seed
        self.source = open_source(data, strict)
        self.num_workers = self.source.default_workers if num_workers is None else num_workers
        self.data_config = self.source.config_for(data_config) if data_config or self.source.embedded else None
        self._sets: dict[str, Dataset] | None = None

    # what the rest of learngene reads
    name = property(lambda self: self.source.name)
    classes = property(lambda self: self.source.classes)
    embedded = property(lambda self: self.source.embedded)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def img_size(self) -> int:
        return int(self.data_config["input_size"][-1])

    def for_model(self, model_config: dict) -> "LearngeneDataModule":
        """Read the images as the model with this timm data config expects them."""
        self.data_config = self.source.config_for(model_config)
        self._sets = None
        return self

    def fingerprint(self) -> dict:
        """What the data is (classes in order, counts per split, a hash of the file list):
        manifests record it, and a pool refuses data whose classes differ."""
        return self.source.fingerprint()

    def setup(self, stage: str | None = None) -> None:
        if self._sets is not None:
            return
        if not self.data_config:
            raise ValueError("set data_config (the reading model's timm data config) before setup()")
        self._sets = self.source.datasets(self.data_config, self.augment)
        if self.train_fraction < 1:
            self._sets["train"] = self._subset(self._sets["train"])

    def _subset(self, ds: Dataset) -> Dataset:
        from sklearn.model_selection import train_test_split

        labels = ds.labels() if hasattr(ds, "labels") else [lab for _, lab in ds.samples]
        keep, _ = train_test_split(np.arange(len(ds)), train_size=self.train_fraction, stratify=labels, random_state=self.seed)
        return torch.utils.data.Subset(ds, sorted(keep.tolist()))

    def dataset(self, split: str) -> Dataset:
        self.setup()
        return self._sets[split]

    def _loader(self, split: str, shuffle: bool, eval_batch: bool = False) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.dataset(split), batch_size=self.eval_batch_size if eval_batch or split != "train" else self.batch_size,
                          shuffle=shuffle, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available(), drop_last=False, generator=g if shuffle else None)

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


def sample_images(dm: LearngeneDataModule, n: int = 256, split: str = "train") -> torch.Tensor:
    """``n`` images of a split spread evenly over it, as the model reads them: what
    least-squares stitch init fits on and what static int8 quantisation calibrates on."""
    ds = dm.dataset(split)
    idx = torch.linspace(0, len(ds) - 1, min(n, len(ds))).long().tolist()
    return torch.stack([ds[i][0] for i in idx])


def data_for(data, model_config: dict | None, **kwargs) -> LearngeneDataModule:
    """The one rule for "data for this model": an ImageFolder through the model's own timm
    transforms, the embedded digits at the model's input size with their own statistics."""
    return LearngeneDataModule(data, **kwargs).for_model(model_config) if model_config else LearngeneDataModule(data, **kwargs)


def same_classes(recorded, dm: LearngeneDataModule, what: str) -> None:
    """Refuse data whose classes differ from those ``what`` was made with (a fingerprint it
    recorded); warn when the classes match but the files do not."""
    from learngene.core.images import warn

    if not isinstance(recorded, dict):
        return  # recorded before fingerprints held classes: nothing to compare
    have = dm.fingerprint()
    if recorded.get("classes") != have["classes"]:
        rec = recorded.get("classes") or []
        raise UserError(f"data {dm.name} has classes {_short(have['classes'])} but {what} was made with "
                        f"{_short(rec)} ({len(rec)} classes): give the data it was made with")
    if (recorded.get("files"), recorded.get("counts")) != (have["files"], have["counts"]):
        warn(f"data {dm.name} has the classes {what} was made with but other files "
             f"({json.dumps(have['counts'])} vs {json.dumps(recorded.get('counts'))})")


def _short(names: list) -> str:
    return "[" + ", ".join(map(str, names[:4])) + (", ...]" if len(names) > 4 else "]")
