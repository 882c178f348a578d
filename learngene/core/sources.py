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
- `ImageFolderSource`: ``DIR/train`` + ``DIR/val``, or one folder of class folders split
  70/10/20; read with timm's transforms.

Image folders as users have them (the second half of this module): scanning, reading, bad
files and timm's transforms.
reading (every image mode becomes RGB the same way in training and evaluation), bad files
(skipped with a count, or refused up front with ``strict``), and timm's transforms.

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

import functools
import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from learngene.core.errors import UserError, warn
from learngene.core.limits import cores

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


def digits_data_config(img_size: int = DIGITS_IMG_SIZE) -> dict:
    """timm-style data config of the embedded data (mean/std of its training split)."""
    train = digits_splits(img_size)["train"].images
    mean, std = float(train.mean()), float(train.std())
    return {
        "input_size": (3, img_size, img_size),
        "interpolation": "bilinear",
        "mean": (mean,) * 3,
        "std": (std,) * 3,
        "crop_pct": 1.0,
        "crop_mode": "center",
    }


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
        train = animal_splits(img)["train"].images
        mean, std = float(train.mean()), float(train.std())
        return {
            "input_size": (3, img, img),
            "interpolation": "bilinear",
            "mean": (mean,) * 3,
            "std": (std,) * 3,
            "crop_pct": 1.0,
            "crop_mode": "center",
        }

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


IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")

# DeiT's training augmentation (timm's RandAugment, magnitude 9 +- 0.5, increasing severity).
DEIT_RAND_AUGMENT = "rand-m9-mstd0.5-inc1"


# --------------------------------------------------------------------------- scanning


def _walk_once(top: Path):
    """os.walk following symlinks, never entering a real folder twice (a link to '.' or to
    a parent would otherwise repeat files, or loop until the OS refuses)."""
    seen = set()
    for dirpath, dirnames, files in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield dirpath, sorted(f for f in files if not f.startswith("."))


def scan_image_folder(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, [(path, label)]) of a folder of class folders, with one-line errors."""
    if not root.exists():
        raise UserError(f"data path does not exist: {root}")
    if not root.is_dir():
        raise UserError(f"data path is not a folder: {root}")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        if any(root.iterdir()):
            raise UserError(f"data folder has no class subfolders (expected ROOT/<class>/<image>): {root}")
        raise UserError(f"data folder is empty: {root}")
    names = [d.name for d in dirs]
    if classes is not None and names != classes:
        missing = sorted(set(classes) - set(names))
        extra = sorted(set(names) - set(classes))
        what = (
            f"lacks class {missing[0]!r}"
            if missing
            else f"has class {extra[0]!r} that train/ lacks"
            if extra
            else "orders its classes differently"
        )
        raise UserError(f"data folder {root} {what}: its classes must be the training classes")
    samples = []
    for label, d in enumerate(dirs):
        found = [
            (os.path.join(dp, f), label)
            for dp, files in _walk_once(d)
            for f in files
            if f.lower().endswith(IMG_EXTENSIONS)
        ]
        if not found:
            raise UserError(f"class folder {d} has no images ({', '.join(IMG_EXTENSIONS)}): remove it or add images")
        samples += found
    if len(dirs) < 2:
        raise UserError(f"data folder needs at least 2 classes with images, found {len(dirs)}: {root}")
    return names, samples


def check_images(samples: list[tuple[str, int]], strict: bool = False, limit: int = 20000, seed: int = 0):
    """The readable samples. Default: each header is opened (cheap; past ``limit`` files a
    random sample), failures are skipped with one warning. ``strict``: every image is
    decoded in full and the first failure is refused, naming the file."""
    from PIL import Image

    if strict:
        for path, _ in samples:
            try:
                read_rgb(path)
            except Exception as e:
                raise UserError(f"unreadable image {path}: {type(e).__name__} (--strict)") from None
        return samples
    todo = samples if len(samples) <= limit else random.Random(seed).sample(samples, limit)
    bad = set()
    for path, _ in todo:
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception:  # PIL raises many types for bad files
            bad.add(path)
    if bad:
        first = sorted(bad)[0]
        warn(f"skipped {len(bad)} unreadable image(s), first {first} (pass --strict to refuse them instead)")
    return [s for s in samples if s[0] not in bad]


# --------------------------------------------------------------------------- reading


def to_rgb(im):
    """Any PIL image as 8-bit RGB, the same way for every split (see the module's rules)."""
    import numpy as np
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if im.mode.startswith("I;16") or a.max() <= 65535 else float(a.max())
        im = Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        scale = 255.0 if a.size and np.nanmax(a) <= 1.0 else 1.0
        im = Image.fromarray(np.clip(np.nan_to_num(a) * scale + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        rgba = np.asarray(im, dtype=np.float64)
        alpha = rgba[..., 3] / 255.0
        luma = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
        light = alpha.sum() > 0 and (luma * alpha).sum() / alpha.sum() > 127.5
        shade = 0 if light else 255
        background = Image.new("RGBA", im.size, (shade, shade, shade, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def read_rgb(path: str):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return to_rgb(im)


class ImageFiles(Dataset):
    """(transformed image, label) of a list of files; a file that fails to decode is
    replaced by the next readable one of the list, with a warning naming it."""

    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        for step in range(min(len(self.samples), 50)):
            path, label = self.samples[(i + step) % len(self.samples)]
            try:
                img = read_rgb(path)
            except Exception as e:
                warn(f"unreadable image {path} ({type(e).__name__}): used the next image instead")
                continue
            return self.transform(img), label
        raise UserError(f"no readable image near {self.samples[i][0]}: the folder's images are broken")


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
