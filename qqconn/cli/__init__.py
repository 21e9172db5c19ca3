"""The ``qqconn`` command: ``demo``, ``run``, ``status``, ``diagram`` and ``fake-gateway``.

One module per command (:mod:`~qqconn.cli.run`, :mod:`~qqconn.cli.status`,
:mod:`~qqconn.cli.demo`, :mod:`~qqconn.cli.diagram`, and :mod:`~qqconn.cli.delegate` for
commands that hand their arguments to another part of qqconn), plus what they share: exit
statuses and option parsers (:mod:`~qqconn.cli.options`), the client secret
(:mod:`~qqconn.cli.secrets`), path checks (:mod:`~qqconn.cli.paths`), the event output
(:mod:`~qqconn.cli.output`) and logging (:mod:`~qqconn.cli.logs`).

The library never configures logging; this package does, for ``run`` (structlog to stderr,
console or JSON lines) and for ``demo`` (the live view). Heavy imports (the driver, websockets,
httpx, the fake gateway, the statecharts) happen inside the subcommand that needs them, so
``qqconn status`` stays cheap enough for a health probe.

Exit statuses of ``run`` (the contract a supervisor relies on):

* 0  — stopped by SIGINT/SIGTERM (state ``stopped``);
* 75 — FATAL, retryable (EX_TEMPFAIL): the reconnect budget or the quick-drop limit was spent;
* 78 — FATAL, not retryable (EX_CONFIG): banned/offline bot, bad shard or intents, credentials
  refused again after a token refresh;
* 2  — usage or configuration error, found before anything connects (one line on stderr naming
  the option and what to do);
* 1  — stdout was closed by its reader (the manager is stopped cleanly first).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from qqconn.checkpoint import Health
from qqconn.cli import delegate, demo, diagram, run, status
from qqconn.cli.delegate import DELEGATED
from qqconn.cli.logs import configure_logging
from qqconn.cli.options import (
    DEFAULT_STATE_REFRESH_S,
    EXIT_FATAL_PERMANENT,
    EXIT_FATAL_RETRYABLE,
    EXIT_NOT_ALIVE,
    EXIT_OK,
    EXIT_STDOUT_CLOSED,
    EXIT_USAGE,
    HELP_API_BASE,
    HELP_TOKEN_URL,
    Parser,
    UsageError,
    load_policy,
)
from qqconn.cli.output import output_checkpoint
from qqconn.cli.run import RunOptions, run_options
from qqconn.cli.secrets import ENV_SECRET, refuse_secret_flags
from qqconn.cli.status import read_health

__all__ = [
    "DEFAULT_STATE_REFRESH_S",
    "ENV_SECRET",
    "EXIT_FATAL_PERMANENT",
    "EXIT_FATAL_RETRYABLE",
    "EXIT_NOT_ALIVE",
    "EXIT_OK",
    "EXIT_STDOUT_CLOSED",
    "EXIT_USAGE",
    "HELP_API_BASE",
    "HELP_TOKEN_URL",
    "Health",
    "RunOptions",
    "UsageError",
    "build_parser",
    "configure_logging",
    "load_policy",
    "main",
    "output_checkpoint",
    "read_health",
    "run_options",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``qqconn`` command line; return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        refuse_secret_flags(args_list)
        if args_list and args_list[0] in DELEGATED:
            return delegate.run_delegated(args_list[0], args_list[1:])
        args = build_parser().parse_args(args_list)
        command: Callable[[argparse.Namespace], int] = args.func
        return command(args)
    except UsageError as exc:
        print(f"qqconn: {exc}" if not str(exc).startswith("qqconn") else str(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`qqconn demo | head`): stop quietly, as `cat` would.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_STDOUT_CLOSED


def build_parser() -> argparse.ArgumentParser:
    """The ``qqconn`` parser: one subcommand per module (delegated ones parse for themselves)."""
    parser = Parser(
        prog="qqconn",
        description="Keeps a QQ Bot gateway connection alive, and says when it cannot.",
        allow_abbrev=False,  # else "--secret X" would silently mean "--secret-file X"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, run, status, diagram):
        module.add_parser(sub)
    delegate.add_parsers(sub)
    return parser


#: Older names, kept for callers of the single-module CLI.
_build_parser = build_parser
