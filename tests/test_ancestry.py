import json

import pytest
import torch

from learngene.core.errors import UserError
from learngene.core.localdir import load_state_file, save_local_dir
from learngene.models.embedded import train_embedded
from learngene.models.loading import load_timm
from learngene.models.refs import load_model


@pytest.fixture(scope="module")
def deit_base_file(tmp_path_factory):
    """A random-init deit_base_patch16_224 saved by the test: real DeiT-Base shapes, no training."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    m = timm.create_model("deit_base_patch16_224")
    path = tmp_path_factory.mktemp("ckpt") / "deit_base.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    return path, m.state_dict()


def test_deit_base_checkpoint_loads_real_shapes(deit_base_file):
    path, sd = deit_base_file
    anc = load_model("deit_base_patch16_224", checkpoint=path)
    assert anc.param_count == 86_567_656  # DeiT-Base: 86.6M
    assert round(anc.param_count / 1e6, 1) == 86.6
    assert anc.source == f"checkpoint:{path}"
    torch.testing.assert_close(anc.model.state_dict()["blocks.11.mlp.fc2.weight"], sd["blocks.11.mlp.fc2.weight"])
    assert anc.data_config["input_size"] == (3, 224, 224)
    s = anc.view.shape
    assert (s.embed_dim, s.depth, s.num_heads) == (768, 12, 12)


def test_torch_checkpoint_is_loaded_weights_only(tmp_path, tiny_vit):
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in tiny_vit.state_dict().items()}}, path)
    sd = load_state_file(path)
    assert set(sd) == set(tiny_vit.state_dict())

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, bad)
    with pytest.raises(UserError, match="cannot read checkpoint .*evil.pth"):
        load_state_file(bad)


def test_shape_mismatch_is_refused(tmp_path, tiny_vit):
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_vit.state_dict().items()}, str(path))
    with pytest.raises(UserError, match="does not fit deit_small_patch16_224: .*shape mismatches"):
        load_model("deit_small_patch16_224", checkpoint=path)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(ref="no_such_model_xyz"), "unknown timm model"),
        (dict(ref="resnet18"), "not a ViT"),
        (dict(ref="deit_tiny_patch16_224", checkpoint="/nope/w.safetensors"), "checkpoint not found"),
        (dict(ref="local-dir:/nope"), "no config.json"),
    ],
)
def test_bad_ancestors(kwargs, expected):
    with pytest.raises(UserError, match=expected):
        load_model(**kwargs)


def test_missing_pretrained_weights_fail_fast_offline(monkeypatch, tmp_path):
    import time

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    t = time.perf_counter()
    with pytest.raises(UserError, match="not in timm's cache"):
        load_model("deit_tiny_patch16_224", pretrained=True)
    assert time.perf_counter() - t < 10


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="cannot read checkpoint .*bad.safetensors"):
        load_model("deit_tiny_patch16_224", checkpoint=bad)


def test_local_dir_round_trip_plain_timm(tmp_path, tiny_vit):
    import timm

    args = dict(img_size=16, patch_size=4, embed_dim=32, depth=4, num_heads=2, num_classes=10)
    cfg = {"input_size": [3, 16, 16], "mean": [0.1] * 3, "std": [0.2] * 3, "num_classes": 10, "crop_pct": 1.0}
    folder = save_local_dir(tiny_vit, tmp_path / "m", "deit_tiny_patch16_224", args, cfg)
    plain = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), tiny_vit(x))
    anc = load_timm(f"local-dir:{folder}")
    assert anc.data_config["mean"] == (0.1, 0.1, 0.1)
    assert anc.checksum == load_timm(f"local-dir:{folder}").checksum
    assert not list(tmp_path.glob(".m.*")), "no temp folders left behind"


def test_embedded_ancestor_trains_and_caches(tmp_path):
    folder = tmp_path / "emb"
    anc = train_embedded(folder, progress=False, epochs=1)
    meta = json.loads((folder / "config.json").read_text())["learngene"]
    assert meta["metrics"]["epochs"] == 1 and 0 <= meta["metrics"]["test_top1"] <= 100
    assert anc.name == "embedded" and anc.info()["test_top1"] == meta["metrics"]["test_top1"]
    s = anc.view.shape
    assert (s.embed_dim, s.depth, s.num_heads, s.img_size, s.patch_size) == (128, 12, 4, 16, 4)
    assert 2.3e6 < anc.param_count < 2.5e6
