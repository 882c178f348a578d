"""Data sources: where the images come from (the registry that names them is
`learngene.core.data.DATA_SOURCES`). Each source has the same small interface: ``name``,
``classes``, ``embedded``, ``default_workers``, ``config_for(model_config)``,
``datasets(data_config, augment)`` and ``fingerprint()``.

- `DigitsSource`: scikit-learn's bundled 1,797 real handwritten digits (8x8, 10 classes),
  upsampled bilinearly to the reading model's input size as RGB; a fixed stratified split;
  in memory. ``digits:TASK`` is a new task made of the same images (``digits:rot90``).
- `AnimalsSource`: 28x28 animal silhouettes in 10 classes (the animal-mnist package), in
  memory the same way: the second testbed, where model size buys accuracy (7,200 training
  images, 800 val, 2,000 test).
- `ImageFolderSource` (`learngene.core.folders`): ``DIR/train`` + ``DIR/val``, or one folder
  of class folders split 70/10/20; read with timm's transforms.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from learngene.core.errors import UserError

DIGITS = "digits"  # the embedded default source

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
    rest, test = train_test_split(
        idx, test_size=DIGITS_TEST_FRACTION, stratify=y.numpy(), random_state=DIGITS_SPLIT_SEED
    )
    val_size = round(DIGITS_VAL_FRACTION * len(y))
    train, val = train_test_split(rest, test_size=val_size, stratify=y.numpy()[rest], random_state=DIGITS_SPLIT_SEED)
    return {
        name: Split(x[torch.from_numpy(np.sort(part))], y[torch.from_numpy(np.sort(part))])
        for name, part in (("train", train), ("val", val), ("test", test))
    }


def gray_config(img_size: int, images: torch.Tensor) -> dict:
    """timm-style data config of in-memory gray images at ``img_size``, normalised by the
    mean / std of ``images`` (a split of them)."""
    mean, std = float(images.mean()), float(images.std())
    return {
        "input_size": (3, img_size, img_size),
        "interpolation": "bilinear",
        "mean": (mean,) * 3,
        "std": (std,) * 3,
        "crop_pct": 1.0,
        "crop_mode": "center",
    }


def digits_data_config(img_size: int = DIGITS_IMG_SIZE) -> dict:
    """timm-style data config of the embedded data (mean/std of its training split)."""
    return gray_config(img_size, digits_splits(img_size)["train"].images)


class TensorImages(Dataset):
    """In-memory images (float in [0, 1], or uint8), normalised on the fly. Training: a random
    shift of up to ``shift`` pixels (zero padding) and, with ``flip``, a horizontal flip half
    the time. The digits are centred, so a +-1 px shift is the augmentation that matters; a
    folder read at a small input size gets the same, scaled to its size."""

    def __init__(
        self, split: Split, mean: Sequence[float], std: Sequence[float], train: bool, shift: int = 1, flip: bool = False
    ):
        self.split = split
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.train, self.shift, self.flip = train, shift, flip

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        x = self.split.images[i]
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if self.train:
            s = self.shift
            if s:
                dx, dy = random.randint(-s, s), random.randint(-s, s)
                x = F.pad(x, (s, s, s, s))[:, s + dy : s + dy + x.shape[1], s + dx : s + dx + x.shape[2]]
            if self.flip and random.random() < 0.5:
                x = x.flip(-1)
        return (x - self.mean) / self.std, int(self.split.labels[i])

    def labels(self) -> list[int]:
        return self.split.labels.tolist()


class DigitsSource:
    """The embedded digits, or a task made of them (``digits:rot90``)."""

    embedded = True
    default_workers = 0

    def __init__(self, task: str | None = None):
        if task is not None and task not in DIGITS_TASKS:
            raise UserError(
                f"unknown embedded task {DIGITS}:{task} (known: {', '.join(DIGITS + ':' + t for t in DIGITS_TASKS)})"
            )
        self.task = task
        self.name = DIGITS if task is None else f"{DIGITS}:{task}"
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
        return {
            "source": self.name,
            "classes": self.classes,
            "counts": counts,
            "files": f"sklearn-digits-split{DIGITS_SPLIT_SEED}",
        }

    def count(self, split: str) -> int:
        """Images in a split (known before any image is read)."""
        return self.fingerprint()["counts"][split]


# --------------------------------------------------------------------------- animal silhouettes

ANIMALS = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
ANIMALS_TEST_FRACTION = 0.2  # 8,000 train (10% of them val) / 2,000 test, stratified, seed 0
# All 7,200 training images (``ANIMALS_TRAIN_PER_CLASS = None``; an int keeps that many per
# class). At 3,000 the ancestor and the narrow architecture were close (the narrow one trained
# to its plateau beat the ancestor the pool inherits); on all 7,200 the ancestor trained to its
# plateau reached 95.5% best validation top1 (seed 0): the testbed where size buys accuracy.
# Its plateau ancestor is trained once and shipped (benchmarks/ancestor.py --ship).
ANIMALS_TRAIN_PER_CLASS = None


class _NumpyOnly:
    """An unpickler that admits numpy arrays and nothing else: the package's data is a pickle,
    and a pickle can run any code it names."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

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
        raise UserError(
            "the animals testbed reads the animal-mnist package: pip install --no-deps animal-mnist "
            "(its TensorFlow dependency is not needed)"
        )
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
    if ANIMALS_TRAIN_PER_CLASS is not None:
        train, _ = train_test_split(train, train_size=ANIMALS_TRAIN_PER_CLASS * 10, stratify=y[train], random_state=0)
    yt = torch.from_numpy(y)
    return {
        n: Split(t[torch.from_numpy(np.sort(part))], yt[torch.from_numpy(np.sort(part))])
        for n, part in (("train", train), ("val", val), ("test", test))
    }


class AnimalsSource(DigitsSource):
    """The second embedded testbed: 28x28 animal silhouettes in 10 classes (the animal-mnist
    package; 7,200 train / 800 val / 2,000 test of its 10,000), in memory like the digits, at
    the reading model's input size. Harder than the digits, so model size buys accuracy there."""

    def __init__(self, task: str | None = None):
        if task is not None:
            raise UserError(f"the animals testbed has no task {task!r}")
        self.task, self.name, self.classes = None, "animals", list(ANIMALS)

    def config_for(self, model_config: dict | None) -> dict:
        img = int(model_config["input_size"][-1]) if model_config else DIGITS_IMG_SIZE
        return gray_config(img, animal_splits(img)["train"].images)

    def datasets(self, data_config: dict, augment: bool) -> dict[str, Dataset]:
        splits = animal_splits(int(data_config["input_size"][-1]))
        mean, std = data_config["mean"], data_config["std"]
        return {name: TensorImages(s, mean, std, train=(name == "train" and augment)) for name, s in splits.items()}

    def fingerprint(self) -> dict:
        counts = {n: len(s) for n, s in animal_splits(DIGITS_IMG_SIZE).items()}
        return {
            "source": "animals",
            "classes": self.classes,
            "counts": counts,
            "files": f"animal-mnist-0.4-split0-train{ANIMALS_TRAIN_PER_CLASS or 'all'}",
        }
