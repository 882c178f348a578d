"""Device targeting on a real (tiny) pool: ONNX export checked in ONNX Runtime, int8 files
with their own accuracy, bench in several runtimes, the device kit measured by probe.py in a
fresh environment holding only onnxruntime and numpy, target from the device's latency.json,
and the bad input of each step."""

import json
import os
import subprocess
import sys

import torch
from helpers import assert_one_line_error, cli, copy_of


def test_onnx_export_matches_eager_and_int8_has_its_own_accuracy(assembled, tmp_path):
    from learngene.core.data import data_for
    from learngene.onnx_sessions import onnx_accuracy, ort_session
    from learngene.zoo import resolve

    pool = copy_of(assembled, tmp_path)
    member = resolve(f"{pool}:stitch-1-2")
    r = cli("export", f"{pool}:stitch-1-2", "--out", tmp_path / "fp32", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["format"] == "onnx" and rec["opset"] >= 17 and rec["max_abs_diff"] <= 1e-4 and rec["onnxruntime"]
    sess = ort_session(tmp_path / "fp32" / "model.onnx")
    for n in (1, 5):  # a dynamic batch
        x = torch.randn(n, 3, 16, 16)
        with torch.no_grad():
            assert abs(sess.run(None, {"images": x.numpy()})[0] - member.model()(x).numpy()).max() <= 1e-4
    dm = data_for(None, member.data_config, augment=False)
    for flag, precision in ((["--int8"], "int8"), (["--int8", "static"], "int8-static")):
        out = tmp_path / precision
        r = cli("export", f"{pool}:stitch-1-2", *flag, "--out", out, "--json")
        assert r.returncode == 0, r.stderr
        rec = json.loads(r.stdout)
        f = out / f"model.{precision}.onnx"
        assert rec["precision"] == precision and f.is_file() and not (out / "model.onnx").exists()
        assert f.stat().st_size < (tmp_path / "fp32" / "model.onnx").stat().st_size
        assert rec["accuracy"] == onnx_accuracy(f, dm.eval_loader("test"))  # measured on this very file
    # the folder is also a timm local-dir of the same model
    import timm

    m = timm.create_model(f"local-dir:{tmp_path / 'fp32'}", pretrained=True).eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(m(x), member.model()(x), atol=1e-6)
    # ... in a fresh process too, after a library has probed for timm without importing it
    # (an availability check once unhooked learngene's registration of the stitched ViT)
    code = (
        "import importlib.util, learngene; importlib.util.find_spec('timm'); import timm; "
        f"print(type(timm.create_model('local-dir:{tmp_path / 'fp32'}', pretrained=True)).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "StitchedViT", out.stderr[-500:]


def test_a_failed_export_check_is_exit_1_one_line_and_writes_nothing(assembled, tmp_path, monkeypatch):
    import learngene.formats as E
    import learngene.onnx_cache as C

    for m in (E, C):  # the export checks and the ONNX cache's own
        monkeypatch.setattr(m, "EXPORT_TOL", -1.0)  # no export can pass
    monkeypatch.setenv("LEARNGENE_HOME", str(tmp_path / "home"))  # no cached file either
    r = cli("export", f"{assembled}:narrow", "--out", tmp_path / "x")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "narrow" in r.stderr and "differs from the eager model by" in r.stderr
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x*"))
    assert not list((tmp_path / "home" / "onnx").glob("*.onnx"))


def test_bench_measures_each_runtime_and_precision_apart(assembled, tmp_path):
    from learngene.api import bench as bench_pool

    pool = copy_of(assembled, tmp_path)
    res = bench_pool(
        pool,
        runtimes="torch,onnxruntime",
        precisions="fp32,int8",
        batch_sizes=[1],
        min_run_time=0.02,
        members="narrow, stitch-1-2,narrow",  # three members are enough for a front; a repeat counts once
    )
    df = res.df
    assert sorted({(r, p) for r, p in zip(df.runtime, df.precision)}) == [
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
        ("torch", "fp32"),
    ]
    assert len(df) == 3 * 2 and set(df.model) == {"narrow", "stitch-1-2"}
    assert res.meta["members"] == ["narrow", "stitch-1-2"]
    t = df[df.runtime == "torch"].set_index("model")
    o = df[(df.runtime == "onnxruntime") & (df.precision == "fp32")].set_index("model")
    assert (abs(t.top1 - o.top1) <= 0.5).all()  # the same weights, computed by another runtime
    assert o.file_sha256.notna().all() and t.knn_top1.notna().all() and o.knn_top1.isna().all()
    assert df.groupby(["runtime", "precision"]).pareto.any().all()  # a front per runtime and precision
    for name in ("frontier-torch-fp32.png", "frontier-onnxruntime-int8.png", "frontier.png", "frontier.md"):
        assert (res.report / name).stat().st_size > 0
    assert "## runtime onnxruntime precision int8 batch size 1" in (res.report / "frontier.md").read_text()


def fresh_env(tmp_path):
    """A new virtual environment that sees onnxruntime and numpy and nothing else of this
    one (linked in, so no network is needed): what a device has."""
    import numpy
    import onnxruntime

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    linked = tmp_path / "device-site"
    linked.mkdir()
    for mod in (numpy, onnxruntime):
        src = os.path.dirname(mod.__file__)
        os.symlink(src, linked / os.path.basename(src))
        libs = src + ".libs"  # the wheels' bundled shared libraries, where there are any
        if os.path.isdir(libs):
            os.symlink(libs, linked / os.path.basename(libs))
    (tmp_path / "venv" / site.split(str(venv) + "/")[1] / "device.pth").write_text(str(linked))
    return python


def test_kit_probe_in_a_fresh_env_and_target_from_its_latency_file(assembled, tmp_path):
    pool = copy_of(assembled, tmp_path)
    kit = tmp_path / "kit"
    r = cli("kit", "--pool", pool, "--out", kit, "--members", "narrow,stitch-1-2,wide", "--batch-sizes", "1")
    assert r.returncode == 0, r.stderr
    meta = json.loads((kit / "kit.json").read_text())
    assert [(m["id"], m["precision"]) for m in meta["members"]] == [
        (i, p) for i in ("narrow", "stitch-1-2", "wide") for p in ("fp32", "int8")
    ]
    assert all(0 <= m["host_top1"] <= 100 for m in meta["members"]) and meta["pool_revision"] == "r1"
    python = fresh_env(tmp_path)
    no_torch = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    lat = tmp_path / "latency.json"
    run = subprocess.run(
        [python, kit / "probe.py", "--threads", "1", "--min-run-time", "0.05", "--name", "box", "--out", lat],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(lat.read_text())
    assert len(got["rows"]) == 6 and got["device"]["threads"] == 1 and got["device"]["onnxruntime"]
    assert all(r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] for r in got["rows"])
    # the pick: the most accurate within the budget by the device's own p90; untrained, so trained first
    budget = max(r["p90_ms"] for r in got["rows"]) * 2
    r = cli("target", "--pool", pool, "--latency-file", lat, "--max-latency-ms", budget, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    # every row fits this budget; rows the device timed with a wide spread are passed over while a
    # steady one fits (a loaded CI box makes some), and the notes say so
    from learngene.measure.probe import WIDE_SPREAD

    host = {(m["id"], m["precision"]): m["host_top1"] for m in meta["members"]}
    steady = [host[r["id"], r["precision"]] for r in got["rows"] if (r.get("spread") or 0) <= WIDE_SPREAD]
    assert res["chosen"]["top1"] == max(steady or host.values())
    if len(steady) < len(host) and steady:
        assert any("passed over" in n for n in res["notes"])
    child = res["child"]
    assert f"box-1t-{res['chosen']['precision']}_lat@" in child and "ms_top1@" in child
    cfg = json.loads((tmp_path / "pool" / "children" / os.path.basename(child) / "config.json").read_text())[
        "learngene"
    ]
    assert cfg["export"]["format"] == "onnx" and cfg["export"]["accuracy"]["top1"] >= 0
    assert res["trained"] == (res["chosen"]["model"] not in ("narrow", "wide"))


def test_device_bad_input_is_one_line_and_writes_nothing(assembled, tmp_path):
    pool = copy_of(assembled, tmp_path)
    kit = tmp_path / "kit"
    assert (
        cli(
            "kit", "--pool", pool, "--out", kit, "--members", "narrow", "--precision", "fp32", "--batch-sizes", "1"
        ).returncode
        == 0
    )
    lat = tmp_path / "lat.json"
    ok = subprocess.run(
        [sys.executable, kit / "probe.py", "--threads", "1", "--min-run-time", "0.02", "--out", lat],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    # a kit copied with a file edited, or missing: one line, exit 2, no latency file
    onnx = kit / "narrow.fp32.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))
    for broken in ("edited", "missing"):
        r = subprocess.run(
            [sys.executable, kit / "probe.py", "--out", tmp_path / f"{broken}.json"], capture_output=True, text=True
        )
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "narrow.fp32.onnx" in r.stderr, (
            r.stderr
        )
        assert broken in r.stderr and not (tmp_path / f"{broken}.json").exists()
        onnx.unlink(missing_ok=True)
    # a latency file of another pool, or of a revision this pool lacks
    for key, value, needle in (("ancestor_sha256", "0" * 64, "another pool"), ("pool_revision", "r9", "r9")):
        bad = json.loads(lat.read_text())
        bad["kit"][key] = value
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        assert_one_line_error(
            cli("target", "--pool", pool, "--latency-file", tmp_path / "bad.json", "--max-latency-ms", 1000), needle
        )
    (tmp_path / "junk.json").write_text("{not json")
    assert_one_line_error(
        cli("target", "--pool", pool, "--latency-file", tmp_path / "junk.json", "--max-latency-ms", 1), "JSON"
    )
    # a budget nothing meets on that device
    assert_one_line_error(cli("target", "--pool", pool, "--latency-file", lat, "--max-latency-ms", 1e-6), "closest")
    # an unknown runtime or precision, a precision the runtime lacks
    for args, needle in (
        (["--runtimes", "tvm"], "tvm"),
        (["--precisions", "fp16"], "fp16"),
        (["--runtimes", "torch", "--precisions", "int8"], "int8"),
    ):
        assert_one_line_error(cli("bench", "--pool", pool, *args), needle)
    assert_one_line_error(cli("export", f"{pool}:narrow", "--format", "pt2", "--int8", "--out", tmp_path / "e"), "onnx")
    assert_one_line_error(cli("kit", "--pool", pool, "--out", tmp_path / "k2", "--members", "nope"), "nope")
    assert not (pool / "reports").exists() and not (pool / "children").exists()
    assert not (tmp_path / "e").exists() and not (tmp_path / "k2").exists()
