"""Image files as users have them: scanning a folder of class folders, checking and reading each
file (every mode to RGB, the same way in training and evaluation), and bad files skipped with
a count or refused with ``strict`` (the rules: `learngene.core.folders`)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from learngene.core.errors import UserError, warn

# what counts as an image file (by extension, case-insensitive)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")

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
