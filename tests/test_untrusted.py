"""Untrusted inputs from devices and caches: a latency file, a kit copied around, the ONNX
cache, a full disk, absurd numbers, a cleaner racing a writer. Every case is one line, exit 2,
naming the culprit, nothing written outside its folder, nothing half-written."""

import copy
import json
import os
import shutil
import stat
import subprocess
import sys

from helpers import assert_one_line_error, cli, copy_of, fresh_pool, write


def test_a_latency_file_never_steers_where_target_writes(device_kit, tmp_path):
    pool, _, lat = device_kit
    pool = copy_of(pool, tmp_path)
    for name in (str(tmp_path / "ESCAPED-abs"), "../../ESCAPED-rel", "..", "a/b\\c\x00d"):
        bad = copy.deepcopy(lat)
        bad["device"]["name"] = name
        r = cli(
            "target",
            "--pool",
            pool,
            "--latency-file",
            write(tmp_path, bad),
            "--max-latency-ms",
            "1000",
            "--json",
            "--force",
            "--format",
            "timm",
            "--no-train",
        )
        assert r.returncode == 0, r.stderr
        child = os.path.realpath(json.loads(r.stdout)["child"])
        assert os.path.dirname(child) == os.path.realpath(pool / "children"), child
    children = os.path.realpath(pool / "children")
    assert all(os.path.dirname(os.path.realpath(p)) == children for p in tmp_path.parent.rglob("ESCAPED*"))


def test_latency_files_are_validated(device_kit, tmp_path):
    pool, _, lat = device_kit

    def without(path, key):
        bad = copy.deepcopy(lat)
        obj = bad
        for k in path:
            obj = obj[k]
        del obj[key]
        return bad

    def with_(path, key, value):
        bad = copy.deepcopy(lat)
        obj = bad
        for k in path:
            obj = obj[k]
        obj[key] = value
        return bad

    ghost = copy.deepcopy(lat)
    ghost["rows"].append({**ghost["rows"][0], "id": "ghost"})
    cases = [
        (without([], "device"), "device"),
        (without(["rows", 0], "p90_ms"), "p90_ms"),
        (with_(["rows", 0], "p90_ms", "fast"), "p90_ms"),
        (with_(["rows", 0], "median_ms", -5), "median_ms"),
        (with_(["rows", 0], "batch_size", "8"), "batch_size"),
        (ghost, "ghost"),
        (with_(["device"], "threads", 10**9), "threads"),
        (with_(["members", 0], "sha256", "x"), "sha256"),
        ("[" * 10000 + "]" * 10000, "nested"),
        ([1, 2], "not a latency file"),
    ]
    for bad, needle in cases:
        r = cli("target", "--pool", pool, "--latency-file", write(tmp_path, bad), "--max-latency-ms", "1000")
        assert_one_line_error(r, needle)
    assert not (pool / "children").exists()


def _probe(kit, *args, cwd=None):
    return subprocess.run(
        [sys.executable, kit / "probe.py", *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_probe_on_a_bad_kit_is_one_line(device_kit, tmp_path):
    _, good, _ = device_kit

    def kit_with(edit=None, files=None):
        k = tmp_path / f"kit{len(list(tmp_path.glob('kit*')))}"
        shutil.copytree(good, k)
        meta = json.loads((k / "kit.json").read_text())
        if edit is not None:
            meta = edit(meta)
        if files:
            for name, data in files.items():
                (k / name).write_bytes(data)
                for m in meta["members"]:
                    if m["file"] == name:
                        m["sha256"] = __import__("hashlib").sha256(data).hexdigest()
        (k / "kit.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
        return k

    def members(meta, **change):
        for m in meta["members"]:
            m.update(change)
        return meta

    name = json.loads((good / "kit.json").read_text())["members"][0]["file"]
    cases = [
        (kit_with(lambda m: "{not json"), "not valid JSON"),
        (kit_with(lambda m: [m]), "not a learngene kit"),
        (kit_with(lambda m: {**m, "batch_sizes": ["8"]}), "batch_sizes"),
        (kit_with(lambda m: "[" * 5000 + "]" * 5000), "nested"),
        (kit_with(lambda m: {**m, "input": {**m["input"], "shape": [3, 40000, 40000]}}), "shape"),
        (kit_with(lambda m: {**m, "input": {**m["input"], "shape": [3, 4000, 4000]}, "batch_sizes": [4000]}), "GiB"),
        (kit_with(files={name: b"not an onnx model"}), name),
        (kit_with(files={name: (good / "probe.py").read_bytes()}), name),
        (kit_with(files={"probe_harness.py": (good / "probe_harness.py").read_bytes() + b"#"}), "probe_harness.py"),
        (kit_with(lambda m: members(m, file="../kit.json")), "outside the kit"),
        (kit_with(lambda m: {**m, "members": [{"file": name}]}), "id"),
    ]
    for kit, needle in cases:
        r = _probe(kit, "--threads", "1", "--min-run-time", "0.01", "--out", tmp_path / "out.json")
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert needle in r.stderr, (needle, r.stderr)
        assert not (tmp_path / "out.json").exists()
    # --out in a missing folder, or a read-only one
    r = _probe(good, "--threads", "1", "--min-run-time", "0.01", "--out", tmp_path / "missing" / "lat.json")
    assert r.returncode == 2 and "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        r = _probe(good, "--threads", "1", "--min-run-time", "0.01", "--out", ro / "lat.json")
        assert r.returncode == 2 and "cannot write" in r.stderr, r.stderr


def test_external_data_outside_the_kit_is_refused_in_one_line(device_kit, tmp_path):
    import onnx

    _, good, _ = device_kit
    kit = shutil.copytree(good, tmp_path / "kit")
    meta = json.loads((kit / "kit.json").read_text())
    m = meta["members"][0]
    model = onnx.load(kit / m["file"])
    onnx.save_model(
        model,
        kit / m["file"],
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.data",
        size_threshold=0,
    )
    shutil.move(kit / "weights.data", tmp_path / "outside.data")  # the weights now lie outside the kit
    model = onnx.load(kit / m["file"], load_external_data=False)
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "../outside.data"
    (kit / m["file"]).write_bytes(model.SerializeToString())
    m["sha256"] = __import__("hashlib").sha256((kit / m["file"]).read_bytes()).hexdigest()
    (kit / "kit.json").write_text(json.dumps(meta))
    r = _probe(kit, "--threads", "1", "--min-run-time", "0.01", "--out", tmp_path / "o.json")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and m["file"] in r.stderr, r.stderr


def test_a_broken_onnx_cache_entry_is_rebuilt(device_kit, tmp_path):
    from learngene.core.io import home

    pool, _, _ = device_kit
    cache = home() / "onnx"
    metas = [p for p in cache.glob("*px.json")]
    assert metas
    for p in metas:  # the record emptied, the file truncated
        p.write_text("")
    for p in cache.glob("*px.onnx"):
        p.write_bytes(p.read_bytes()[:100])
    r = cli("export", f"{pool}:narrow", "--out", tmp_path / "e", "--json")
    assert r.returncode == 0, r.stderr
    assert "ONNX cache entry" in r.stderr and "rebuilt" in r.stderr
    assert json.loads(r.stdout)["max_abs_diff"] < 1e-4
    r = cli(
        "bench",
        "--pool",
        pool,
        "--runtime",
        "onnxruntime",
        "--members",
        "narrow,wide",  # the two the kit cached (the others' files would be built afresh)
        "--batch-sizes",
        "1",
        "--min-run-time",
        "0.01",
        "--out",
        tmp_path / "rep",
        "-q",
    )
    assert r.returncode == 0, r.stderr


def test_a_full_disk_is_one_line_and_writes_nothing(setup_dir, tmp_path, monkeypatch):
    import safetensors.torch

    pool = fresh_pool(setup_dir, tmp_path)
    anc = f"local-dir:{setup_dir / 'anc'}"

    class SafetensorError(Exception):  # what safetensors raises (its Rust error type), same message
        pass

    def full(*a, **k):
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    cases = [
        ["grow", "--model", anc, "--method", "expand", "--embed-dim", "48", "--out", tmp_path / "g"],
        ["export", anc, "--format", "timm", "--out", tmp_path / "e"],
        ["assemble", "--pool", pool, "--descendant", "narrow", "--epochs", "0", "--format", "timm", "-q"],
    ]
    for args in cases:
        assert_one_line_error(cli(*args), "No space left on device")
    monkeypatch.undo()
    # torch.export's writer aborts the process on a full disk: refused before it writes
    import learngene.core.io as io

    monkeypatch.setattr(io.os, "statvfs", lambda p: os.statvfs_result((4096, 4096, 10, 0, 0, 10, 0, 0, 0, 255)))
    assert_one_line_error(cli("export", anc, "--format", "pt2", "--out", tmp_path / "e2"), "No space left on device")
    assert not any(p.exists() for p in (tmp_path / "g", tmp_path / "e", tmp_path / "e2"))
    assert not (pool / "children").exists() or not any(
        p for p in (pool / "children").iterdir() if not p.name.startswith(".")
    )
    assert not list(tmp_path.glob(".*partial"))


def test_outputs_that_name_no_folder_of_their_own(setup_dir, tmp_path, monkeypatch):
    anc = f"local-dir:{setup_dir / 'anc'}"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "keep.txt").write_text("mine")
    for out in (".", "..", "./", str(work)):
        assert_one_line_error(cli("export", anc, "--format", "timm", "--out", out, "--force"), "")
    assert (work / "keep.txt").read_text() == "mine"


def test_clean_leaves_a_live_writers_stage_alone(setup_dir, tmp_path):
    from learngene.core.io import staged_folder
    from learngene.pool import Pool

    pool = fresh_pool(setup_dir, tmp_path)
    (pool / "reports").mkdir()
    dead = pool / "reports" / ".old.x.partial"
    dead.mkdir()  # a killed writer's stage: no live owner
    with staged_folder(pool / "reports" / "live") as stage:
        (stage / "frontier.json").write_text("{}")
        gone = Pool.open(pool).clean()
        assert dead in gone and stage.exists()  # bench, still writing, keeps its stage
    assert (pool / "reports" / "live" / "frontier.json").is_file() and not dead.exists()
