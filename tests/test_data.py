import pytest
import torch
from helpers import make_image_folder

from learngene.core.data import LearngeneDataModule, digits_data_config, digits_splits
from learngene.core.errors import UserError

EVAL_CFG = {
    "input_size": (3, 16, 16),
    "interpolation": "bilinear",
    "mean": (0.5,) * 3,
    "std": (0.5,) * 3,
    "crop_pct": 1.0,
}


def test_digits_split_is_fixed_stratified_and_disjoint():
    a, b = digits_splits(), digits_splits()
    assert [len(a[s]) for s in ("train", "val", "test")] == [1167, 180, 450]
    for s in a:
        assert torch.equal(a[s].images, b[s].images) and torch.equal(a[s].labels, b[s].labels)
        assert a[s].images.shape[1:] == (3, 16, 16)
        assert 0 <= a[s].images.min() and a[s].images.max() <= 1
        # stratified: every class present in roughly the same share
        counts = torch.bincount(a[s].labels, minlength=10).float()
        assert counts.min() / counts.max() > 0.85
    # disjoint: no test image equals a training image row-for-row by index bookkeeping
    total = sum(len(a[s]) for s in a)
    assert total == 1797


def test_digits_datamodule_normalises_and_batches():
    dm = LearngeneDataModule(batch_size=32)
    assert dm.num_classes == 10 and dm.img_size == 16
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 3, 16, 16) and y.shape == (32,)
    xt = torch.cat([b[0] for b in dm.test_dataloader()])
    cfg = digits_data_config()
    assert abs(xt.mean().item()) < 0.2, "normalised with the training mean"
    assert cfg["mean"][0] == pytest.approx(digits_splits()["train"].images.mean().item())


def test_train_fraction_keeps_a_fixed_stratified_subset():
    a = LearngeneDataModule(train_fraction=0.2, seed=1).dataset("train")
    b = LearngeneDataModule(train_fraction=0.2, seed=1).dataset("train")
    assert len(a) == round(0.2 * 1167) and a.indices == b.indices


def test_image_folder_single_folder_split(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=20)
    dm = LearngeneDataModule(root, data_config=EVAL_CFG, batch_size=4, num_workers=0)
    assert dm.classes == ["cat", "dog"]
    sizes = [len(dm.dataset(s)) for s in ("train", "val", "test")]
    assert sum(sizes) == 40 and sizes[2] == 8
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape[1:] == (3, 16, 16)
    again = LearngeneDataModule(root, data_config=EVAL_CFG, num_workers=0)
    assert again.source.samples == dm.source.samples, "split is deterministic"


def test_image_folder_train_val_layout(tmp_path):
    make_image_folder(tmp_path / "d" / "train", per_class=4)
    make_image_folder(tmp_path / "d" / "val", per_class=4, seed=1)
    dm = LearngeneDataModule(tmp_path / "d", data_config=EVAL_CFG, num_workers=0)
    # no test/: a fixed stratified half of val/ is the test split, never the validation images themselves
    assert len(dm.dataset("train")) == 8 and len(dm.dataset("val")) == 4 and len(dm.dataset("test")) == 4
    val, test = ({p for p, _ in dm.source.samples[s]} for s in ("val", "test"))
    assert not val & test and "half of val" in dm.fingerprint()["test_from"]
    # a test/ folder is taken as it is
    make_image_folder(tmp_path / "d" / "test", per_class=3, seed=2)
    dm = LearngeneDataModule(tmp_path / "d", data_config=EVAL_CFG, num_workers=0)
    assert len(dm.dataset("val")) == 8 and len(dm.dataset("test")) == 6 and dm.fingerprint()["test_from"] == "test/"


def test_small_inputs_are_held_in_memory_and_flipped_only_when_the_classes_allow(tmp_path):
    import numpy as np
    from PIL import Image

    # left-pointing vs right-pointing arrows: a flip turns one class into the other
    for split, n in (("train", 12), ("val", 6)):
        for c, flip in (("left", False), ("right", True)):
            d = tmp_path / "arrows" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                a = np.zeros((20, 20), np.uint8)
                a[8 + i % 3 : 12 + i % 3, 2:16] = 255
                a[4:16, 2:5] = 255  # the arrow's head on the left
                Image.fromarray(a[:, ::-1] if flip else a).save(d / f"{i}.png")
    dm = LearngeneDataModule(tmp_path / "arrows", data_config=EVAL_CFG, batch_size=4)
    ds = dm.dataset("train")
    assert dm.num_workers == 0 and type(ds).__name__ == "TensorImages" and not ds.flip
    x, _ = ds[0]
    assert x.shape == (3, 16, 16)


def _flat_folder(path):
    path.mkdir()
    (path / "a.png").write_bytes(b"x")
    return path


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "is empty"),
        (lambda p: _flat_folder(p / "flat"), "no class subfolders"),
        (lambda p: make_image_folder(p / "one", classes=("only",)), "at least 2 classes"),
        (lambda p: (p / "noimg" / "a").mkdir(parents=True) or (p / "noimg" / "b").mkdir() or p / "noimg", "no images"),
    ],
)
def test_bad_data_paths_are_one_line_errors(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(UserError, match=expected) as e:
        LearngeneDataModule(path, data_config=EVAL_CFG)
    assert "\n" not in str(e.value)


def test_unreadable_image_is_skipped_with_a_count_or_refused_when_strict(tmp_path, capfd):
    root = make_image_folder(tmp_path / "imgs")
    bad = root / "dog" / "broken.png"
    bad.write_bytes(b"not a png at all")
    dm = LearngeneDataModule(root, data_config=EVAL_CFG)
    assert "skipped 1 unreadable image(s), first" in capfd.readouterr().err
    assert all(path != str(bad) for split in dm.source.samples.values() for path, _ in split)
    with pytest.raises(UserError, match="unreadable image .*broken.png"):
        LearngeneDataModule(root, data_config=EVAL_CFG, strict=True)


def test_randaugment_draws_every_op_and_level_without_error(tmp_path):
    """The ImageFolder training transform is DeiT's RandAugment (rand-m9-mstd0.5-inc1). Its
    magnitude noise reaches the level where PosterizeIncreasing keeps 0 bits, which Pillow 13
    refuses: every op at every level (0..10 by 0.5, the clamp's range) and the composed
    transform over many seeds must run on every image mode users have."""
    import copy
    import random

    from PIL import Image

    root = make_image_folder(tmp_path / "imgs", per_class=12)
    # from 64 px up (below it a folder is held in memory and shifted / flipped instead)
    dm = LearngeneDataModule(
        root,
        data_config={
            "input_size": (3, 64, 64),
            "interpolation": "bilinear",
            "mean": (0.5,) * 3,
            "std": (0.5,) * 3,
            "crop_pct": 1.0,
            "crop_mode": "center",
        },
        num_workers=0,
    )
    tf = dm.dataset("train").transform
    ra = next(t for t in tf.transforms if type(t).__name__ == "RandAugment")
    assert any(op.name.startswith("Posterize") for op in ra.ops)
    img = Image.open(dm.dataset("train").samples[0][0]).convert("RGB")
    for op in ra.ops:
        for level in [i / 2 for i in range(21)]:
            fixed = copy.copy(op)
            fixed.prob, fixed.magnitude, fixed.magnitude_std = 1.0, level, 0
            out = fixed(img)
            assert out.size == img.size and out.mode == "RGB", (op.name, level)
    # posterize at 0 bits is what Pillow < 13 gave: a black image
    zero = copy.copy(next(op for op in ra.ops if op.name == "PosterizeIncreasing"))
    zero.prob, zero.magnitude, zero.magnitude_std = 1.0, 10, 0
    assert max(zero(img).getextrema()[0]) == 0
    for seed in range(400):  # the composed transform, as a DataLoader worker draws it
        random.seed(seed)
        x = tf(img)
        assert x.shape == (3, 64, 64)
