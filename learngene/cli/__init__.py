"""`learngene <verb>`: the command line, one module per verb over the Python API.

Each verb module has ``HELP``, ``add_arguments(parser)`` and ``run(ns) -> int``; it parses,
calls the API, prints. A new verb is one module and one line of `VERBS`.

Exit codes: 0 ok, 2 bad input (one line on stderr, no traceback), 1 internal error
(LEARNGENE_DEBUG=1 shows the traceback), 130 / 143 interrupted by SIGINT / SIGTERM.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

from learngene.cli.common import Parser
from learngene.core.errors import CheckFailed, Interrupted, UserError
from learngene.core.io import WRITE_ERRORS

# verb -> module in learngene.cli (imported only when the verb runs or its help is built)
VERBS = {
    "ancestor": "ancestor",
    "build-pool": "build_pool",
    "pool": "pool",
    "assemble": "assemble",
    "bench": "bench",
    "target": "target",
    "export": "export",
    "kit": "kit",
    "grow": "grow",
    "adapt": "adapt",
    "serve": "serve",
}


DOCS = "docs"  # every verb has its page, docs/VERB.md


def verb_module(verb: str):
    return importlib.import_module(f"learngene.cli.{VERBS[verb]}")


def build_parser(verbs=None) -> Parser:
    from learngene.core import __version__

    parser = Parser(
        prog="learngene",
        description="Turn one pretrained ViT into a zoo of variable-sized models (Learngene Pool).",
        epilog=f"Run `learngene VERB --help` for a verb's options. docs: {DOCS}/index.md",
    )
    parser.add_argument("--version", action="version", version=f"learngene {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    for verb in verbs or VERBS:
        mod = verb_module(verb)
        sp = sub.add_parser(
            verb,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            epilog=f"docs: {DOCS}/{verb}.md",  # the page in the repository (mkdocs builds the site from it)
        )
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars or stage lines")
        mod.add_arguments(sp)
    return parser


def run(argv: list[str] | None = None) -> int:
    import logging

    # torch.utils.benchmark / torch.export import cpp_extension, which warns about a missing
    # CUDA toolkit on CPU machines: noise that would break "one line on error"
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    # only the verb at hand is imported (its help needs no other verb's imports)
    parser = build_parser([verb] if verb in VERBS else None)
    ns, unknown = parser.parse_known_args(argv)
    if ns.verb is None and not unknown:
        parser.print_help()
        return 0
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return verb_module(ns.verb).run(ns)


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def _internal(e: Exception) -> int:
    """Anything else is our bug, not the user's input: one line (the traceback with
    LEARNGENE_DEBUG=1), exit 1."""
    if os.environ.get("LEARNGENE_DEBUG"):
        raise e
    first = (str(e).strip().splitlines() or [""])[0][:200]
    print(
        f"learngene: internal error: {type(e).__name__}: {first} (LEARNGENE_DEBUG=1 shows the traceback)",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupted)
    try:
        code = run(argv)
    except UserError as e:
        print(f"learngene: error: {e}", file=sys.stderr)
        code = 2
    except CheckFailed as e:  # something learngene made failed its own check: nothing was written
        print(f"learngene: error: {e}", file=sys.stderr)
        code = 1
    except (Interrupted, KeyboardInterrupt) as e:
        print("learngene: interrupted", file=sys.stderr)
        code = e.exit_code if isinstance(e, Interrupted) else 130
    except OSError as e:
        if e.errno in WRITE_ERRORS:  # a full disk, a read-only folder, no permission: the machine's state
            print(f"learngene: error: cannot write {e.filename or 'a file'}: {e.strerror}", file=sys.stderr)
            code = 2
        else:
            code = _internal(e)
    except Exception as e:
        from learngene.core.io import _errno_in

        errno_ = _errno_in(str(e))
        if errno_ is not None:  # a library's own error for a full disk or a read-only folder
            print(
                f"learngene: error: cannot write a file: {os.strerror(errno_)} "
                f"({type(e).__name__}: {str(e).strip().splitlines()[0][:120]})",
                file=sys.stderr,
            )
            code = 2
        else:
            code = _internal(e)
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
