"""The second embedded testbed: the animal silhouettes, their own embedded ancestor
(``embedded:animals``) and pool recipe (pools/animals.yaml), reached through the same
resolver, recipe and pool interfaces as the digits."""

import importlib.util

import pytest

from learngene.core.errors import UserError
from learngene.models.refs import parse_ref
from learngene.pool import load_recipe, resolve_recipe_path

needs_animals = pytest.mark.skipif(
    importlib.util.find_spec("animal_mnist") is None,
    reason="pip install --no-deps animal-mnist (README's test command does)",
)


def test_embedded_references_name_a_testbed():
    assert parse_ref("embedded") == parse_ref(None)
    assert (parse_ref("embedded").kind, parse_ref("embedded").target) == ("embedded", "digits")
    assert (parse_ref("embedded:animals").kind, parse_ref("embedded:animals").target) == ("embedded", "animals")
    with pytest.raises(UserError, match="unknown embedded ancestor embedded:cifar .*embedded:animals"):
        parse_ref("embedded:cifar")


def test_recipe_names_its_embedded_data():
    rec = load_recipe(resolve_recipe_path("animals"))
    assert (rec.ancestor, rec.data) == ("embedded:animals", "animals") and rec.to_dict()["data"] == "animals"
    digits = load_recipe(resolve_recipe_path("embedded"))
    assert digits.data == "" and "data" not in digits.to_dict()  # the digits pools' keys stay as they were
    with pytest.raises(UserError, match="data '/tmp/x' is not an embedded source"):
        load_recipe(resolve_recipe_path("embedded"), ["data=/tmp/x"])


@needs_animals
def test_animals_split_is_fixed_and_stratified():
    from learngene.core.sources import ANIMALS, AnimalsSource, animal_splits

    s = animal_splits(16)
    assert {k: len(v) for k, v in s.items()} == {"train": 7200, "val": 800, "test": 2000}
    assert s["train"].labels.bincount().tolist() == [720] * 10
    assert tuple(s["train"].images.shape[1:]) == (3, 16, 16) and 0 <= float(s["train"].images.min()) <= 1
    fp = AnimalsSource().fingerprint()
    assert fp["classes"] == ANIMALS and fp["counts"]["train"] == 7200


@needs_animals
def test_clutter_draws_training_images_anew_and_keeps_its_evaluation_splits_fixed():
    """The clutter testbed: the same val / test images on every call (fixed seeds, their
    clutter from their own split), training images drawn anew per sample, at 16 px only."""
    import torch

    from learngene.core import clutter
    from learngene.core.data import open_source

    src = open_source("clutter")
    cfg = src.config_for(None)
    a, b = src.datasets(cfg, augment=True), src.datasets(cfg, augment=False)
    assert {k: len(v) for k, v in a.items()} == {"train": 7200, "val": 800, "test": 2000}
    clutter._FIXED.clear()
    again = src.datasets(cfg, augment=False)
    assert torch.equal(b["test"][5][0], again["test"][5][0]) and b["test"][5][1] == again["test"][5][1]
    torch.manual_seed(0)
    x1, y1 = a["train"][3]
    x2, y2 = a["train"][3]
    assert y1 == y2 and not torch.equal(x1, x2) and x1.shape == (3, 16, 16)  # a new draw each time
    batch = a["train"].__getitems__([0, 1, 2])
    assert [y for _, y in batch] == [a["train"].labels()[i] for i in range(3)]
    assert src.fingerprint()["source"] == "clutter" and "clutter16" in src.fingerprint()["files"]
    with pytest.raises(UserError, match="drawn at 16x16"):
        src.config_for({"input_size": (3, 32, 32)})


@needs_animals
def test_animals_ancestor_pool_and_stages_find_their_data(tmp_path, monkeypatch):
    """The animals' ancestor trains and caches under its own name, records its classes, is
    refused on the digits, and a pool built from it reads the animals with no --data."""
    from learngene.models import embedded as E
    from learngene.models.embedded import embedded_ancestor
    from learngene.pool import Pool, build_pool
    from learngene.zoo import pool_data

    # plumbing, not accuracy: the testbed's architecture at a tenth of its width and depth
    tiny = dict(E.TESTBEDS["animals"].model_args, embed_dim=32, depth=2, num_heads=2)
    monkeypatch.setitem(E.TESTBEDS, "animals", E.Testbed("animals", tiny, E.TESTBEDS["animals"].recipe))
    shrink = [f"auxiliary.{a}.{k}={v}" for a in ("narrow", "wide") for k, v in (("depth", 2), ("num_heads", 2))]
    shrink += ["auxiliary.narrow.embed_dim=16", "auxiliary.wide.embed_dim=32", "distill.max_steps=2"]

    anc = embedded_ancestor(name="animals", epochs=1, progress=False)
    assert anc.name == "embedded:animals" and anc.pretrained_cfg["label_names"][:2] == ["bear", "bird"]
    assert embedded_ancestor(name="animals", epochs=1, progress=False).checksum == anc.checksum  # cached
    with pytest.raises(UserError, match="knows other classes \\(bear, bird, cat, ...\\) than data digits"):
        build_pool("animals", out=tmp_path / "refused", ancestor=anc, data="digits", overrides=shrink)
    assert not (tmp_path / "refused").exists()
    pool = build_pool("animals", out=tmp_path / "pool", ancestor=anc, epochs=1, overrides=shrink)
    pool = Pool.open(pool.path)
    assert pool.embedded_data == "animals" and pool.data["counts"]["train"] == 7200
    assert pool_data(pool, None).name == "animals"
    with pytest.raises(UserError, match="classes"):
        pool_data(pool, "digits")
