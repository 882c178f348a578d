"""The baselines on tiny real models and the embedded digits: what each inherits, what it
trains, and that they come back as the same kind of Zoo as a pool's descendants."""

import copy

import pytest
import torch
from helpers import fresh_pool, quiet

from learngene.core.errors import UserError
from learngene.core.io import state_dict_sha256
from learngene.stitch.descendants import descendants


@pytest.fixture(scope="module")
def dm():
    from learngene.core.data import LearngeneDataModule

    return LearngeneDataModule(None, batch_size=32, train_fraction=0.25)


def params_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_vanilla_inherits_the_last_blocks_and_trains_new_ones_faster(tiny_vit, dm):
    from learngene.baselines import vanilla, vanilla_model

    m = vanilla_model(tiny_vit, n_lower=2, narrow_dim=16, narrow_heads=2, inherit=3)
    # narrow embedding + 2 narrow blocks + Linear(16 -> 32) + the ancestor's blocks 1..3, norm, head
    assert len(m.blocks) == 6 and m.blocks[2].in_features == 16 and m.blocks[2].out_features == 32
    for n, i in enumerate((1, 2, 3)):
        assert state_dict_sha256(m.blocks[3 + n].state_dict()) == state_dict_sha256(tiny_vit.blocks[i].state_dict())
    assert torch.equal(m.head.weight, tiny_vit.head.weight)
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 10)

    before = state_dict_sha256(tiny_vit.state_dict())
    zoo = vanilla(tiny_vit, dm, steps_each=3, lower=(1, 2), narrow_dim=16, narrow_heads=2, trainer_args=quiet())
    assert [r["id"] for r in zoo.rows] == ["vanilla-1", "vanilla-2"] and zoo.steps == 6
    assert state_dict_sha256(tiny_vit.state_dict()) == before  # the ancestor is copied from, never trained
    trained = zoo.models["vanilla-2"]
    assert not torch.equal(trained.blocks[3].attn.qkv.weight, tiny_vit.blocks[1].attn.qkv.weight)
    assert all(
        0 <= r["test_top1"] <= 100 and r["params"] == sum(p.numel() for p in zoo.models[r["id"]].parameters())
        for r in zoo.rows
    )


def test_vanilla_param_groups_split_inherited_from_new(tiny_vit):
    from learngene.baselines.vanilla_learngene import vanilla_model
    from learngene.core.training import lr_groups

    m = vanilla_model(tiny_vit, n_lower=2, narrow_dim=16, narrow_heads=2, inherit=3)
    inherited = ("blocks.3.", "blocks.4.", "blocks.5.", "norm.", "fc_norm.", "head.")
    groups = lr_groups(m, 0.05, lambda n: 1e-4 if n.startswith(inherited) else 1e-3)
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert len(by_id) == len(list(m.parameters()))
    for name, p in m.named_parameters():
        g = by_id[id(p)]
        assert g["lr"] == (1e-4 if name.startswith(inherited) else 1e-3), name
        assert g["weight_decay"] == (0.0 if p.ndim <= 1 or name in ("cls_token", "pos_embed") else 0.05), name


def test_snnet_stitches_a_scratch_anchor_to_the_ancestor(tiny_vit, dm):
    from learngene.assembly import AssembleSpec
    from learngene.baselines import snnet, train_anchor

    frozen = copy.deepcopy(tiny_vit).requires_grad_(False)  # as a teacher elsewhere would leave it
    before = state_dict_sha256(frozen.state_dict())
    anchor = train_anchor(frozen, dm, embed_dim=16, num_heads=2, epochs=1, trainer_args=quiet())
    assert len(anchor[0].blocks) == 4 and anchor[1]["embed_dim"] == 16
    anchor_sha = state_dict_sha256(anchor[0].state_dict())
    zoo = snnet(frozen, dm, spec=AssembleSpec(epochs=1, batch_size=32), anchor=anchor, trainer_args=quiet())
    # SN-Net's paired stitching over the 4-block anchors: 2 anchors + the stitches
    assert [r["id"] for r in zoo.rows] == [s.id for s in descendants(4)]
    assert zoo.steps > 0 and zoo.stored_params > sum(p.numel() for p in frozen.parameters())
    assert state_dict_sha256(frozen.state_dict()) == before and state_dict_sha256(anchor[0].state_dict()) == anchor_sha
    wide = zoo.models["wide"]
    assert sum(p.numel() for p in wide.parameters()) == sum(p.numel() for p in frozen.parameters())
    x = torch.randn(2, 3, 16, 16)
    assert all(m(x).shape == (2, 10) for m in zoo.models.values())


def test_fair_anchors_keep_their_best_state_and_distil_like_the_pool(tiny_vit, dm):
    from learngene.baselines import make_anchor
    from learngene.core.evaluation import evaluate

    frozen = copy.deepcopy(tiny_vit).requires_grad_(False)
    before = state_dict_sha256(frozen.state_dict())
    # until validation stops improving: the state returned is the best validated one
    model, args, rec = make_anchor("plateau", frozen, dm, trainer_args=quiet(), epochs=3)
    assert 1 <= rec["best_epoch"] <= rec["epochs"] <= 3 and args["depth"] == 4
    assert evaluate(model, dm.val_dataloader())["top1"] == pytest.approx(rec["val_top1"], abs=0.01)
    # distilled as the pool's narrow auxiliary (the embedded recipe's width and heads), at the ancestor's depth
    model, args, rec = make_anchor("distilled", frozen, dm, trainer_args=quiet(), epochs=1)
    assert (args["embed_dim"], args["num_heads"], args["depth"], rec["epochs"]) == (48, 3, 4, 1)
    assert len(model.blocks) == 4 and model.head.out_features == 10
    assert state_dict_sha256(frozen.state_dict()) == before and not any(p.requires_grad for p in frozen.parameters())
    with pytest.raises(UserError, match="unknown anchor"):
        make_anchor("long", frozen, dm)


def test_scratch_trains_the_pool_architectures_from_random_init(setup_dir, tmp_path, dm):
    from learngene.baselines import scratch
    from learngene.pool import Pool
    from learngene.stitch.stitched import static_rows
    from learngene.zoo import pool_zoo

    pool = Pool.open(fresh_pool(setup_dir, tmp_path))
    pm, _ = pool.model("r0")
    pz = pool_zoo(pool, "r0", pm=pm)  # the pool's members; scratch takes their architectures
    zoo = scratch(pz, dm, steps_each=2, seed=0, trainer_args=quiet())
    static = {r["id"]: r for r in static_rows(pm)}
    assert [r["id"] for r in zoo.rows] == [s.id for s in pm.specs]
    for r in zoo.rows:  # same architecture (params, FLOPs), not the pool's weights
        assert (r["params"], r["flops"]) == (static[r["id"]]["params"], static[r["id"]]["flops"])
    assert not torch.equal(zoo.models["narrow"].blocks[0].attn.qkv.weight, pm.narrow.blocks[0].attn.qkv.weight)
    # the pool under the same interface
    assert set(pz.models) == set(zoo.models) and pz.stored_params == sum(p.numel() for p in pm.parameters())


def test_per_size_students_prune_the_ancestor_to_a_plain_deit_and_distil_it(tiny_vit, dm):
    """Torch-Pruning's pruned ancestor is a plain DeiT of the width asked (loadable as the
    timm model of that width) and leaves the ancestor as it was; both
    per-size methods come back as a Zoo whose training FLOPs and steps are counted."""
    pytest.importorskip("torch_pruning")
    from learngene.baselines import per_size, pruned, width_for
    from learngene.baselines.one_per_size import params_at

    full = params_at(tiny_vit, 32)
    w = width_for(tiny_vit, full // 2)
    assert w % 2 == 0 and params_at(tiny_vit, w) <= full // 2 < params_at(tiny_vit, w + 2)
    small = pruned(tiny_vit, w)
    assert small.blocks[0].attn.qkv.weight.shape == (3 * w, w) and small.num_classes == 10
    before = params_of(tiny_vit)
    x = torch.randn(4, 3, 16, 16)
    assert small(x).shape == (4, 10)
    assert all(torch.equal(v, before[k]) for k, v in tiny_vit.state_dict().items())  # the ancestor is untouched
    zoos = {
        init: per_size(tiny_vit, dm, [w], init=init, steps=3, seed=0, trainer_args=quiet())
        for init in ("random", "pruned")
    }
    for init, z in zoos.items():
        (m,) = z.members
        assert m.id == f"{'kd' if init == 'random' else 'prune'}-w{w}" and m.params == params_at(tiny_vit, w)
        assert z.steps == 3 and z.train_flops > 3 * 3 * m.flops  # forward + backward of 32 images, a teacher too
    with pytest.raises(UserError, match="steps or epochs"):
        per_size(tiny_vit, dm, [w], seed=0)
