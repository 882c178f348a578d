"""The rules of `target`: the budget (a frozen `Budget`), which report was measured here, what
a device's latency.json may hold, and the most accurate row within the budget. The flow
(measure if needed, finish the pick, export it) is `learngene.api.target`. torch-free."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from learngene.core import limits
from learngene.core.errors import UserError
from learngene.measure.probe import LATENCY_FORMAT, WIDE_SPREAD  # noqa: F401  (WIDE_SPREAD: target's rule too)

# Which latency a budget holds: the report's p90 by default. A pick whose median was just
# under the budget ran over it in a fresh measurement (benchmarks/bench.py: 1.002x); the
# p90 of the same samples keeps the margin that a fresh measurement's noise needs.
LATENCY_STATS = {"p90": "infer_step_time_p90", "median": "infer_step_time"}
MAX_LATENCY_MS = 1e7


@dataclass(frozen=True)
class Budget:
    """What a pick must fit: a latency per batch (``latency``: which statistic holds it),
    optionally an accuracy floor and a parameter ceiling."""

    max_latency_ms: float
    batch_size: int = 1
    latency: str = "p90"
    min_top1: float | None = None
    max_params: float | None = None

    def __post_init__(self):
        if self.max_latency_ms is None:
            raise UserError("--max-latency-ms is required: the latency budget per batch, in ms")
        object.__setattr__(
            self,
            "max_latency_ms",
            limits.float_in(self.max_latency_ms, "--max-latency-ms", 0.0, MAX_LATENCY_MS, low_open=True),
        )
        object.__setattr__(self, "batch_size", limits.batch_size(self.batch_size))
        if self.latency not in LATENCY_STATS:
            raise UserError(f"unknown --latency {self.latency!r} (choose from {', '.join(LATENCY_STATS)})")
        if self.min_top1 is not None:
            object.__setattr__(self, "min_top1", limits.float_in(self.min_top1, "--min-top1", 0.0, 100.0))
        if self.max_params is not None:
            object.__setattr__(
                self, "max_params", limits.float_in(self.max_params, "--max-params", 0.0, 1e13, low_open=True)
            )

    @property
    def column(self) -> str:
        return LATENCY_STATS[self.latency]

    def fits(self, r: dict) -> bool:
        return (
            r[self.column] <= self.max_latency_ms
            and (self.min_top1 is None or r["top1"] >= self.min_top1)
            and (self.max_params is None or r["param_count"] * 1e6 <= self.max_params)
        )

    def describe(self) -> str:
        return (
            f"--max-latency-ms {self.max_latency_ms:g}"
            + (f" --min-top1 {self.min_top1:g}" if self.min_top1 is not None else "")
            + (f" --max-params {self.max_params:g}" if self.max_params is not None else "")
        )


def latest_report(
    reports: Path, revision: str, device: str, device_name: str, threads: int, runtimes: dict | None = None
) -> Path | None:
    """The newest report in ``reports`` measured on this device with this thread count, of
    this pool revision (older weights measured differently) and, when ``runtimes`` is given,
    with the same runtime versions (another torch or ONNX Runtime times differently)."""
    found = []
    for f in Path(reports).glob("*/frontier.json"):
        if f.parent.name.startswith("."):  # a killed bench's staging folder is no report
            continue
        try:
            meta = json.loads(f.read_text())["meta"]
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            continue  # a foreign or broken file is not a report to trust
        if not isinstance(meta, dict):
            continue
        if (meta.get("device"), meta.get("device_name"), meta.get("threads"), meta.get("revision")) != (
            device,
            device_name,
            threads,
            revision,
        ):
            continue
        if meta.get("members"):  # `bench --members`: some members only, not the pool's frontier
            continue
        have = meta.get("runtimes") or {}
        if runtimes and any(have.get(k) != v for k, v in runtimes.items()):
            continue
        found.append((str(meta.get("created", "")), f.parent))
    return max(found)[1] if found else None


def pick(rows: list[dict], budget: Budget, *, wide_spread: float | None = None) -> tuple[dict, list[dict], list[str]]:
    """(the most accurate row within ``budget`` (ties: the faster), the two nearest
    alternatives, notes). Rows whose timing spread is above ``wide_spread`` are not trusted:
    they are not picked while another row fits, and the notes say which were passed over.
    Nothing fits: a UserError naming the closest options."""
    col = budget.column
    notes = []
    trusted = rows
    if wide_spread is not None:
        noisy = [r for r in rows if (r.get("infer_step_spread") or 0) > wide_spread]
        if noisy and len(noisy) < len(rows):
            trusted = [r for r in rows if r not in noisy]
            if any(budget.fits(r) for r in trusted):
                names = ", ".join(f"{r['model']} {r.get('precision', '')}".strip() for r in noisy[:4])
                notes.append(
                    f"passed over {len(noisy)} member(s) whose timing spread is over {wide_spread:.0%} "
                    f"({names}{' ...' if len(noisy) > 4 else ''}): rerun probe.py on a quiet device to use them"
                )
            else:
                trusted = rows
    ok = sorted((r for r in trusted if budget.fits(r)), key=lambda r: (-r["top1"], r[col]))
    over = sorted((r for r in rows if not budget.fits(r)), key=lambda r: r[col])
    if not ok:
        near = ", ".join(
            f"{r['model']} ({r[col]:.2f} ms {budget.latency}, top1 {r['top1']:.2f}%, {r['param_count']:.2f}M)"
            for r in over[:2]
        )
        raise UserError(f"no descendant fits {budget.describe()}; closest: {near}")
    best = ok[0]
    if (best.get("infer_step_spread") or 0) > (wide_spread or math.inf):
        notes.append(f"the pick's timing spread is {best['infer_step_spread']:.0%}: rerun probe.py on a quiet device")
    alts = ok[1:2] + [r for r in sorted(over, key=lambda r: -r["top1"]) if r["top1"] > best["top1"]][:1]
    return best, alts, notes


# --------------------------------------------------------------------------- latency files

HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_LATENCY_FILE = 64 << 20
MAX_ROWS = 100_000


def _fail(path, what: str):
    raise UserError(f"latency file {path}: {what}")


def _num(v, path, where, low=0.0, high=MAX_LATENCY_MS, low_open=True) -> float:
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        or not math.isfinite(v)
        or v > high
        or v < low
        or (low_open and v == low)
    ):
        _fail(path, f"{where} must be a finite number {'>' if low_open else '>='} {low:g} (and <= {high:g}), got {v!r}")
    return float(v)


def _int(v, path, where, low: int, high: int) -> int:
    """An integer of a file: a JSON integer, not a string that looks like one."""
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        _fail(path, f"{where} must be an integer from {low:,} to {high:,}, got {str(v)[:40]!r}")
    return v


def _str(v, path, where, pattern: re.Pattern | None = None, max_len: int = 256) -> str:
    if not isinstance(v, str) or len(v) > max_len or (pattern is not None and not pattern.fullmatch(v)):
        _fail(path, f"{where} is not {'a plain name' if pattern is not None else 'a short text'}: {str(v)[:60]!r}")
    return v


def validate_latency_file(lat, path, precisions=("fp32", "int8", "int8-static")) -> dict:
    """A latency.json from a device is untrusted input: every field a reader uses is checked
    here, in one line naming it (sizes and nesting are bounded by `read_latency_json`)."""
    from learngene.core.io import SAFE_NAME

    if not isinstance(lat, dict) or lat.get("format") != LATENCY_FORMAT:
        _fail(path, "not a latency file written by probe.py (no 'format': 'learngene-latency')")
    if not isinstance(lat.get("version"), int) or isinstance(lat.get("version"), bool) or lat["version"] != 1:
        _fail(path, f"version {lat.get('version')!r}: this learngene reads version 1")
    dev = lat.get("device")
    if not isinstance(dev, dict):
        _fail(path, "'device' is missing or not an object")
    _str(dev.get("name", ""), path, "device.name")
    _int(dev.get("threads"), path, "device.threads", 1, 4096)
    kit = lat.get("kit")
    if not isinstance(kit, dict):
        _fail(path, "'kit' is missing or not an object")
    _str(kit.get("pool_revision"), path, "kit.pool_revision", re.compile(r"r[0-9]{1,6}"))
    _str(kit.get("ancestor_sha256"), path, "kit.ancestor_sha256", HEX64)
    files = kit.get("revision_files")
    if (
        not isinstance(files, dict)
        or len(files) > 100_000
        or not all(
            isinstance(k, str) and len(k) < 512 and isinstance(v, str) and HEX64.fullmatch(v) for k, v in files.items()
        )
    ):
        _fail(path, "kit.revision_files is not a map of files to sha256s")
    rows, members = lat.get("rows"), lat.get("members")
    for name, items in (("rows", rows), ("members", members)):
        if not isinstance(items, list) or not items or len(items) > MAX_ROWS:
            _fail(path, f"'{name}' is missing, empty or not a list")
    keys = set()
    for i, m in enumerate(members):
        where = f"members[{i}]"
        if not isinstance(m, dict):
            _fail(path, f"{where} is not an object")
        _str(m.get("id"), path, f"{where}.id", SAFE_NAME)
        if m.get("precision") not in precisions:
            _fail(path, f"{where}.precision {m.get('precision')!r} is not one of {', '.join(precisions)}")
        _str(m.get("kind"), path, f"{where}.kind", SAFE_NAME)
        if not isinstance(m.get("trained", True), bool):
            _fail(path, f"{where}.trained is not true or false")
        _int(m.get("params"), path, f"{where}.params", 1, 10**13)
        _str(m.get("sha256"), path, f"{where}.sha256", HEX64)
        if m.get("weights_sha256") is not None:
            _str(m["weights_sha256"], path, f"{where}.weights_sha256", HEX64)
        keys.add((m["id"], m["precision"]))
    for i, r in enumerate(rows):
        where = f"rows[{i}]"
        if not isinstance(r, dict):
            _fail(path, f"{where} is not an object")
        _str(r.get("id"), path, f"{where}.id", SAFE_NAME)
        if (r.get("id"), r.get("precision")) not in keys:
            _fail(path, f"{where} times {r.get('id')!r} {r.get('precision')!r}, which the file's members lack")
        _int(r.get("batch_size"), path, f"{where}.batch_size", 1, limits.MAX_BATCH)
        for k in ("median_ms", "p90_ms"):
            _num(r.get(k), path, f"{where}.{k}")
        if r["p90_ms"] < r["median_ms"]:
            _fail(path, f"{where}: p90_ms {r['p90_ms']:g} is below median_ms {r['median_ms']:g}")
        if r.get("spread") is not None:
            _num(r["spread"], path, f"{where}.spread", 0.0, 1e6, low_open=False)
    return lat


def read_latency_json(path) -> dict:
    """A latency.json read with its size and nesting bounded (a device's file is untrusted)."""
    from learngene.core.localdir import read_json

    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise UserError(f"cannot read latency file {p}: {e.strerror}") from None
    if size > MAX_LATENCY_FILE:
        raise UserError(f"latency file {p} is {size:,} bytes: more than a probe writes ({MAX_LATENCY_FILE:,} at most)")
    return validate_latency_file(read_json(p, "latency file"), p)


def device_slug(name: str) -> str:
    """A device's name as one safe path component: a latency file comes from a device, and
    its ``device.name`` (``../../x``, ``/abs/path``) must never steer where target writes."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip(".-_")[:40].strip(".-_")
    return slug or "device"
