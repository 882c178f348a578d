"""What the verbs share: argument groups, Lightning's flags passed through, tables."""

from __future__ import annotations

import argparse
import json
import sys

from learngene.core.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2."""

    def error(self, message: str):
        verb = self.prog.removeprefix("learngene").strip()
        raise UserError(f"{verb}: {message}" if verb else message)


def add_model_args(p: argparse.ArgumentParser, flag: str = "--ancestor", dest: str | None = None, help: str | None = None,
                   download: bool = True) -> None:
    """A model reference and the weights a timm name takes."""
    p.add_argument(flag, dest=dest, default=None, metavar="MODEL", help=help or (
        "embedded | embedded:animals | a timm name | local-dir:DIR or DIR | POOL:MEMBER (default: the embedded ancestor; "
        "deit_base_patch16_224 when --pretrained/--checkpoint is given)"))
    w = p.add_mutually_exclusive_group()
    w.add_argument("--pretrained", action="store_true", help="timm's pretrained weights, from its cache")
    w.add_argument("--checkpoint", metavar="FILE", help="weights file: .safetensors or a torch file (weights only)")
    if download:
        p.add_argument("--allow-download", action="store_true", help="let timm download pretrained weights (otherwise cache only)")


def add_pool_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool", default="pools/embedded", metavar="DIR", help="the pool (default: pools/embedded)")


def add_data_arg(p: argparse.ArgumentParser, help: str = "ImageFolder (default: the embedded digits)",
                 workers: bool = True) -> None:
    p.add_argument("--data", metavar="DIR", help=help)
    p.add_argument("--strict", action="store_true",
                   help="decode every image up front and refuse the first unreadable one (default: skip them with a count)")
    if workers:
        p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 0 embedded, up to 8 ImageFolder)")


def data_arg(ns: argparse.Namespace):
    """--data as the APIs take it: None (the embedded digits), or a source scanned now, so
    a bad folder is refused before any model is loaded."""
    if ns.data is None:
        return None
    from learngene.core.data import open_source

    return open_source(ns.data, strict=getattr(ns, "strict", False))


def add_device_args(p: argparse.ArgumentParser) -> None:
    """Where bench / target measure."""
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")


def add_runtime_args(p: argparse.ArgumentParser, many: bool, precision_default: str | None = "fp32") -> None:
    """The runtime(s) and precision(s) a member is measured or shipped in."""
    s = "s" if many else ""
    p.add_argument(f"--runtime{s}", dest="runtime", default="torch",
                   help="torch | onnxruntime" + (", comma separated" if many else "") + " (default torch)")
    p.add_argument(f"--precision{s}", dest="precision", default=precision_default,
                   help="fp32 | int8 (ONNX Runtime dynamic) | int8-static (QDQ, calibrated on training images)"
                   + (", comma separated" if many else "") + f" (default {precision_default or 'fp32'})")


def add_trainer_args(p: argparse.ArgumentParser) -> None:
    """Lightning's own flags, passed through (GPUs, several nodes, precision)."""
    g = p.add_argument_group("Lightning")
    g.add_argument("--accelerator", default="auto")
    g.add_argument("--devices", default="auto")
    g.add_argument("--strategy", default="auto")
    g.add_argument("--num-nodes", type=int, default=1)
    g.add_argument("--precision", default=None)


def trainer_args_from(ns: argparse.Namespace, label: str = "train"):
    from learngene.core.training import TrainerArgs

    devices = ns.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    # Progress bars only on a terminal (in a log file they are thousands of lines); a log
    # gets a line per epoch instead.
    tty = sys.stderr.isatty()
    return TrainerArgs(accelerator=ns.accelerator, devices=devices, strategy=ns.strategy, num_nodes=ns.num_nodes,
                       precision=ns.precision, progress=not ns.quiet and tty, log_lines=not ns.quiet and not tty,
                       label=label)


def progress_on(ns: argparse.Namespace) -> bool:
    """A bar when a person watches (a terminal), never in JSON output or a log."""
    return not ns.quiet and not getattr(ns, "json", False) and sys.stderr.isatty()


def say(ns: argparse.Namespace):
    """Stage lines on stderr (a log gets one line per stage), silent with -q or --json."""
    if ns.quiet or getattr(ns, "json", False):
        return lambda m: None
    return lambda m: print(m, file=sys.stderr, flush=True)


def print_table(rows: list[dict], cols: list[str], as_json: bool, mark: str | set | None = None) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return

    def cell(v):
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)

    widths = {c: max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in cols}
    print("  " + "  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        flag = "  " if mark is None else "* " if (r.get("id") in mark if isinstance(mark, set) else r.get("id") == mark) else "  "
        print(flag + "  ".join(cell(r.get(c)).ljust(widths[c]) for c in cols))


def print_facts(info: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2))
        return
    width = max(len(k) for k in info)
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")
