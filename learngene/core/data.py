"""Data: sources behind one protocol (a registry), one LightningDataModule over any of them,
and one rule for "the data this model reads". The sources themselves are in
`learngene.core.sources`.

Sources (`DATA_SOURCES`, by scheme; a path is an ImageFolder; see `learngene.core.sources`):

- ``digits`` (the embedded default): scikit-learn's bundled 1,797 real handwritten digits
  (8x8, 10 classes), upsampled bilinearly to the reading model's input size (16x16 for
  the embedded models) as RGB; a fixed stratified split; in memory, so a 2-core CPU trains
  on it in seconds per epoch. ``digits:TASK`` is a new task made of the same images
  (``digits:rot90``), for adaptation.
- ``animals``: 10,000 28x28 animal silhouettes in 10 classes (the animal-mnist package,
  installed with --no-deps), in memory the same way: a testbed where model size buys accuracy.
- an ImageFolder: ``DIR/train/<class>/`` and ``DIR/val/<class>/`` (val is also the reported
  test split, as for ImageNet), or one folder of class folders split 70/10/20 (stratified,
  seed 0); read with timm's transforms at the reading model's data config
  (`learngene.core.sources` holds the rules for files as users have them).

A new source is a class with the `DigitsSource` interface and one registry line.
"""

from __future__ import annotations

import json
import os

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from learngene.core.errors import UserError

# the embedded digits, as the rest of learngene reads them from here
from learngene.core.folders import ImageFolderSource  # noqa: F401
from learngene.core.registries import DATA_SOURCES  # scheme -> source class; anything else is a folder
from learngene.core.sources import DigitsSource, digits_data_config, digits_splits  # noqa: F401


def is_embedded(text: str) -> bool:
    """``digits``, ``digits:TASK``, ``animals``: a source of the registry, not a folder."""
    return text.partition(":")[0] in DATA_SOURCES


def open_source(data, strict: bool = False):
    """``None`` / ``digits`` / ``digits:TASK`` / ``SCHEME:ARG`` of the registry, else a folder."""
    if data is None or data == "":
        return DigitsSource()
    if not isinstance(data, (str, os.PathLike)):
        return data  # a source already
    text = str(data)
    if is_embedded(text):
        scheme, _, arg = text.partition(":")
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

    def __init__(
        self,
        data=None,
        data_config: dict | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        train_fraction: float = 1.0,
        augment: bool = True,
        seed: int = 0,
        strict: bool = False,
    ):
        super().__init__()
        from learngene.core import limits

        limits.batch_size(batch_size, "batch size")
        limits.seed(seed)
        if not 0 < train_fraction <= 1:
            raise UserError(f"train fraction must be in (0, 1], got {train_fraction}")
        limits.workers(num_workers)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.train_fraction = train_fraction
        self.augment = augment
        self.seed = seed
        self.source = open_source(data, strict)
        if train_fraction < 1 and hasattr(self.source, "count"):  # refused now, not when training starts
            n, n_classes = self.source.count("train"), len(self.source.classes)
            if int(train_fraction * n) < 2 * n_classes:
                raise UserError(
                    f"train fraction {train_fraction:g} keeps {int(train_fraction * n)} of {n} training "
                    f"images: fewer than 2 per class for {n_classes} classes; raise --fraction"
                )
        self._workers = num_workers
        self.data_config = self.source.config_for(data_config) if data_config or self.source.embedded else None
        self._sets: dict[str, Dataset] | None = None

    # what the rest of learngene reads
    name = property(lambda self: self.source.name)
    classes = property(lambda self: self.source.classes)
    embedded = property(lambda self: self.source.embedded)

    @property
    def num_workers(self) -> int:
        """DataLoader workers: the ones asked for, else the source's for this data config (none
        for images held in memory)."""
        if self._workers is not None:
            return self._workers
        if hasattr(self.source, "workers_for"):
            return self.source.workers_for(self.data_config)
        return self.source.default_workers

    @num_workers.setter
    def num_workers(self, n: int | None) -> None:
        self._workers = n

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def img_size(self) -> int:
        return int(self.data_config["input_size"][-1])

    def for_model(self, model_config: dict) -> LearngeneDataModule:
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
        n_classes, keep_n = len(set(labels)), int(self.train_fraction * len(ds))
        if keep_n < 2 * n_classes:
            raise UserError(
                f"train fraction {self.train_fraction:g} keeps {keep_n} of {len(ds)} training images: "
                f"fewer than 2 per class for {n_classes} classes; raise --fraction"
            )
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


def sample_images(dm: LearngeneDataModule, n: int = 256, split: str = "train") -> torch.Tensor:
    """``n`` images of a split spread evenly over it, as the model reads them: what
    least-squares stitch init fits on and what static int8 quantisation calibrates on."""
    ds = dm.dataset(split)
    idx = torch.linspace(0, len(ds) - 1, min(n, len(ds))).long().tolist()
    return torch.stack([ds[i][0] for i in idx])


def data_for(data, model_config: dict | None, **kwargs) -> LearngeneDataModule:
    """The one rule for "data for this model": an ImageFolder through the model's own timm
    transforms, the embedded digits at the model's input size with their own statistics."""
    return (
        LearngeneDataModule(data, **kwargs).for_model(model_config)
        if model_config
        else LearngeneDataModule(data, **kwargs)
    )


def same_classes(recorded, dm: LearngeneDataModule, what: str) -> None:
    """Refuse data whose classes differ from those ``what`` was made with (a fingerprint it
    recorded); warn when the classes match but the files do not."""
    from learngene.core.errors import warn

    if not isinstance(recorded, dict):
        return  # recorded before fingerprints held classes: nothing to compare
    have = dm.fingerprint()
    if recorded.get("classes") != have["classes"]:
        rec = recorded.get("classes") or []
        raise UserError(
            f"data {dm.name} has classes {_short(have['classes'])} but {what} was made with "
            f"{_short(rec)} ({len(rec)} classes): give the data it was made with"
        )
    if (recorded.get("files"), recorded.get("counts")) != (have["files"], have["counts"]):
        warn(
            f"data {dm.name} has the classes {what} was made with but other files "
            f"({json.dumps(have['counts'])} vs {json.dumps(recorded.get('counts'))})"
        )


def _short(names: list) -> str:
    return "[" + ", ".join(map(str, names[:4])) + (", ...]" if len(names) > 4 else "]")
