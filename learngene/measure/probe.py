#!/usr/bin/env python3
"""probe.py: measure a learngene device kit on the device itself.

Needs only Python 3.9+, numpy and onnxruntime (no torch, no timm, no learngene). Copy the kit
folder to the device and run, in that folder:

    python probe.py [--threads N] [--providers CPUExecutionProvider] [--batch-sizes 1,8]
                    [--name pi4] [--out latency.json]

It checks every file of the kit against the sha256 in kit.json, times every member with ONNX
Runtime (warm-up excluded; interleaved rounds, so a busy spell lands on every member alike:
median, p90, the spread, images/s, the file's size), records the device (CPU model,
cores, threads used, OS, ONNX Runtime version and providers) and writes latency.json, which
`learngene target --latency-file latency.json --max-latency-ms X` reads back on the host.

Its timing harness is probe_harness.py beside it (in the kit as in learngene): `learngene
bench` times members with the same `time_interleaved`, so a device's figures and the host's
are measured the same way.
Exit codes: 0 ok, 2 bad input (a file missing or edited, a bad flag), 130 / 143 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__:  # learngene.measure.probe, inside the package
    from learngene.measure.probe_harness import (  # noqa: F401  (WIDE_SPREAD: target's rule too)
        WIDE_SPREAD,
        file_sha256,
        load_average,
        machine,
        time_interleaved,
        timing_warnings,
    )
else:  # probe.py run in a kit: probe_harness.py lies beside it
    try:
        from probe_harness import file_sha256, load_average, machine, time_interleaved, timing_warnings
    except ImportError as e:
        sys.exit(f"probe.py: error: probe_harness.py is missing beside probe.py (copy the whole kit): {e}")

LATENCY_FORMAT = "learngene-latency"
KIT_FORMAT = "learngene-kit"


class ProbeError(Exception):
    """Bad input: one line, exit 2."""


# --------------------------------------------------------------------------- the probe

MAX_KIT_JSON = 16 << 20  # bytes: a kit.json is a few KB
MAX_BATCH = 4096
MAX_SIDE = 4096
MAX_BATCH_VALUES = 1 << 28  # values in one timed batch (1 GiB of float32)
MAX_MEMBERS = 10_000


def _json(path: Path, what: str):
    try:
        if path.stat().st_size > MAX_KIT_JSON:
            raise ProbeError(f"{path} is too large to be a {what}")
        return json.loads(path.read_text())
    except OSError as e:
        raise ProbeError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ProbeError(f"{path} is not text (not a {what})") from None
    except json.JSONDecodeError as e:
        raise ProbeError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}") from None
    except (RecursionError, ValueError):
        raise ProbeError(f"{path} is nested too deeply or holds numbers too long to be a {what}") from None


def _positive_int(v, where: str, high: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high:
        raise ProbeError(f"{where} must be an integer from 1 to {high}, got {str(v)[:40]!r}")
    return v


def read_kit(folder: Path) -> dict:
    """kit.json, every field probe uses checked (a kit is copied around: it is untrusted),
    and every file checked against its sha256."""
    f = folder / "kit.json"
    if not f.is_file():
        raise ProbeError(f"not a learngene kit (no kit.json): {folder}")
    kit = _json(f, "kit manifest")
    if not isinstance(kit, dict) or kit.get("format") != KIT_FORMAT or not isinstance(kit.get("members"), list):
        raise ProbeError(f"{f} is not a learngene kit manifest")
    if not kit["members"] or len(kit["members"]) > MAX_MEMBERS:
        raise ProbeError(f"{f} lists {len(kit['members'])} members (1 to {MAX_MEMBERS})")
    inp = kit.get("input")
    if not isinstance(inp, dict) or not isinstance(inp.get("shape"), list) or len(inp["shape"]) != 3:
        raise ProbeError(f"{f}: input.shape is not [channels, height, width]")
    for i, d in enumerate(inp["shape"]):
        _positive_int(d, f"{f}: input.shape[{i}]", MAX_SIDE)
    sizes = kit.get("batch_sizes", [1])
    if not isinstance(sizes, list) or not sizes:
        raise ProbeError(f"{f}: batch_sizes is not a list of batch sizes")
    for b in sizes:
        _positive_int(b, f"{f}: batch_sizes", MAX_BATCH)
    for i, m in enumerate(kit["members"]):
        if not isinstance(m, dict):
            raise ProbeError(f"{f}: members[{i}] is not an object")
        name = m.get("file")
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", "..") or "\x00" in name:
            raise ProbeError(f"kit.json names a file outside the kit: {str(name)[:80]!r}")
        if not isinstance(m.get("id"), str) or not isinstance(m.get("precision"), str):
            raise ProbeError(f"{f}: members[{i}] has no id and precision")
        path = folder / name
        if not path.is_file() or path.is_symlink():
            raise ProbeError(f"kit file missing: {path}")
        if file_sha256(path) != m.get("sha256"):
            raise ProbeError(f"kit file edited or corrupt (sha256 differs from kit.json): {path}")
    for name, key in (("probe.py", "probe_sha256"), ("probe_harness.py", "harness_sha256")):
        if (folder / name).is_file() and file_sha256(folder / name) != kit.get(key):
            raise ProbeError(f"kit file edited or corrupt (sha256 differs from kit.json): {folder / name}")
    return kit


def _session(ort, path: Path, so, providers):
    """An ONNX Runtime session of a kit file, any failure one line naming the file (not an
    ONNX model, external data outside the kit, an operator this runtime lacks)."""
    try:
        sess = ort.InferenceSession(str(path), so, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
        raise ProbeError(f"kit file {path} cannot be loaded by ONNX Runtime: {first}") from None
    inputs = sess.get_inputs()
    if len(inputs) != 1 or not inputs[0].name:
        raise ProbeError(f"kit file {path} has {len(inputs)} inputs: a kit member takes one batch of images")
    return sess


def _run(sess, name, x, path):
    try:
        return sess.run(None, {name: x})
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
        raise ProbeError(f"kit file {path} fails to run on a batch of {len(x)}: {first}") from None


def probe(
    folder: Path,
    threads: int | None,
    providers: list[str],
    batch_sizes: list[int],
    min_run_time: float,
    name: str | None,
) -> dict:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ProbeError("onnxruntime is not installed: pip install onnxruntime numpy") from None
    kit = read_kit(folder)
    threads = threads or os.cpu_count() or 1
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise ProbeError(
            f"provider {missing[0]} is not available here (have: {', '.join(ort.get_available_providers())})"
        )
    shape = kit["input"]["shape"]
    per_image = shape[0] * shape[1] * shape[2]
    for bs in batch_sizes:
        if bs * per_image > MAX_BATCH_VALUES:
            raise ProbeError(
                f"a batch of {bs} images of {'x'.join(map(str, shape))} is {bs * per_image * 4 / 2**30:.1f} GiB: "
                f"at most {MAX_BATCH_VALUES * 4 / 2**30:.0f} GiB per timed batch"
            )
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    sessions, files = {}, {}  # "id precision" -> session, file
    for m in kit["members"]:
        key = f"{m['id']} {m['precision']}"
        files[key] = folder / m["file"]
        sessions[key] = _session(ort, files[key], so, providers)
    rows, warns = [], []
    rng = np.random.default_rng(0)
    for bs in batch_sizes:
        x = rng.standard_normal((bs, *shape)).astype(
            np.float32
        )  # normalised images: latency does not depend on the values
        for key, sess in sessions.items():
            _run(sess, sess.get_inputs()[0].name, x, files[key])  # a file that cannot run fails here, in one line
        fns = {key: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x})) for key, s in sessions.items()}
        load0 = load_average()
        stats = time_interleaved(fns, min_run_time=min_run_time)
        warns += [f"batch {bs}: {w}" for w in timing_warnings(stats, load0, load_average(), threads)]
        for key, st in stats.items():
            mid, prec = key.rsplit(" ", 1)
            rows.append(
                {
                    "id": mid,
                    "precision": prec,
                    "batch_size": bs,
                    "median_ms": st["median_s"] * 1e3,
                    "p90_ms": st["p90_s"] * 1e3,
                    "p10_ms": st["p10_s"] * 1e3,
                    "spread": st["spread"],
                    "images_per_s": bs / st["median_s"],
                    "samples": st["samples"],
                    "file_mib": files[key].stat().st_size / 2**20,
                }
            )
    dev = machine()
    return {
        "format": LATENCY_FORMAT,
        "version": 1,
        "kit": {k: kit.get(k) for k in ("pool", "pool_revision", "revision_files", "ancestor_sha256")}
        | {"kit_sha256": file_sha256(folder / "kit.json")},
        "device": {
            **dev,
            "name": name or dev["node"] or "device",
            "threads": threads,
            "providers": providers,
            "onnxruntime": ort.__version__,
        },
        "min_run_time_s": min_run_time,
        "rows": rows,
        "warnings": warns,
        "members": kit["members"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def table(res: dict) -> list[str]:
    """The per-member lines probe prints: each member's median and p90 at each batch size."""
    lines = [
        f"{'member':<16} {'precision':<11} {'batch':>5} {'median ms':>10} {'p90 ms':>9} {'spread':>7} {'images/s':>10}"
    ]
    for r in sorted(res["rows"], key=lambda r: (r["batch_size"], r["median_ms"])):
        lines.append(
            f"{r['id']:<16} {r['precision']:<11} {r['batch_size']:>5} {r['median_ms']:>10.3f} {r['p90_ms']:>9.3f} "
            f"{r['spread']:>6.0%} {r['images_per_s']:>10.1f}"
        )
    return lines


def _write(out: Path, res: dict) -> None:
    if not out.parent.is_dir():
        raise ProbeError(f"--out {out}: the folder {out.parent} does not exist")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(res, indent=2))
        os.replace(tmp, out)
    except OSError as e:
        raise ProbeError(f"cannot write {out}: {e.strerror}") from None
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def main(argv=None) -> int:
    import argparse
    import signal

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise ProbeError(message)

    def interrupted(signum, frame):
        raise KeyboardInterrupt(signum)

    signal.signal(signal.SIGTERM, interrupted)
    ap = Parser(prog="probe.py", description="time a learngene kit's members on this device (needs onnxruntime, numpy)")
    ap.add_argument("--kit", default=str(Path(__file__).resolve().parent), help="the kit folder (default: this file's)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
    ap.add_argument("--providers", default="CPUExecutionProvider", help="execution providers, comma separated")
    ap.add_argument("--batch-sizes", default=None, help="default: the kit's")
    ap.add_argument("--min-run-time", type=float, default=0.3, help="seconds of timing per member and batch size")
    ap.add_argument("--name", default=None, help="a name for this device in pick names (default: the host name)")
    ap.add_argument("--out", default="latency.json", help="where to write the measurements (default latency.json)")
    try:
        a = ap.parse_args(argv)
        cores = os.cpu_count() or 1
        if a.threads is not None and not 1 <= a.threads <= cores:
            raise ProbeError(f"--threads must be from 1 to the {cores} cores of this device, got {a.threads}")
        if not 0 < a.min_run_time <= 600:
            raise ProbeError(f"--min-run-time must be in (0, 600] seconds, got {a.min_run_time}")
        if a.name is not None and not 0 < len(a.name) <= 64:
            raise ProbeError("--name must be 1 to 64 characters")
        sizes = None
        if a.batch_sizes:
            try:
                sizes = [int(b) for b in a.batch_sizes.split(",")]
            except ValueError:
                raise ProbeError(f"--batch-sizes must be positive integers like 1,8, got {a.batch_sizes!r}") from None
            for b in sizes:
                _positive_int(b, "--batch-sizes", MAX_BATCH)
        folder = Path(a.kit)
        kit = read_kit(folder)
        sizes = sizes or kit.get("batch_sizes", [1])
        res = probe(folder, a.threads, [p for p in a.providers.split(",") if p], sizes, a.min_run_time, a.name)
        out = Path(a.out)
        _write(out, res)
    except ProbeError as e:
        print(f"probe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("probe: interrupted", file=sys.stderr)
        return 128 + (e.args[0] if e.args and isinstance(e.args[0], int) else 2)
    except MemoryError:
        print("probe: error: out of memory (lower --batch-sizes or --threads)", file=sys.stderr)
        return 2
    d = res["device"]
    n = len({m["id"] for m in res["members"]})
    for line in table(res):
        print(line)
    print(
        f"{n} members x {len({m['precision'] for m in res['members']})} precisions x {len(sizes)} batch sizes timed on "
        f"{d['cpu']} ({d['threads']} threads, onnxruntime {d['onnxruntime']}) -> {out}"
    )
    for w in res["warnings"]:
        print(f"warning: {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
