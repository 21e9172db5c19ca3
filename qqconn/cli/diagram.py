"""``qqconn diagram``: the connection machine's statechart, rendered from the table that runs it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from qqconn.cli.options import EXIT_NOT_ALIVE, EXIT_OK, UsageError

__all__ = ["add_parser", "cmd_diagram"]


def add_parser(sub: Any) -> None:
    """Add ``diagram`` to the subcommands."""
    diagram = sub.add_parser(
        "diagram",
        help="write the connection machine's statechart (mermaid, dot or svg)",
        description="Render the state machine's chart from the very table that runs it.",
        allow_abbrev=False,
    )
    diagram.add_argument("--format", choices=("mermaid", "dot", "svg"), default="mermaid")
    diagram.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    diagram.set_defaults(func=cmd_diagram)


def cmd_diagram(args: argparse.Namespace) -> int:
    """``qqconn diagram``: exit 0, or 1 when the format needs Graphviz and it is missing."""
    from qqconn import statecharts

    try:
        text = statecharts.render(args.format)
    except statecharts.GraphvizUnavailable as exc:
        print(f"qqconn diagram: {exc}", file=sys.stderr)
        return EXIT_NOT_ALIVE
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8", newline="\n")
        except OSError as exc:
            raise UsageError(f"-o {args.output}: cannot write: {exc.strerror or exc}") from None
    else:
        sys.stdout.write(text)
    return EXIT_OK
