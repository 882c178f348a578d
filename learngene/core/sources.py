"""Data sources: where the images come from (the registry that names them is
`learngene.core.data.DATA_SOURCES`). Each source has the same small interface: ``name``,
``classes``, ``embedded``, ``default_workers``, ``config_for(model_config)``,
``datasets(data_config, augment)`` and ``fingerprint()``.

- `DigitsSource`: scikit-learn's bundled 1,797 real handwritten digits (8x8, 10 classes),
  upsampled bilinearly to the reading model's input size as RGB; a fixed stratified split;
  in memory. ``digits:TASK`` is a new task made of the same images (``digits:rot90``).
- `AnimalsSource`: 28x28 animal silhouettes in 10 classes (the animal-mnist package), in
  memory the same way: the second testbed, where model size buys accuracy (3,000 training
  images, 800 val, 2,000 test).
- `ImageFolderSource`: ``DIR/train`` + ``DIR/val``, or one folder of class folders split
  70/10/20; read with timm's transforms (`learngene.core.images` holds the file rules).
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from learngene.core.errors import UserError
from learngene.core.limits import cores

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

    def count(self, split: str) -> int:
        """Images in a split (known before any image is read)."""
        return self.fingerprint()["counts"][split]


# --------------------------------------------------------------------------- animal silhouettes

ANIMALS = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
ANIMALS_TEST_FRACTION = 0.2  # 8,000 train (10% of them val) / 2,000 test, stratified, seed 0
# Of the 7,200 training images a fixed stratified 300 per class are the training split: with
# all of them one epoch of the embedded ancestor costs 19 s on 2 cores, and the method
# comparison (a pool, two SN-Net anchors, four zoos, three seeds) would not fit a session.
# At 300 per class the ancestor still beats the narrow auxiliary trained alone by ~9 points.
ANIMALS_TRAIN_PER_CLASS = 300


class _NumpyOnly:
    """An unpickler that admits numpy arrays and nothing else: the package's data is a pickle,
    and a pickle can run any code it names."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    @classmethod
    def load(cls, path: Path):
        import gzip
        import pickle

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) not in cls.ALLOWED:
                    raise UserError(f"{path} holds {module}.{name}, not only numpy arrays: refusing to unpickle it")
                if name == "_reconstruct":
                    from numpy._core.multiarray import _reconstruct

                    return _reconstruct
                return getattr(np, name)

        with gzip.open(path, "rb") as f:
            return Unpickler(f).load()


@functools.lru_cache(maxsize=1)
def animal_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (10000, 28, 28) uint8, labels (10000,)) of the animal-mnist package, which ships
    them inside its wheel (nothing is downloaded). Its module is not imported: it needs TensorFlow."""
    import importlib.util

    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the animals testbed reads the animal-mnist package: pip install --no-deps animal-mnist "
                        "(its TensorFlow dependency is not needed)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal_MNIST"
    x = np.asarray(_NumpyOnly.load(folder / "animal_data_version_3.gz"), dtype=np.uint8)
    y = np.asarray(_NumpyOnly.load(folder / "animal_label_version_3.gz")).astype(np.int64)
    if x.shape[1:] != (28, 28) or len(x) != len(y) or set(np.unique(y)) != set(range(10)):
        raise UserError(f"{folder}: not the 10,000 28x28 images in 10 classes this testbed expects")
    return x, y


@functools.lru_cache(maxsize=4)
def animal_splits(img_size: int) -> dict[str, Split]:
    from sklearn.model_selection import train_test_split

    x, y = animal_arrays()
    t = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)
    t = F.interpolate(t, size=(img_size, img_size), mode="bilinear", align_corners=False, antialias=True)
    t = t.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=ANIMALS_TEST_FRACTION, stratify=y, random_state=0)
    train, val = train_test_split(rest, test_size=0.1, stratify=y[rest], random_state=0)
    train, _ = train_test_split(train, train_size=ANIMALS_TRAIN_PER_CLASS * 10, stratify=y[train], random_state=0)
    yt = torch.from_numpy(y)
    return {n: Split(t[torch.from_numpy(np.sort(part))], yt[torch.from_numpy(np.sort(part))])
            for n, part in (("train", train), ("val", val), ("test", test))}


class AnimalsSource(DigitsSource):
    """The second embedded testbed: 28x28 animal silhouettes in 10 classes (the animal-mnist
    package; 3,000 train / 800 val / 2,000 test of its 10,000), in memory like the digits, at
    the reading model's input size. Harder than the digits, so model size buys accuracy there."""

    def __init__(self, task: str | None = None):
        if task is not None:
            raise UserError(f"the animals testbed has no task {task!r}")
        self.task, self.name, self.classes = None, "animals", list(ANIMALS)

    def config_for(self, model_config: dict | None) -> dict:
        img = int(model_config["input_size"][-1]) if model_config else DIGITS_IMG_SIZE
        train = animal_splits(img)["train"].images
        mean, std = float(train.mean()), float(train.std())
        return {"input_size": (3, img, img), "interpolation": "bilinear", "mean": (mean,) * 3, "std": (std,) * 3,
                "crop_pct": 1.0, "crop_mode": "center"}

    def datasets(self, data_config: dict, augment: bool) -> dict[str, Dataset]:
        splits = animal_splits(int(data_config["input_size"][-1]))
        mean, std = data_config["mean"], data_config["std"]
        return {name: TensorImages(s, mean, std, train=(name == "train" and augment)) for name, s in splits.items()}

    def fingerprint(self) -> dict:
        counts = {n: len(s) for n, s in animal_splits(DIGITS_IMG_SIZE).items()}
        return {"source": "animals", "classes": self.classes, "counts": counts, "files": f"animal-mnist-0.4-split0-train{ANIMALS_TRAIN_PER_CLASS}"}


# --------------------------------------------------------------------------- ImageFolder


class ImageFolderSource:
    """``ROOT/train`` + ``ROOT/val``, or one folder of class folders split 70/10/20. The
    folder is scanned (and every header checked) when the source is made, so bad input
    fails before any model is loaded."""

    embedded = False
    # decoding and augmenting files wants worker processes; half the cores, so that with
    # torch's threads on the other half (core_plan) the two never exceed the cores
    default_workers = min(8, cores() // 2)

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

    def count(self, split: str) -> int:
        return len(self.samples[split])

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
