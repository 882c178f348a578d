"""build-pool on real (tiny) models and real files: manifest round trip, checksums, resume,
bad input, and the DeiT-Base recipe's mechanics."""

import json

import pytest
import torch

from learngene.core.data import digits_data_config
from learngene.core.errors import UserError
from learngene.models.loading import LoadedModel, load_timm
from learngene.pool import Pool, build_pool, load_recipe
from learngene.pool.recipe import recipe_from_dict

TINY_RECIPE = {
    "name": "tiny",
    "auxiliary": {
        "narrow": {"embed_dim": 16, "num_heads": 2, "depth": 2, "positions": "front,end", "epochs": 1, "lr": 1e-3},
        "wide": {"embed_dim": 32, "num_heads": 2, "depth": 2, "positions": "end", "epochs": 2, "lr": 1e-3},
    },
    "distill": {"batch_size": 128},
}


@pytest.fixture(scope="module")
def digits_ancestor():
    """A small random-init ViT shaped for the embedded digits (no training: mechanics only)."""
    import timm

    torch.manual_seed(0)
    m = timm.create_model(
        "deit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=4, num_heads=2, num_classes=10
    )
    return LoadedModel(model=m.eval(), name="test-vit", source="test-fixture", data_config=digits_data_config())


def recipe(**distill):
    d = json.loads(json.dumps(TINY_RECIPE))
    d["distill"].update(distill)
    return recipe_from_dict(d)


@pytest.fixture(scope="module")
def built(tmp_path_factory, digits_ancestor):
    out = tmp_path_factory.mktemp("pools") / "tiny"
    return build_pool(recipe(), out=out, ancestor=digits_ancestor, trainer_args=_quiet())


def _quiet():
    from learngene.core.training import TrainerArgs

    return TrainerArgs(progress=False, accelerator="cpu")


def test_manifest_round_trip(built, digits_ancestor):
    pool = Pool.open(built.path)
    m = pool.manifest
    assert m["format"] == "learngene-pool" and m["version"] == 1
    assert m["ancestor"]["sha256"] == digits_ancestor.checksum
    assert [e["id"] for e in pool.instances] == ["narrow.b0", "narrow.b1", "wide.b0", "wide.b1"]
    e = pool.instances[0]
    assert (e["source"], e["width"], e["heads"], e["block"]) == ("narrow", 16, 2, 0)
    assert m["recipe"]["auxiliary"]["wide"]["epochs"] == 2
    assert set(m["auxiliary"]["narrow"]["metrics"]) >= {"test_top1", "val_top1", "steps", "seconds"}
    assert m["auxiliary"]["narrow"]["pairs"] == [[0, 0], [2, 0], [3, 1]]  # 1/3, 2/3, end of 4 and of 2 blocks
    # maps: one trained W per distilled position, ancestor width -> student width
    maps = pool.component("narrow", "maps")
    assert maps["W.0.weight"].shape == (16, 32) and sorted(maps) == [
        f"W.{i}.{k}" for i in range(3) for k in ("bias", "weight")
    ]
    # instances + components rebuild the auxiliary model exactly
    model = pool.aux_model("wide")
    x = torch.randn(2, 3, 16, 16)
    acc = m["auxiliary"]["wide"]["metrics"]["test_top1"]
    assert 0 <= acc <= 100
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    # stored parameters are the sum of the auxiliary models plus the maps
    aux_params = sum(a["params"] for a in m["auxiliary"].values())
    map_params = sum(c["params"] for c in m["components"] if c["kind"] == "maps")
    assert pool.stored_params() == aux_params + map_params
    assert not list(built.path.parent.glob(".tiny*")), "no staging folder left behind"


def test_checksum_refusal_names_the_file(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built.path, copy)
    victim = copy / built.instances[1]["file"]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"fails its checksum.*{victim.name}"):
        Pool.open(copy)
    victim.unlink()
    with pytest.raises(UserError, match=f"missing.*{victim.name}"):
        Pool.open(copy)


def test_existing_pool_is_not_overwritten(built, digits_ancestor):
    before = (built.path / "pool.json").read_text()
    with pytest.raises(UserError, match="pool exists"):
        build_pool(recipe(), out=built.path, ancestor=digits_ancestor, trainer_args=_quiet())
    assert (built.path / "pool.json").read_text() == before


class Boom(Exception):
    pass


def test_resume_after_interruption_keeps_finished_models(tmp_path, digits_ancestor):
    import lightning as L

    class InterruptWide(L.Callback):
        """Dies at the start of the wide model's second epoch, after its first checkpoint."""

        def on_train_epoch_start(self, trainer, module):
            if module.spec.name == "wide" and trainer.current_epoch == 1:
                raise Boom()

    class Record(L.Callback):
        def __init__(self):
            self.starts = []

        def on_train_epoch_start(self, trainer, module):
            self.starts.append((module.spec.name, trainer.current_epoch))

    out = tmp_path / "p"
    with pytest.raises(Boom):
        build_pool(recipe(), out=out, ancestor=digits_ancestor, trainer_args=_quiet(), callbacks=[InterruptWide()])
    stage = tmp_path / ".p.partial"
    assert not out.exists() and (stage / "narrow.done.json").is_file()
    narrow_sha = json.loads((stage / "narrow.done.json").read_text())["instances"][0]["sha256"]
    assert (stage / "checkpoints" / "wide" / "last.ckpt").is_file()

    # another recipe cannot take over the interrupted build (it would mix two recipes)
    with pytest.raises(UserError, match="another recipe"):
        build_pool(recipe(alpha=0.3), out=out, ancestor=digits_ancestor, trainer_args=_quiet())
    # a plain rerun of the same build continues it (as --resume does)
    rec = Record()
    pool = build_pool(recipe(), out=out, ancestor=digits_ancestor, trainer_args=_quiet(), callbacks=[rec])
    assert rec.starts == [("wide", 1)], "narrow not retrained; wide resumed from its checkpoint"
    assert pool.instances[0]["sha256"] == narrow_sha
    assert pool.auxiliary["wide"]["metrics"]["epochs"] == 2
    assert not stage.exists()


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d["auxiliary"]["narrow"].update(embed_dim=18, num_heads=4), "not divisible by its 4 heads"),
        (lambda d: d["auxiliary"]["wide"].update(depth=9), "deeper than the ancestor's 4 blocks"),
        (lambda d: d["auxiliary"]["wide"].update(widht=3), "unknown recipe field auxiliary.wide.widht"),
        (lambda d: d.update(extra=1), "unknown recipe field extra"),
        (lambda d: d["distill"].update(alpah=1), "unknown recipe field distill.alpah"),
        (lambda d: d["auxiliary"]["wide"].update(positions="middle"), "positions must be"),
    ],
)
def test_bad_recipes_write_nothing(tmp_path, digits_ancestor, change, expected):
    d = json.loads(json.dumps(TINY_RECIPE))
    change(d)
    out = tmp_path / "p"
    with pytest.raises(UserError, match=expected):
        build_pool(recipe_from_dict(d), out=out, ancestor=digits_ancestor, trainer_args=_quiet())
    assert list(tmp_path.iterdir()) == []


def test_shipped_recipes_parse():
    from learngene.pool.build import resolve_recipe_path

    for name, widths in (("embedded", [48, 128]), ("deit-base-d6", [192, 768]), ("deit-base-d9", [192, 768])):
        r = load_recipe(resolve_recipe_path(name))
        assert [a.embed_dim for a in r.auxiliary] == widths
    r = load_recipe(resolve_recipe_path("embedded"), ["auxiliary.*.epochs=3", "distill.alpha=0.5"])
    assert [a.epochs for a in r.auxiliary] == [3, 3] and r.distill.alpha == 0.5
    # YAML reads 1e-3 as a string: it still becomes a float
    assert load_recipe(resolve_recipe_path("embedded"), ["auxiliary.narrow.lr=1e-3"]).auxiliary[0].lr == 0.001
    with pytest.raises(UserError, match="auxiliary.narrow.lr must be a number"):
        load_recipe(resolve_recipe_path("embedded"), ["auxiliary.narrow.lr=fast"])


def test_ancestor_init_copies_spaced_blocks(digits_ancestor):
    from learngene.pool.distill import make_student, spaced_blocks

    assert spaced_blocks(6, 12) == [1, 3, 5, 7, 9, 11]
    spec = recipe().auxiliary[1]
    spec.init = "ancestor"
    student = make_student(spec, digits_ancestor.model, 0)
    torch.testing.assert_close(student.blocks[0].attn.qkv.weight, digits_ancestor.model.blocks[1].attn.qkv.weight)
    torch.testing.assert_close(student.blocks[1].mlp.fc2.weight, digits_ancestor.model.blocks[3].mlp.fc2.weight)
    spec = recipe().auxiliary[0]
    spec.init = "ancestor"
    with pytest.raises(UserError, match="needs the ancestor's width"):
        make_student(spec, digits_ancestor.model, 0)


def test_pruned_init_starts_from_the_pruned_ancestors_spaced_blocks(digits_ancestor):
    from learngene.pool.distill import make_student
    from learngene.pool.prune import pruned

    spec = recipe().auxiliary[0]  # narrow: width 16, 2 heads, 2 blocks; the ancestor: 32, 2 heads, 4 blocks
    spec.init, spec.num_heads = "pruned", 4
    with pytest.raises(UserError, match="init: pruned keeps the ancestor's 2 heads"):
        make_student(spec, digits_ancestor.model, 0)
    spec.num_heads = 2
    student = make_student(spec, digits_ancestor.model, 0)
    small = pruned(digits_ancestor.model, 16)
    assert student.blocks[0].attn.qkv.weight.shape == (3 * 16, 16)
    torch.testing.assert_close(student.blocks[0].attn.qkv.weight, small.blocks[1].attn.qkv.weight)
    torch.testing.assert_close(student.blocks[1].mlp.fc1.weight, small.blocks[3].mlp.fc1.weight)
    torch.testing.assert_close(student.head.weight, small.head.weight)


def deit_base_params(num_classes: int) -> dict:
    """Arithmetic parameter counts of the d6 recipe's auxiliary models and SN-Net's anchors."""

    def vit(width, depth, heads=None, classes=num_classes, patches=196, patch=16):
        block = 12 * width * width + 13 * width  # qkv + proj + fc1 + fc2 (+ biases) + 2 LayerNorms
        embed = 3 * patch * patch * width + width + (patches + 1) * width + width
        head = 2 * width + width * classes + classes
        return depth * block + embed + head

    return {
        "tiny6": vit(192, 6),
        "base6": vit(768, 6),
        "deit_ti": vit(192, 12),
        "deit_s": vit(384, 12),
        "deit_b": vit(768, 12),
    }


def test_deit_base_param_arithmetic():
    p = deit_base_params(1000)
    assert p["deit_b"] == 86_567_656 and round(p["deit_ti"] / 1e6, 2) == 5.72
    assert round(p["tiny6"] / 1e6, 2) == 3.05 and round(p["base6"] / 1e6, 1) == 44.0
    snnet = p["deit_ti"] + p["deit_s"] + p["deit_b"]
    assert round(snnet / 1e6, 1) == 114.3


@pytest.mark.slow
def test_deit_base_recipe_mechanics(tmp_path):
    """The real d6 recipe on a random-init DeiT-Base for 1 step on random 224x224 images."""
    import timm
    from helpers import make_image_folder
    from safetensors.torch import save_file

    from learngene.pool.build import resolve_recipe_path

    torch.manual_seed(0)
    m = timm.create_model("deit_base_patch16_224", num_classes=2)
    ckpt = tmp_path / "deit_base.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(ckpt))
    del m
    anc = load_timm("deit_base_patch16_224", checkpoint=ckpt)
    data = make_image_folder(tmp_path / "imgs", per_class=10, size=224)
    pool = build_pool(
        resolve_recipe_path("deit-base-d6"),
        out=tmp_path / "pool",
        ancestor=anc,
        data=data,
        overrides=["distill.max_steps=1", "distill.batch_size=4"],
        trainer_args=_quiet(),
        num_workers=0,
    )
    assert len(pool.instances) == 12
    assert {(e["width"], e["heads"]) for e in pool.instances} == {(192, 3), (768, 12)}
    p = deit_base_params(2)
    aux = pool.auxiliary
    assert aux["tiny6"]["params"] == p["tiny6"] and aux["base6"]["params"] == p["base6"]
    maps = pool.stored_params() - p["tiny6"] - p["base6"]
    # one W per position: 3 positions 768->192 for tiny6, 1 position 768->768 for base6
    assert maps == 3 * (768 * 192 + 192) + (768 * 768 + 768)
    print(f"stored {pool.stored_params() / 1e6:.2f}M (2-class heads)")
