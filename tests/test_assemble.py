"""assemble on a real (tiny) pool built on disk: descendant enumeration, the stitched model
against the pool's shared-weight forward, stitch init, training that keeps the best state,
revisions that never touch the originals, export (timm local-dir + torch.export), and bad
input through the CLI."""

import json

import pytest
import torch
from helpers import assert_one_line_error, cli, fresh_pool, learngene, quiet

from learngene.assembly.select import size_budget
from learngene.core.errors import UserError
from learngene.stitch.descendants import descendants, paired_stitching, parse_config


def test_paired_stitching_counts_match_sn_net():
    # SN-Net, kernel 2 stride 1: D=6 -> 16 stitches (+2 anchors = 18), D=9 -> 25 (+2 = 27)
    assert len(descendants(6)) == 18 and len(descendants(9)) == 27
    pairs = paired_stitching(6)
    assert pairs[:4] == [(0, 0), (0, 1), (1, 0), (1, 1)] and (5, 5) in pairs and len(set(pairs)) == 16
    for d in descendants(6):
        if d.kind == "stitch":
            assert (
                d.j <= d.k <= d.j + 2
                and d.narrow_blocks == list(range(d.j + 1))
                and d.wide_blocks == list(range(d.k, 6))
            )
    assert parse_config("1,2", 6).id == "stitch-1-2" and parse_config("narrow", 6).kind == "narrow"
    with pytest.raises(UserError, match="--descendant 0,5"):
        parse_config("0,5", 6)
    assert size_budget("tiny", 86_600_000) == pytest.approx(5_700_000)
    assert size_budget("base", 1) is None


def test_stitched_model_matches_the_pool_forward_and_timm_loads_it(setup_dir):
    from learngene.pool import Pool
    from learngene.stitch.stitched import StitchedViT

    pm, has = Pool.open(setup_dir / "pool").model("r0")
    assert not has and len(pm.specs) == 9
    torch.manual_seed(1)
    for lin in pm.stitches.values():
        torch.nn.init.normal_(lin.weight, std=0.2)
    x = torch.randn(3, 3, 16, 16)
    for spec in pm.specs:
        child = pm.descendant(spec)
        with torch.no_grad():
            ref = pm(x, spec)
            assert torch.allclose(child(x), ref, atol=1e-6), spec.id
            assert torch.allclose(
                child.forward_head(child.forward_features(x), pre_logits=True), pm(x, spec, pre_logits=True), atol=1e-6
            )
        if spec.kind == "stitch":
            assert isinstance(child, StitchedViT) and child.stitch.in_features == 16 and child.stitch.out_features == 32
            n_params = sum(p.numel() for p in child.parameters())
            blocks = [sum(p.numel() for p in pm.narrow.blocks[i].parameters()) for i in spec.narrow_blocks]
            blocks += [sum(p.numel() for p in pm.wide.blocks[i].parameters()) for i in spec.wide_blocks]
            assert n_params == sum(blocks) + 16 * 32 + 32 + sum(
                p.numel() for p in pm.narrow.patch_embed.parameters()
            ) + pm.narrow.cls_token.numel() + pm.narrow.pos_embed.numel() + sum(
                p.numel() for m in (pm.wide.norm, pm.wide.head) for p in m.parameters()
            )


def test_lstsq_init_solves_the_weighted_least_squares(setup_dir):
    from learngene.core.vit import ViTView
    from learngene.pool import Pool
    from learngene.stitch.init import init_lstsq

    pm, _ = Pool.open(setup_dir / "pool").model("r0")
    images = torch.randn(64, 3, 16, 16)
    init_lstsq(pm, images, ridge=0.0, norm_weight=False, prefix_weight=1.0)
    spec = pm.spec("stitch-1-2")
    with torch.no_grad():
        x = pm.narrow_tokens(images, 1).reshape(-1, 16)
        y = ViTView(pm.wide).run_blocks(ViTView(pm.wide).embed(images), 0, 2).reshape(-1, 32)
    lin = pm.stitches[spec.id]
    w = lin.weight.detach().clone().requires_grad_(True)
    b = lin.bias.detach().clone().requires_grad_(True)
    loss = ((x @ w.T + b - y) ** 2).sum()
    loss.backward()
    # the optimum: zero gradient (relative to the gradient at a random stitch)
    w0 = torch.randn_like(w, requires_grad=True)
    ((x @ w0.T + b.detach() - y) ** 2).sum().backward()
    assert w.grad.norm() < 1e-3 * w0.grad.norm()


def test_distill_init_composes_the_maps():
    import timm

    from learngene.stitch.init import init_distill
    from learngene.stitch.stitched import PoolModel

    kw = dict(img_size=16, patch_size=4, depth=2, num_classes=10)
    nargs, wargs = dict(kw, embed_dim=16, num_heads=2), dict(kw, embed_dim=32, num_heads=2)
    pm = PoolModel(
        timm.create_model("deit_tiny_patch16_224", **nargs),
        timm.create_model("deit_tiny_patch16_224", **wargs),
        nargs,
        wargs,
    )
    torch.manual_seed(0)
    a_dim = 24
    wn, bn = torch.randn(16, a_dim), torch.randn(16)
    ww, bw = torch.randn(32, a_dim), torch.randn(32)
    init_distill(pm, {"W.0.weight": wn, "W.0.bias": bn}, {"W.0.weight": ww, "W.0.bias": bw}, [[3, 1]], [[3, 1]])
    # an ancestor feature a: narrow = Wn a + bn, wide = Ww a + bw; the stitch maps one to the other
    # exactly when a lies in the row space of Wn (here: any a, since Wn has full row rank and we
    # take a = pinv(Wn) z)
    z = torch.randn(5, 16)
    a = z @ torch.linalg.pinv(wn).T
    lin = pm.stitches["stitch-0-1"]
    with torch.no_grad():
        assert torch.allclose(lin(a @ wn.T + bn), a @ ww.T + bw, atol=1e-4)


def test_training_keeps_the_best_state_and_never_ends_worse(setup_dir, tmp_path):
    from learngene.assembly import AssembleSpec
    from learngene.assembly.pipeline import assemble

    pool = fresh_pool(setup_dir, tmp_path)
    # A learning rate that wrecks the weights: the initialisation must come back.
    res = assemble(
        pool,
        train="all",
        spec=AssembleSpec(epochs=2, lr=5.0, stitch_lr=5.0, kl_weight=0.0),
        trainer_args=quiet(),
        progress=lambda m: None,
    )
    hist = res.trained["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2]
    best = res.trained["best"]
    assert best["mean"] == max(h["mean"] for h in hist)
    # the returned state is the best one: re-measuring on val gives the recorded accuracies
    for r in res.rows:
        assert r["val_top1"] == pytest.approx(best["acc"][r["id"]], abs=0.01)


def test_deficit_sampling_sends_steps_to_members_a_cheaper_one_beats(setup_dir, tmp_path):
    from learngene.assembly import AssembleSpec
    from learngene.assembly.pipeline import assemble
    from learngene.stitch.joint import deficit_weights

    acc = {"small": 80.0, "mid": 70.0, "big": 85.0, "bigger": 60.0}
    flops = {"small": 1, "mid": 2, "big": 3, "bigger": 4}
    w = deficit_weights(acc, flops)
    assert sum(w.values()) == pytest.approx(1.0)
    # on the frontier: half a uniform share; below it: in proportion to the points below (10 and 25)
    assert w["small"] == w["big"] == pytest.approx(0.5 / 4)
    assert w["bigger"] - 0.5 / 4 == pytest.approx(2.5 * (w["mid"] - 0.5 / 4))
    assert deficit_weights({"a": 1.0, "b": 2.0}, {"a": 1, "b": 2}) == {"a": 0.5, "b": 0.5}
    # the module samples by the weights once a validation has set them
    from learngene.pool import Pool
    from learngene.stitch.joint import AssembleModule, JointSpec

    pm, _ = Pool.open(setup_dir / "pool").model("r0")
    mod = AssembleModule(pm, pm.specs, JointSpec(sampling="deficit"), flops={x.id: 1 for x in pm.specs})
    mod.weights = {x.id: float(x.id == pm.specs[-1].id) for x in pm.specs}
    assert {mod.sample().id for _ in range(20)} == {pm.specs[-1].id}
    res = assemble(
        fresh_pool(setup_dir, tmp_path),
        train="all",
        spec=AssembleSpec(epochs=1, sampling="deficit"),
        trainer_args=quiet(),
        progress=lambda m: None,
    )
    assert [h["epoch"] for h in res.trained["history"]] == [0, 1] and res.trained["steps"] > 0


def test_assemble_revision_export_and_reuse(setup_dir, tmp_path):
    import timm

    from learngene.assembly import AssembleSpec, Selection, assemble
    from learngene.core.io import file_sha256
    from learngene.pool import Pool

    pool_dir = fresh_pool(setup_dir, tmp_path)
    before = {p.relative_to(pool_dir): file_sha256(p) for p in pool_dir.rglob("*.safetensors")}
    res = assemble(
        pool_dir,
        selection=Selection(config="1,2"),
        train="all",
        spec=AssembleSpec(epochs=1),
        trainer_args=quiet(),
        progress=lambda m: None,
    )
    # the originals are untouched; the trained weights are a new, verified revision
    assert {p: file_sha256(pool_dir / p) for p in before} == before
    pool = Pool.open(pool_dir)
    rev = pool.revision("latest")
    assert rev["id"] == "r1" and rev["parent"] == "r0" and rev["stitch_init"] == "lstsq" and rev["train"] == "all"
    assert (pool_dir / "revisions/r1/stitches.safetensors").is_file()
    # every piece the run changed is stored in r1; a piece it left as it was is read from r0
    # (stored once), and the revision reads exactly the trained weights either way
    pieces, originals = pool.pieces("r1"), pool.pieces("r0")
    for pid, e in pieces.items():
        kept = e["file"].startswith(("instances/", "components/"))
        assert kept == (pid not in {f["id"] for f in rev["files"]})
        assert kept == (e["sha256"] == originals.get(pid, {}).get("sha256"))
    assert len(rev["descendants"]) == 9 and all(d["test_top1"] is not None for d in rev["descendants"])
    assert pool.verify() == len(pool.files())
    # the child: a timm local-dir folder and a torch.export program, same outputs
    child = res.child
    assert child == pool_dir / "children" / "stitch-1-2"
    cfg = json.loads((child / "config.json").read_text())
    assert cfg["architecture"] == "learngene_stitched_vit" and cfg["learngene"]["pool_revision"] == "r1"
    assert cfg["learngene"]["descendant"]["params"] == res.chosen["params"]
    m = timm.create_model(f"local-dir:{child}", pretrained=True).eval()
    x = torch.randn(2, 3, 16, 16)
    ref = res_model(pool_dir, "stitch-1-2")(x)
    assert torch.allclose(m(x), ref, atol=1e-6)
    # the one resolver reads the exported child (a stitched ViT) as a member of the pool
    from learngene.zoo import resolve

    member = resolve(f"{pool_dir}:stitch-1-2")
    assert member.kind == "child" and member.accuracy["test_top1"] == res.chosen["test_top1"]
    assert torch.allclose(member.model()(x), ref, atol=1e-6)
    prog = torch.export.load(str(child / "model.pt2")).module()
    assert torch.allclose(prog(torch.randn(5, 3, 16, 16)).shape[0] * torch.ones(1), torch.tensor([5.0]))
    assert torch.allclose(prog(x), ref, atol=1e-5)
    # a second call reuses the revision: no training, no new revision
    res2 = assemble(pool_dir, selection=Selection(size="base"), trainer_args=quiet(), progress=lambda m: None)
    assert res2.trained == {} and len(Pool.open(pool_dir).revisions) == 1
    best_val = max(r["val_top1"] for r in rev["descendants"])
    assert res2.chosen["val_top1"] == best_val
    # target training on top of r1 makes r2 with r1 as parent; r1 stays as it was
    res3 = assemble(
        pool_dir,
        selection=Selection(config="0,1"),
        train="target",
        spec=AssembleSpec(epochs=1, tune="stitches"),
        trainer_args=quiet(),
        progress=lambda m: None,
    )
    assert (
        res3.revision["id"] == "r2" and res3.revision["parent"] == "r1" and res3.revision["trained"] == ["stitch-0-1"]
    )
    assert not (pool_dir / "revisions/r2/instances").exists()  # stitches only: instances inherited from r1
    assert Pool.open(pool_dir).verify() > 0


def test_stitch_kinds_parse_start_as_linear_and_export(setup_dir, tmp_path):
    import timm

    from learngene.assembly import AssembleSpec, Selection, assemble
    from learngene.core.errors import UserError
    from learngene.pool import Pool
    from learngene.stitch.init import init_lstsq
    from learngene.stitch.stitched import MLPStitch, parse_stitch_kinds

    pool_dir = fresh_pool(setup_dir, tmp_path)
    pm, _ = Pool.open(pool_dir).model("r0")
    stitched = [s.id for s in pm.specs if s.kind == "stitch"]
    assert parse_stitch_kinds("mlp", pm.specs) == dict.fromkeys(stitched, "mlp")
    j0 = [s.id for s in pm.specs if s.kind == "stitch" and s.j == 0]
    assert j0 and parse_stitch_kinds("linear,j0=mlp", pm.specs) == {
        sid: "mlp" if sid in j0 else "linear" for sid in stitched
    }
    assert parse_stitch_kinds("stitch-1-2=mlp", pm.specs) == {"stitch-1-2": "mlp"}
    for bad in ("cubic", "j9=mlp", "stitch-7-8=mlp", "narrow=mlp"):
        with pytest.raises(UserError, match="--stitch-kind"):
            parse_stitch_kinds(bad, pm.specs)

    # an MLP stitch starts as its Linear: after the same least squares, every descendant
    # computes what it computes with linear stitches
    images = torch.randn(32, 3, 16, 16)
    init_lstsq(pm, images)
    mlp, _ = Pool.open(pool_dir).model("r0")
    assert mlp.set_kinds(dict.fromkeys(stitched, "mlp")) == stitched
    init_lstsq(mlp, images)
    assert all(isinstance(m, MLPStitch) for m in mlp.stitches.values())
    with torch.no_grad():
        for spec in pm.specs:
            assert torch.allclose(mlp(images[:4], spec), pm(images[:4], spec), atol=1e-5), spec.id

    # assemble with an MLP stitch after narrow block 0: recorded in the revision, the
    # exported child's config names the kind and timm loads it back as that kind
    res = assemble(
        pool_dir,
        selection=Selection(config="0,1"),
        train="all",
        stitch_kinds="linear,j0=mlp",
        spec=AssembleSpec(epochs=1),
        trainer_args=quiet(),
        progress=lambda m: None,
    )
    rev = res.revision
    assert (
        rev["stitch_kinds"] == {sid: "mlp" if sid in j0 else "linear" for sid in stitched} and rev["restitched"] == j0
    )
    cfg = json.loads((res.child / "config.json").read_text())
    assert cfg["model_args"]["stitch_kind"] == "mlp"
    m = timm.create_model(f"local-dir:{res.child}", pretrained=True).eval()
    assert isinstance(m.stitch, MLPStitch)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(m(x), res_model(pool_dir, "stitch-0-1")(x), atol=1e-6)
    # back to linear for stitch-0-1 only: that stitch is made afresh and counts as untrained
    # until trained again (auto trains it); the others keep their kinds and weights
    pool = Pool.open(pool_dir)
    assert "stitch-0-1" in pool.trained_ids(pool.revision("latest"))
    res2 = assemble(
        pool_dir,
        stitch_kinds="stitch-0-1=linear",
        spec=AssembleSpec(epochs=1),
        trainer_args=quiet(),
        progress=lambda m: None,
    )
    assert res2.revision["restitched"] == ["stitch-0-1"] and res2.revision["train"] == "all"
    assert res2.revision["stitch_kinds"] == {**rev["stitch_kinds"], "stitch-0-1": "linear"}
    # a revision that only restitches (no training) leaves that stitch untrained
    res3 = assemble(
        pool_dir, stitch_kinds="stitch-0-1=mlp", train="none", trainer_args=quiet(), progress=lambda m: None
    )
    pool = Pool.open(pool_dir)
    assert res3.revision["restitched"] == ["stitch-0-1"]
    assert "stitch-0-1" not in pool.trained_ids(pool.revision("latest")) and "stitch-1-2" in pool.trained_ids(
        pool.revision("latest")
    )


def res_model(pool_dir, desc_id):
    from learngene.pool import Pool

    pm, _ = Pool.open(pool_dir).model("latest")
    return pm.descendant(pm.spec(desc_id))


def test_plain_timm_loads_an_exported_auxiliary_child(setup_dir, tmp_path):
    import subprocess
    import sys

    pool = fresh_pool(setup_dir, tmp_path)
    r = cli("assemble", "--pool", pool, "--descendant", "narrow", "--epochs", "0", "-q", "--accelerator", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    # no learngene import: the pure narrow model is a plain timm ViT
    code = (
        f"import timm; m = timm.create_model('local-dir:{pool / 'children' / 'narrow'}', pretrained=True); "
        f"print(type(m).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "VisionTransformer" in out.stdout, out.stderr[-1000:]


def test_cli_bad_input_is_one_line_and_writes_nothing(setup_dir, tmp_path):
    pool = fresh_pool(setup_dir, tmp_path)
    before = sorted(p.relative_to(pool) for p in pool.rglob("*") if p.name != ".lock")
    cases = [
        (["--size", "huge"], ["unknown size", "huge"]),
        (["--params", "10"], ["no descendant fits", "stitch-"]),
        (["--descendant", "0,3"], ["--descendant 0,3", "not a descendant"]),
        (["--descendant", "1,2", "--size", "tiny"], ["one way"]),
        (["--revision", "r7"], ["no revision r7"]),
        (["--stitch-kind", "cubic", "--size", "tiny"], ["--stitch-kind", "cubic", "unknown kind"]),
        (["--pool", tmp_path / "nope"], ["pool not found", "nope"]),
    ]
    for args, needles in cases:
        argv = ["assemble", *([] if "--pool" in args else ["--pool", pool]), *args, "--accelerator", "cpu"]
        assert_one_line_error(cli(*argv), *[str(n) for n in needles])
    # an existing child folder without --force
    (pool / "children" / "narrow").mkdir(parents=True)
    assert_one_line_error(cli("assemble", "--pool", pool, "--descendant", "narrow"), "child exists", "--force")
    (pool / "children" / "narrow").rmdir()
    (pool / "children").rmdir()
    # (the pool's lock file, .lock, stays: it is how writers take turns)
    assert sorted(p.relative_to(pool) for p in pool.rglob("*") if p.name != ".lock") == before
    # a pool that fails verification names the file
    victim = pool / "instances" / "narrow.b1.safetensors"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x01")
    assert_one_line_error(cli("assemble", "--pool", pool, "--size", "tiny"), "checksum", str(victim))


@pytest.mark.slow  # two processes and a process group: ~50 s on 2 cores; CI runs it
def test_assemble_ddp_two_cpu_processes(setup_dir, tmp_path):
    # joint training under DDP: unused stitches must not stall the gradient sync, and only
    # rank 0 writes the revision and the child
    pool = fresh_pool(setup_dir, tmp_path)
    r = learngene(
        "assemble",
        "--pool",
        pool,
        "--all",
        "--descendant",
        "1,2",
        "--epochs",
        "1",
        "-q",
        "--json",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((pool / "pool.json").read_text())
    assert [rev["id"] for rev in m["revisions"]] == ["r1"] and m["revisions"][0]["train"] == "all"
    assert (pool / "children" / "stitch-1-2" / "model.safetensors").is_file()
    assert cli("pool", "verify", pool).returncode == 0
