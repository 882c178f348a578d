"""MkDocs hook: a verb page's ``<!-- flags: VERB -->`` becomes that verb's ``--help``, as the
installed CLI prints it, so a page's flags never drift from the parser."""

import contextlib
import io
import re

MARK = re.compile(r"<!-- flags: ([a-z-]+) -->")


def _help(verb: str) -> str:
    from learngene.cli import build_parser

    parser = build_parser([verb])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        parser.parse_args([verb, "--help"])
    return out.getvalue().rstrip()


def on_page_markdown(markdown, page, config, files):
    return MARK.sub(lambda m: "```text\n" + _help(m.group(1)) + "\n```", markdown)
