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


class Deprecated(argparse.Action):
    """An old spelling kept for a release: it still works, and says once what replaces it."""

    def __init__(self, option_strings, dest, new: str = "", **kw):
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"learngene: warning: {option_string} is deprecated here; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_model_args(
    p: argparse.ArgumentParser,
    flag: str = "--ancestor",
    dest: str | None = None,
    help: str | None = None,
    download: bool = True,
    aliases: tuple[str, ...] = ("--model",),
) -> None:
    """A model reference and the weights a timm name takes. ``--model`` names the model a
    verb works on in every verb (here an alias of ``flag``)."""
    p.add_argument(
        flag,
        *[a for a in aliases if a != flag],
        dest=dest or flag.lstrip("-").replace("-", "_"),
        default=None,
        metavar="MODEL",
        help=help
        or (
            "embedded | embedded:animals | a timm name | local-dir:DIR or DIR | POOL:MEMBER (default: the embedded "
            "ancestor; deit_base_patch16_224 when --pretrained/--checkpoint is given)"
        ),
    )
    w = p.add_mutually_exclusive_group()
    w.add_argument("--pretrained", action="store_true", help="timm's pretrained weights, from its cache")
    w.add_argument("--checkpoint", metavar="FILE", help="weights file: .safetensors or a torch file (weights only)")
    if download:
        p.add_argument(
            "--allow-download", action="store_true", help="let timm download pretrained weights (otherwise cache only)"
        )


def add_pool_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool", default="pools/embedded", metavar="DIR", help="the pool (default: pools/embedded)")


def add_data_arg(
    p: argparse.ArgumentParser, help: str = "ImageFolder (default: the embedded digits)", workers: bool = True
) -> None:
    p.add_argument("--data", metavar="DIR", help=help)
    p.add_argument(
        "--strict",
        action="store_true",
        help="decode every image up front and refuse the first unreadable one (default: skip them with a count)",
    )
    if workers:
        p.add_argument(
            "--workers",
            type=int,
            default=None,
            help="DataLoader workers (default: 0 for embedded data, else half the cores, at most 8)",
        )


def data_arg(ns: argparse.Namespace):
    """--data as the APIs take it: None (the embedded digits), or a source scanned now, so
    a bad folder is refused before any model is loaded."""
    if ns.data is None:
        return None
    from learngene.core.data import open_source

    return open_source(ns.data, strict=getattr(ns, "strict", False))


def add_threads_arg(p: argparse.ArgumentParser, what: str = "torch intra-op threads") -> None:
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"{what} (default: the cores, less the DataLoader workers; at most the cores)",
    )


def add_device_args(p: argparse.ArgumentParser) -> None:
    """Where bench / target measure."""
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    add_threads_arg(p)


# One spelling for the runtime / precision a member runs in, in every verb: `--runtime` and
# `--precision` (fp32 | int8 | int8-static), comma lists where a verb measures several; the
# plural spellings are aliases. Lightning's training precision is `--train-precision`.
PRECISION_HELP = "fp32 | int8 (ONNX Runtime dynamic) | int8-static (QDQ, calibrated on training images)"


def add_runtime_args(p: argparse.ArgumentParser, many: bool, precision_default: str | None = "fp32") -> None:
    """The runtime(s) and precision(s) a member is measured or shipped in."""
    lst = ", comma separated" if many else ""
    p.add_argument(
        "--runtime", "--runtimes", dest="runtime", default="torch", help=f"torch | onnxruntime{lst} (default torch)"
    )
    p.add_argument(
        "--precision",
        "--precisions",
        dest="precision",
        default=precision_default,
        help=f"{PRECISION_HELP}{lst} (default {precision_default or 'fp32'})",
    )


class PrecisionEither(argparse.Action):
    """``--precision`` in a verb that both trains and exports (assemble): fp32 / int8 /
    int8-static is the export precision, as in every other verb; anything else (bf16-mixed,
    16-mixed, 32-true) is Lightning's training precision, the old meaning, said once."""

    def __call__(self, parser, namespace, values, option_string=None):
        from learngene.core.registries import PRECISIONS

        if values in PRECISIONS:
            namespace.export_precision = values
        else:
            print(
                "learngene: warning: --precision for Lightning's training precision is deprecated; "
                "use --train-precision",
                file=sys.stderr,
            )
            namespace.train_precision = values


def add_trainer_args(p: argparse.ArgumentParser, precision_alias: bool | str = True) -> None:
    """Lightning's own flags, passed through (GPUs, several nodes, precision), and the cores."""
    g = p.add_argument_group("Lightning")
    g.add_argument("--accelerator", default="auto", help="auto | cpu | gpu | ... (default auto)")
    g.add_argument("--devices", default="auto")
    g.add_argument("--strategy", default="auto")
    g.add_argument("--num-nodes", type=int, default=1)
    g.add_argument(
        "--train-precision",
        dest="train_precision",
        default=None,
        help="Lightning's training precision (32-true, bf16-mixed, 16-mixed)",
    )
    if precision_alias == "either":
        g.add_argument("--precision", dest="export_precision", action=PrecisionEither, help=argparse.SUPPRESS)
    elif precision_alias:  # the old spelling, where --precision does not mean fp32/int8
        g.add_argument(
            "--precision", dest="train_precision", action=Deprecated, new="--train-precision", help=argparse.SUPPRESS
        )
    add_threads_arg(g)


def trainer_args_from(ns: argparse.Namespace, label: str = "train"):
    from learngene.core import limits
    from learngene.core.training import TrainerArgs, check_accelerator

    check_accelerator(ns.accelerator)

    devices = ns.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = limits.int_in(devices, "--devices", 1, 4096)
    limits.int_in(ns.num_nodes, "--num-nodes", 1, 4096)
    # Progress bars only on a terminal (in a log file they are thousands of lines); a log
    # gets a line per epoch instead.
    tty = sys.stderr.isatty()
    return TrainerArgs(
        accelerator=ns.accelerator,
        devices=devices,
        strategy=ns.strategy,
        num_nodes=ns.num_nodes,
        precision=ns.train_precision,
        progress=not ns.quiet and tty,
        log_lines=not ns.quiet and not tty,
        label=label,
        threads=limits.threads(getattr(ns, "threads", None)),
    )


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
        flag = (
            "  "
            if mark is None
            else "* "
            if (r.get("id") in mark if isinstance(mark, set) else r.get("id") == mark)
            else "  "
        )
        print(flag + "  ".join(cell(r.get(c)).ljust(widths[c]) for c in cols))


def print_facts(info: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2))
        return
    width = max(len(k) for k in info)
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")


def call(fn, ns, *args, **given):
    """Run the API verb ``fn`` as the flags ask: its typed request built from them
    (`Request.from_flags`: ``given`` first, else the flag of each field's name, else its
    default), checked, and run. ``data`` comes from --data (scanned now, `data_arg`) and
    ``trainer_args`` from Lightning's flags, where the verb has them; so a verb's module names
    only what differs between its flags and the API (``model=ns.ancestor``, the progress)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(fn.Request)}
    if "data" in fields and "data" in vars(ns):
        given.setdefault("data", data_arg(ns))
    if "trainer_args" in fields and "accelerator" in vars(ns):
        given.setdefault("trainer_args", trainer_args_from(ns, fn.__name__.replace("_", "-")))
    return fn.Request.from_flags(ns, *args, **given).run()
