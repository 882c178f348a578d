"""grow: every method keeps the function (hypothesis over random ViTs and random sequences
of expansions, non-integer width ratios included), LiGO's special cases, the CLI."""

import copy
import json
import random

import pytest
import torch
from helpers import assert_one_line_error, cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learngene.growth import expand as X
from learngene.growth import ligo as G
from learngene.growth import net2net as N
from learngene.growth import surgery

TOL = 1e-5


def random_vit(heads: int, head_dim: int, depth: int, mlp: int, seed: int, layer_scale: bool = False):
    """A timm DeiT-architecture ViT with every weight drawn at a scale where mistakes show
    (timm's 0.02 init would make all logits ~0), LayerNorm gains and biases included."""
    import timm

    torch.manual_seed(seed)
    m = timm.create_model(
        "deit_tiny_patch16_224",
        img_size=8,
        patch_size=4,
        embed_dim=heads * head_dim,
        depth=depth,
        num_heads=heads,
        mlp_ratio=mlp / (heads * head_dim),
        num_classes=5,
        init_values=0.5 if layer_scale else None,
    )
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if "weight" in name or "token" in name or "embed" in name else 0.2))
            if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
                p.add_(1.0)
    return m.eval()


def logits_change(a, b, seed=0) -> float:
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ya, yb = a.eval()(x), b.eval()(x)
    assert ya.abs().max() > 0.1  # a real function, not all zeros
    return float((ya - yb).abs().max())


def n_params(m):
    return sum(p.numel() for p in m.parameters())


vits = st.fixed_dictionaries(
    dict(
        heads=st.integers(1, 3),
        head_dim=st.integers(2, 5),
        depth=st.integers(1, 3),
        mlp=st.integers(4, 20),
        seed=st.integers(0, 10**6),
        layer_scale=st.booleans(),
    )
)
steps = st.lists(st.tuples(st.sampled_from(sorted(X.EXPANSIONS)), st.integers(0, 7)), min_size=1, max_size=5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vit=vits, seq=steps)
def test_any_sequence_of_expansions_keeps_the_function(vit, seq):
    m = random_vit(**vit)
    before = copy.deepcopy(m.state_dict())
    g = m
    for name, extra in seq:
        size = surgery.dims(surgery.start(g))[
            {
                "hidden": "embed_dim",
                "heads": "num_heads",
                "key_query_size": "qk_dim",
                "value_size": "v_dim",
                "mlp_hidden": "mlp_hidden",
                "layers": "depth",
            }[name]
        ]
        g = X.EXPANSIONS[name](g, size + extra)
    assert logits_change(m, g) <= TOL
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # the input is left alone
    # timm's LayerNorm eps is kept: the compensation is in the gains and the stream's scale
    assert all(n.eps == 1e-6 for n in surgery.layer_norms(g))


@settings(max_examples=25, deadline=None)
@given(vit=vits, wide=st.integers(0, 9), heads=st.integers(0, 2), mlp=st.integers(0, 9), deep=st.integers(0, 2))
def test_net2net_without_noise_keeps_the_function(vit, wide, heads, mlp, deep):
    m = random_vit(**vit)
    d = surgery.dims(surgery.start(m))
    g = N.net2net(
        m,
        embed_dim=d["embed_dim"] + wide,
        num_heads=d["num_heads"] + heads,
        mlp_hidden=d["mlp_hidden"] + mlp,
        depth=d["depth"] + deep,
    )
    assert logits_change(m, g) <= TOL


def test_each_expansion_grows_what_it_says():
    m = random_vit(2, 4, 2, 12, 0)
    for name, key, new in [
        ("hidden", "embed_dim", 11),
        ("heads", "num_heads", 3),
        ("key_query_size", "qk_dim", 6),
        ("value_size", "v_dim", 7),
        ("mlp_hidden", "mlp_hidden", 20),
        ("layers", "depth", 5),
    ]:
        g = X.EXPANSIONS[name](m, new)
        assert surgery.dims(g)[key] == new and n_params(g) > n_params(m), name
        assert logits_change(m, g) <= TOL, name


def test_hidden_growth_at_a_non_integer_ratio_is_exact_where_plain_zero_padding_is_not():
    """The reason for the residual map: zero-padding the stream moves LayerNorm's statistics."""
    m = random_vit(2, 4, 2, 12, 1)
    assert logits_change(m, X.hidden(m, 13)) <= TOL  # 8 -> 13: ratio 1.625
    naive = X.hidden(m, 13)
    with torch.no_grad():  # undo the compensation: zero new channels, old gains
        naive.patch_embed.proj.weight[8:] = 0
        naive.patch_embed.proj.bias[8:] = 0
        naive.pos_embed[..., 8:] = 0
        naive.cls_token[..., 8:] = 0
        for blk in naive.blocks:
            for lin in (blk.attn.proj, blk.mlp.fc2):
                lin.weight[8:] = 0
                lin.bias[8:] = 0
    assert logits_change(m, naive) > 1e-2


def test_net2net_noise_breaks_symmetry_and_is_only_approximate():
    m = random_vit(2, 4, 2, 12, 2)
    exact = N.net2net(m, embed_dim=16, num_heads=4, mlp_hidden=24)
    noisy = N.net2net(m, embed_dim=16, num_heads=4, mlp_hidden=24, noise=0.05)
    assert logits_change(m, exact) <= TOL
    assert TOL < logits_change(m, noisy) < 1.0


def _selection_from(g: torch.Tensor, old: int, size: int = 1) -> torch.Tensor:
    idx = (g[:, None] * size + torch.arange(size)).reshape(-1)
    s = torch.zeros(len(idx), old * size)
    s[torch.arange(len(idx)), idx] = 1.0
    return s


def test_ligo_reproduces_net2net_and_stacking():
    m = random_vit(2, 4, 3, 12, 3)
    # Net2Net: B = the copy matrices with Net2Net's own mappings -> the very same weights
    n2n = N.net2net(m, embed_dim=16, num_heads=4, mlp_hidden=24, seed=5)
    gen = torch.Generator().manual_seed(5)
    g_heads = [N.mapping(2, 4, gen) for _ in range(3)]
    g_mlp = [N.mapping(12, 24, gen) for _ in range(3)]
    tmpl = G.template_for(m, embed_dim=16, num_heads=4, mlp_hidden=24)
    op = G.LigoOperator(m, tmpl, noise=0.0)
    with torch.no_grad():
        op.b_emb.copy_(torch.cat([torch.eye(8), torch.eye(8)]))
        for layer in range(3):
            for b in (op.b_q, op.b_k, op.b_v):
                b[layer] = _selection_from(g_heads[layer], 2, 4)
            op.b_fc[layer] = _selection_from(g_mlp[layer], 12)
    grown = G.materialise(op, tmpl)
    for k, v in n2n.state_dict().items():
        assert torch.allclose(grown.state_dict()[k], v, atol=1e-6), k
    # stacking (StackBERT): block j of the grown model is block j mod L of the small one
    tmpl = G.template_for(m, depth=6)
    op = G.LigoOperator(m, tmpl, noise=0.0)
    with torch.no_grad():
        op.b_emb.copy_(torch.eye(8))
        for D in op.depth_ops.values():
            D.zero_()
            D[torch.arange(6), torch.arange(6) % 3] = 1.0
    stacked = copy.deepcopy(m)
    stacked.blocks = torch.nn.Sequential(*[copy.deepcopy(m.blocks[i % 3]) for i in range(6)])
    assert logits_change(stacked, G.materialise(op, tmpl)) <= TOL


def test_ligo_starts_as_net2net_and_trains_its_operator():
    from learngene.core.data import LearngeneDataModule, digits_data_config
    from learngene.core.training import TrainerArgs

    m = random_vit(2, 4, 2, 12, 4)
    tmpl = G.template_for(m, embed_dim=16, num_heads=4, mlp_hidden=24, depth=4)
    assert logits_change(m, G.materialise(G.LigoOperator(m, tmpl, noise=0.0), tmpl)) <= TOL
    m5 = random_vit(2, 4, 2, 12, 4)
    m5.reset_classifier(10)
    dm = LearngeneDataModule(None, data_config=digits_data_config(8), batch_size=32, seed=0)
    torch.manual_seed(0)
    op_before = G.LigoOperator(m5, G.template_for(m5, embed_dim=16, depth=4), seed=0).b_emb.detach().clone()
    grown = G.ligo(
        m5, dm, steps=3, embed_dim=16, depth=4, num_heads=4, trainer_args=TrainerArgs(progress=False, accelerator="cpu")
    )
    assert surgery.dims(grown)["embed_dim"] == 16 and surgery.dims(grown)["depth"] == 4
    assert all(p.requires_grad for p in grown.parameters())
    assert op_before.shape == (16, 8)
    # same seed, same grown model, whatever the process's RNGs went through before
    random.seed(123), torch.manual_seed(123), random.random()
    again = G.ligo(
        m5, dm, steps=3, embed_dim=16, depth=4, num_heads=4, trainer_args=TrainerArgs(progress=False, accelerator="cpu")
    )
    assert all(torch.equal(a, b) for a, b in zip(grown.state_dict().values(), again.state_dict().values()))


@pytest.fixture
def tiny_dir(tmp_path):
    from learngene.core.data import digits_data_config
    from learngene.core.localdir import save_local_dir

    m = random_vit(2, 8, 2, 32, 0)
    args = dict(img_size=8, patch_size=4, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5)
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in digits_data_config(8).items()}
    save_local_dir(m, tmp_path / "small", "deit_tiny_patch16_224", args, {**cfg, "num_classes": 5})
    return tmp_path / "small", m


@pytest.mark.parametrize("method", ["expand", "net2net"])
def test_cli_grows_into_a_timm_local_dir_that_computes_the_same(tiny_dir, tmp_path, method):
    import timm

    src, m = tiny_dir
    out = tmp_path / f"big-{method}"
    r = cli(
        "grow",
        "--from",
        src,
        "--method",
        method,
        "--embed-dim",
        26 if method == "expand" else 32,
        "--heads",
        2 if method == "expand" else 4,
        "--depth",
        3,
        "--mlp-ratio",
        3.5,
        "--out",
        out,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["max_logit_change"] <= TOL and res["params"] > res["source_params"]
    grown = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert logits_change(m, grown) <= TOL
    assert surgery.dims(grown)["depth"] == 3


def test_cli_bad_input_is_one_line(tiny_dir, tmp_path):
    src, _ = tiny_dir
    out = tmp_path / "o"
    base = ["grow", "--from", src, "--out", out]
    cases = [
        (["--method", "expand", "--embed-dim", "8"], ["smaller than the model's 16", "shrink"]),
        (["--method", "expand", "--depth", "1"], ["depth 1", "smaller"]),
        (["--method", "expand", "--embed-dim", "32", "--heads", "3"], ["--heads 3 does not divide", "32"]),
        (["--method", "nope"], ["invalid choice", "nope"]),
        (["--method", "expand"], ["nothing to grow"]),
        (["--method", "net2net", "--head-dim", "16", "--embed-dim", "32"], ["net2net", "head"]),
    ]
    for args, needles in cases:
        assert_one_line_error(cli(*base, *args), *needles)
        assert not out.exists()
    assert_one_line_error(
        cli("grow", "--from", tmp_path / "nowhere", "--method", "expand", "--depth", "3", "--out", out), "nowhere"
    )
    out.mkdir()
    assert_one_line_error(cli(*base, "--method", "expand", "--depth", "3"), "exists", "--force")
