"""Training that runs until it has converged (`--epochs auto`), the embedded ancestors' caches
(per recipe, checked on load), and the fitted ancestor reported against the raw-pixel
baselines."""

import json

import pytest
import torch
from helpers import cli, make_image_folder


def test_epochs_auto_stops_on_a_plateau_and_restores_the_best_state():
    import timm

    from learngene.core.convergence import Convergence
    from learngene.core.data import LearngeneDataModule
    from learngene.core.evaluation import evaluate
    from learngene.core.training import Classifier, OptimConfig, TrainerArgs, fit

    torch.manual_seed(0)
    model = timm.create_model(
        "deit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=10
    )
    dm = LearngeneDataModule("digits", batch_size=64, train_fraction=0.2, augment=False)
    rec, trainer = fit(
        Classifier(model, OptimConfig(lr=3e-3)),
        dm,
        TrainerArgs(progress=False, accelerator="cpu"),
        epochs="auto",
        auto=Convergence(cap=60, patience=3),
    )
    assert rec["epochs"] == "auto" and rec["stopped_early"] and rec["epochs_run"] < 60
    assert rec["restored_best"] and 1 <= rec["best_epoch"] <= rec["epochs_run"] - 3
    # the reported validation score is what the weights handed back score
    assert evaluate(model, dm.val_dataloader())["top1"] == pytest.approx(rec["best_val"], abs=0.01)
    # no stop before min_epochs: the same run trains on past the plateau until then
    torch.manual_seed(0)
    again = timm.create_model(
        "deit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=10
    )
    floor = rec["epochs_run"] + 2
    rec3, _ = fit(
        Classifier(again, OptimConfig(lr=3e-3)),
        dm,
        TrainerArgs(progress=False, accelerator="cpu"),
        epochs="auto",
        auto=Convergence(cap=60, patience=3, min_epochs=floor),
    )
    assert rec3["epochs_run"] >= floor and rec3["min_epochs"] == floor and rec3["restored_best"]
    # a fixed count still trains exactly that many epochs
    rec2, _ = fit(Classifier(model, OptimConfig(lr=3e-3)), dm, TrainerArgs(progress=False, accelerator="cpu"), epochs=2)
    assert rec2["epochs_run"] == 2 and not rec2["restored_best"]


def scripted(scores):
    """A module whose validation score at each epoch is ``scores[epoch]`` (its one weight never
    moves; its ``epoch`` buffer says which epoch its state is from), and a two-row data module."""
    import lightning as L

    class Scripted(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.register_buffer("epoch", torch.zeros(1))

        def on_train_epoch_start(self):
            self.epoch.fill_(self.current_epoch + 1)

        def training_step(self, batch, i):
            return (self.w * batch[0]).sum()

        def validation_step(self, batch, i):
            self.log("val/top1", float(scores[self.current_epoch]), batch_size=1)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 1)), batch_size=2)

        val_dataloader = train_dataloader

    return Scripted, Data


def test_no_stop_before_min_epochs_and_patience_counts_from_the_best_after_it():
    """A plateau early in the schedule does not end the run, and a best found after it restarts
    the patience (Lightning's Trainer(min_epochs) would keep the stop the plateau signalled and
    end the run at min_epochs all the same)."""
    from learngene.core.convergence import Convergence
    from learngene.core.training import TrainerArgs, fit

    Scripted, Data = scripted([5, 1, 1, 1, 1, 6, 1, 1, 1, 1, 1, 1, 1, 1, 1])  # the validation score of each epoch
    targs = TrainerArgs(progress=False, accelerator="cpu")
    rec, _ = fit(
        Scripted(), Data(), targs, epochs="auto", auto=Convergence(cap=15, patience=3, min_epochs=8), part=lambda m: m
    )
    assert rec["best_epoch"] == 6 and rec["epochs_run"] == 9  # 3 epochs after the best at 6, not at 8
    rec, _ = fit(Scripted(), Data(), targs, epochs="auto", auto=Convergence(cap=15, patience=3), part=lambda m: m)
    assert rec["epochs_run"] == 4  # without the floor the plateau after epoch 1 ends it


def test_one_standard_error_rule_keeps_the_latest_state_within_noise_of_the_peak():
    """With ``one_se_of`` (validation images), the state handed back is the latest whose score
    is within one standard error of the peak's (at 90% on 100 images, 3 points), not the peak."""
    from learngene.core.convergence import Convergence
    from learngene.core.training import TrainerArgs, fit

    Scripted, Data = scripted([50, 80, 90, 89.5, 85, 88, 80, 70, 70, 70, 70, 70])
    targs = TrainerArgs(progress=False, accelerator="cpu")
    m = Scripted()
    rec, _ = fit(m, Data(), targs, epochs="auto", auto=Convergence(cap=12, patience=4, one_se_of=100), part=lambda x: x)
    assert rec["epochs_run"] == 7  # patience counts from the peak at 3
    assert (rec["peak_epoch"], rec["peak_val"]) == (3, 90) and (rec["best_epoch"], rec["best_val"]) == (6, 88)
    assert int(m.epoch) == 6  # the state handed back is the one recorded
    m = Scripted()
    rec, _ = fit(m, Data(), targs, epochs="auto", auto=Convergence(cap=12, patience=4), part=lambda x: x)
    assert (rec["best_epoch"], int(m.epoch)) == (3, 3) and "peak_epoch" not in rec  # without it: the peak


def test_build_pool_and_a_stitched_child_take_epochs_auto_and_record_the_stop(recipe_dir, tmp_path, monkeypatch):
    """Distillation and joint training both go through core.training.fit: --epochs auto is
    taken, the run stops on its own (patience after the best) and the record says where."""
    import yaml
    from helpers import RECIPE

    from learngene.core.convergence import Convergence
    from learngene.stitch import joint

    # a short patience (the default, 20 of at most 300 epochs, ran 209 here): the same path
    JOINT_AUTO = Convergence(cap=60, patience=3)
    monkeypatch.setattr(joint, "JOINT_AUTO", JOINT_AUTO)

    d = json.loads(json.dumps(RECIPE))
    for a in d["auxiliary"].values():
        a["epochs"] = "auto"
    d["distill"]["max_steps"] = 40  # two epochs of the digits: what matters is that auto is taken and recorded
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(d))
    r = cli(
        "build-pool", "--recipe", tmp_path / "r.yaml", "--model", f"local-dir:{recipe_dir / 'anc'}",
        "--out", tmp_path / "p", "-q", "--accelerator", "cpu",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    aux = json.loads((tmp_path / "p" / "pool.json").read_text())["auxiliary"]
    assert all(
        a["metrics"]["training"]["epochs"] == "auto" and a["metrics"]["training"]["best_epoch"] for a in aux.values()
    )
    r = cli(
        "assemble", "--pool", tmp_path / "p", "--descendant", "0,1", "--epochs", "auto", "-q", "--accelerator", "cpu"
    )
    assert r.returncode == 0, r.stderr
    rev = json.loads((tmp_path / "p" / "pool.json").read_text())["revisions"][-1]
    t = rev["training"]
    assert t["epochs"] == "auto" and t["monitor"] == "val/mean_top1" and t["restored_best"]
    # early stopping: it ended on its own, patience epochs after the best (epoch 0: the init)
    assert t["stopped_early"] and (t["cap"], t["patience"]) == (JOINT_AUTO.cap, JOINT_AUTO.patience)
    # (Lightning's early stopping counts from the first trained epoch; epoch 0 is validated before)
    assert t["epochs_run"] - max(t["best_epoch"], 1) == JOINT_AUTO.patience < JOINT_AUTO.cap, t


def test_embedded_ancestor_is_cached_per_recipe_and_checked_on_load(tmp_path, monkeypatch):
    """A recipe other than the shipped one trains once into a cache folder of its own, later
    calls load it; another recipe never replaces it; a corrupted cache is retrained, saying so;
    corrupted shipped weights are refused."""
    import shutil

    from learngene.models import embedded as E

    # the caching does not depend on the depth: 2 blocks instead of 12 train in a sixth of the time
    small = E.Testbed("digits", {**E.EMBEDDED_MODEL_ARGS, "depth": 2}, E.EMBEDDED_RECIPE)
    monkeypatch.setitem(E.TESTBEDS, "digits", small)
    home = tmp_path / "home"
    r = cli("ancestor", "--epochs", "1", "--json", "-q", home=home)
    assert r.returncode == 0, r.stderr
    one = json.loads(r.stdout)
    assert one["name"] == "embedded" and one["epochs"] == 1
    (cache,) = (home / "ancestors").glob("embedded-digits-*/model.safetensors")
    written = cache.stat().st_mtime_ns
    again = cli("ancestor", "--epochs", "1", "--json", "-q", home=home)
    assert json.loads(again.stdout)["sha256"] == one["sha256"] and cache.stat().st_mtime_ns == written  # loaded
    r = cli("ancestor", "--epochs", "1", "--seed", "1", "--json", "-q", home=home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sha256"] != one["sha256"]
    assert len(list((home / "ancestors").glob("embedded-digits-*"))) == 2  # seed 1 did not replace seed 0
    # a corrupted cache is noticed on load and trained again, saying so
    data = bytearray(cache.read_bytes())
    data[-5] ^= 0xFF
    cache.write_bytes(bytes(data))
    r = cli("ancestor", "--epochs", "1", "--json", "-q", home=home)
    assert r.returncode == 0 and "fails its checksum" in r.stderr, r.stderr
    assert json.loads(r.stdout)["sha256"] == one["sha256"]  # the same recipe and seed give the same weights
    # corrupted shipped weights are refused in one line
    monkeypatch.undo()  # the shipped recipe's architecture again
    fake = tmp_path / "weights" / "embedded-digits"
    shutil.copytree(E.shipped_dir(), fake)
    data = bytearray((fake / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (fake / "model.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(E, "SHIPPED", tmp_path / "weights")
    with pytest.raises(Exception, match="fail their checksum"):
        E.embedded_ancestor(progress=False)


def test_fine_tune_reports_the_pixel_baselines_and_a_test_split_of_its_own(tmp_path):
    import timm

    from learngene.core.data import digits_data_config
    from learngene.core.localdir import save_local_dir

    make_image_folder(tmp_path / "d" / "train", per_class=16, size=20)
    make_image_folder(tmp_path / "d" / "val", per_class=8, size=20, seed=1)
    args = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=10)
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in digits_data_config().items()}
    torch.manual_seed(0)
    save_local_dir(
        timm.create_model("deit_tiny_patch16_224", **args),
        tmp_path / "anc",
        "deit_tiny_patch16_224",
        args,
        {**cfg, "num_classes": 10},
    )
    r = cli(
        "ancestor",
        "--model",
        f"local-dir:{tmp_path / 'anc'}",
        "--data",
        tmp_path / "d",
        "--fine-tune",
        "--epochs",
        "2",
        "--json",
        "-q",
        "--accelerator",
        "cpu",
        home=tmp_path / "home",
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    for k in ("pixels_knn_top1", "pixels_logreg_top1", "test_top1", "val_top1", "lr"):
        assert k in info, k
    assert info["test_from"].startswith("half of val") and info["training"]["epochs_run"] == 2
    # random pixels: the fitted model cannot beat the baselines by much; when it does not, one warning says so
    if info["test_top1"] < max(info["pixels_knn_top1"], info["pixels_logreg_top1"]):
        assert "does not beat the best raw-pixel baseline" in r.stderr


def test_training_on_the_cpu_computes_attention_as_written_and_puts_the_kernel_back():
    """`plain_attention`: the same function as timm's fused path (what it trains is what it
    evaluates), on only while training, each module's own setting restored after."""
    import timm

    from learngene.core.training import plain_attention

    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
    m.eval()
    x = torch.randn(3, 3, 16, 16)
    attn = [a for a in m.modules() if hasattr(a, "fused_attn")]
    attn[0].fused_attn = True
    attn[1].fused_attn = False  # a module that asked for the plain path keeps it
    with torch.no_grad():
        fused = m(x)
        with plain_attention(m):
            assert not any(a.fused_attn for a in attn)
            plain = m(x)
        with plain_attention(m, on=False):
            assert attn[0].fused_attn
    assert [a.fused_attn for a in attn] == [True, False]
    torch.testing.assert_close(plain, fused, rtol=1e-4, atol=1e-5)


def test_a_plateau_run_cut_off_resumes_from_its_last_epoch(tmp_path, monkeypatch, capsys):
    """train_embedded(resume=True) checkpoints every epoch: a run cut off after its second
    epoch continues from there, and the record counts all three epochs and both sittings."""
    from learngene.models import embedded as E

    tiny = dict(E.TESTBEDS["digits"].model_args, embed_dim=16, depth=1, num_heads=1)
    monkeypatch.setitem(E.TESTBEDS, "digits", E.Testbed("digits", tiny, E.TESTBEDS["digits"].recipe))
    keeper = E._elapsed_keeper

    class CutOff(Exception):
        pass

    def cut_after_two(path, prior):
        cb = keeper(path, prior)
        keep = cb.on_train_epoch_end

        def end(trainer, module):
            keep(trainer, module)
            if trainer.current_epoch == 1:  # the second epoch: validated and checkpointed
                raise CutOff

        cb.on_train_epoch_end = end
        return cb

    monkeypatch.setattr(E, "_elapsed_keeper", cut_after_two)
    with pytest.raises(CutOff):
        E.train_embedded(tmp_path / "a", epochs=3, resume=True, progress=False)
    key = E.recipe_key(E.recipe(epochs=3), None)
    assert (E.training_dir(key) / "last.ckpt").exists() and not (tmp_path / "a").exists()
    monkeypatch.setattr(E, "_elapsed_keeper", keeper)
    capsys.readouterr()
    anc = E.train_embedded(tmp_path / "a", epochs=3, resume=True, progress=False)
    assert "resumes from" in capsys.readouterr().err  # not started afresh
    from learngene.core.data import LearngeneDataModule

    steps_per_epoch = len(LearngeneDataModule("digits").train_dataloader())
    assert anc.metrics["epochs"] == 3 and anc.metrics["steps"] == 3 * steps_per_epoch
    assert not E.training_dir(key).exists()  # written: nothing left to resume
