"""adapt: a delta's round trip (save, load, apply, merge), rollback to a byte-identical base,
refusal of another base and of a corrupt / missing delta file, the CLI, bench of deltas."""

import json
from pathlib import Path

import pytest
import torch
from helpers import adapt_args, assert_one_line_error, cli, save_tiny_ancestor

from learngene.core.io import state_dict_sha256
from learngene.deltas import delta as D
from learngene.deltas import tasks as api

pytest.importorskip("peft")


@pytest.fixture
def base_dir(tmp_path, tiny_vit):
    return save_tiny_ancestor(tmp_path / "base", model=tiny_vit)


def out(model, seed=0):
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def load(base_dir):
    from learngene.zoo import resolve

    return resolve(str(base_dir)).load()


def quick(base_dir, pool, method="lora", name="rot", **kw):
    from learngene.zoo import resolve

    member = resolve(str(base_dir))
    return api.adapt(
        member.load(),
        "digits:rot90",
        name=name,
        adapters=pool / "adapters",
        ref=api.base_ref(str(base_dir), member),
        method=method,
        epochs=1,
        train_fraction=0.2,
        trainer_args=_quiet(),
        **kw,
    )


def applied(base_dir, delta, pool):
    base = load(base_dir)
    model, ad = api.apply(base, api.resolve_delta(str(delta), pool / "adapters"))
    return model, ad, base


def _quiet():
    from learngene.core.training import TrainerArgs

    return TrainerArgs(progress=False, accelerator="cpu")


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_round_trip_apply_merge_and_rollback(base_dir, tmp_path, method):
    pool = tmp_path / "pool"
    base = load(base_dir)
    before = state_dict_sha256(base.model.state_dict())
    rec = quick(base_dir, pool, method, train_head=True)
    folder = pool / "adapters" / "rot"
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "learngene.json",
    ]
    meta = json.loads((folder / "learngene.json").read_text())
    assert meta["base_checksum"] == before and rec["delta_bytes"] < rec["model_bytes"]
    model, ad, base2 = applied(base_dir, "rot", pool)
    # the delta changed the function (training moved it) and reloads to the same outputs
    assert (out(model) - out(base.model)).abs().max() > 1e-4
    again, _, _ = applied(base_dir, folder, pool)
    assert torch.allclose(out(model), out(again), atol=1e-6)
    if method == "lora":
        merged = D.merge(ad)
        assert torch.allclose(out(merged), out(model), atol=1e-5)
        assert not any("lora" in k for k in merged.state_dict())
    else:
        with pytest.raises(Exception, match="only LoRA"):
            D.merge(ad)
    # rollback: the base again, byte for byte; the base itself was never touched
    assert state_dict_sha256(D.rollback(ad).state_dict()) == before
    assert state_dict_sha256(base2.model.state_dict()) == before


def test_cli_adapt_ls_apply_merge_export(base_dir, tmp_path):
    import timm

    pool = tmp_path / "pool"
    r = cli(*adapt_args(base_dir, pool), "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    r = cli("adapt", "ls", "--pool", pool, "--json")
    rows = json.loads(r.stdout)
    assert [x["task"] for x in rows] == ["rot"] and rows[0]["test_top1"] == rec["test_top1"]
    r = cli(
        "adapt",
        "apply",
        "--model",
        base_dir,
        "--pool",
        pool,
        "--delta",
        "rot",
        "--merge",
        "--out",
        tmp_path / "merged",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["merge_max_logit_diff"] <= 1e-5 and res["test_top1"] == rec["test_top1"]
    merged = timm.create_model(f"local-dir:{tmp_path / 'merged'}", pretrained=True)
    model, _, _ = applied(base_dir, "rot", pool)
    assert torch.allclose(out(merged), out(model), atol=1e-5)


def test_refuses_another_base_and_corrupt_or_missing_files(base_dir, tmp_path, tiny_vit):
    from learngene.core.localdir import save_local_dir

    pool = tmp_path / "pool"
    quick(base_dir, pool)
    other = tmp_path / "other"
    cfg = json.loads((base_dir / "config.json").read_text())
    torch.manual_seed(1)
    with torch.no_grad():
        tiny_vit.head.weight.add_(0.01)
    save_local_dir(tiny_vit, other, cfg["architecture"], cfg["model_args"], cfg["pretrained_cfg"])
    apply = ["adapt", "apply", "--pool", pool, "--delta", "rot"]
    assert_one_line_error(cli(*apply, "--model", other), "refusing", "rot")
    f = pool / "adapters" / "rot" / "adapter_model.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    assert_one_line_error(cli(*apply, "--model", base_dir), "checksum", "adapter_model.safetensors")
    f.unlink()
    assert_one_line_error(cli(*apply, "--model", base_dir), "no adapter_model.safetensors")
    assert_one_line_error(cli(*apply, "--model", base_dir, "--delta", "nope"), "no delta", "nope")


def test_bad_input_is_one_line_and_writes_nothing(base_dir, tmp_path):
    pool = tmp_path / "pool"
    base = ["adapt", "--pool", pool, "--model", base_dir, "--data", "digits:rot90", "--epochs", "1"]
    for args, needles in [
        (["--name", "t", "--method", "dora"], ["invalid choice", "dora"]),
        (["--name", "t", "--rank", "0"], ["--rank"]),
        (["--name", "t", "--lr", "0"], ["--lr"]),
        (["--name", "t", "--targets", "qkv,bogus"], ["--targets", "bogus"]),
        (["--name", "../x"], ["--name"]),
        (["--name", "t", "--data", "digits:upside"], ["digits:upside"]),
        (["--name", "t", "--model", tmp_path / "nowhere"], ["nowhere"]),
    ]:
        assert_one_line_error(cli(*base, *args), *needles)
    assert not (pool / "adapters").exists() or not any((pool / "adapters").iterdir())


def test_a_new_class_count_needs_the_head(base_dir, tmp_path):
    base = load(base_dir)
    with pytest.raises(Exception, match="--train-head"):
        D.attach(base.model, "lora", num_classes=3)
    ad = D.attach(base.model, "adapter", num_classes=3, train_head=True)
    assert out(ad.model).shape == (4, 3)
    assert state_dict_sha256(D.rollback(ad).state_dict()) == base.checksum


def test_a_delta_goes_beside_its_base_and_records_a_base_that_resolves_anywhere(tmp_path, base_dir):
    import shutil

    from learngene.zoo import resolve

    pool = tmp_path / "pool"
    (pool / "children").mkdir(parents=True)
    (pool / "pool.json").write_text("{}")  # only its presence makes the folder a pool here
    shutil.copytree(base_dir, pool / "children" / "kid")
    other = tmp_path / "elsewhere"
    # a pool member, by POOL:MEMBER or by its folder: the delta goes to that pool, not to --pool
    assert api.adapters_for(f"{pool}:kid", other) == pool / "adapters"
    assert api.adapters_for(str(pool / "children" / "kid"), other) == (pool / "adapters").resolve()
    assert api.adapters_for(str(base_dir), other) == other / "adapters"
    member = resolve(str(pool / "children" / "kid"))
    ref = api.base_ref(str(pool / "children" / "kid"), member)
    assert ref["base"] == f"local-dir:{(pool / 'children' / 'kid').resolve()}" and not ref["base_in_pool"]
    assert Path(ref["base"].split(":", 1)[1]).is_absolute()  # resolves from any working folder
    assert resolve(ref["base"]).load().checksum == member.load().checksum
