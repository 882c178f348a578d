import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """Never touch the user's cache: every test session gets its own LEARNGENE_HOME."""
    os.environ["LEARNGENE_HOME"] = str(tmp_path_factory.mktemp("learngene_home"))
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        # a worker per core: one thread each (and in the CLI processes they start), not two
        # workers fighting over every core
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    else:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    yield


@pytest.fixture
def tiny_vit():
    """A small real timm ViT (DeiT architecture), random init, eval mode."""
    import timm

    torch.manual_seed(0)
    return timm.create_model(
        "deit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=4, num_heads=2, num_classes=10
    ).eval()


def make_image_folder(root, classes=("cat", "dog"), per_class=12, size=20, seed=0):
    """Real PNG files on disk in ROOT/<class>/<i>.png."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{i}.png")
    return root
