"""Subcommands that hand their whole argument list to another part of qqconn.

``qqconn fake-gateway ARGS`` runs ``qqconn.testing.serve.main(ARGS)``; ``qqconn serve ARGS``
runs ``qqconn.webhook.cli.main(ARGS)``. Such a target may be
absent from an installation (or not written yet): then the subcommand says so in one line and
exits 2, instead of a traceback. :data:`DELEGATED` is the one place that lists them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qqconn.cli.options import EXIT_USAGE

__all__ = ["DELEGATED", "Delegated", "add_parsers", "run_delegated"]


@dataclass(frozen=True, slots=True)
class Delegated:
    """A subcommand whose arguments all go to ``module.main(argv) -> int``."""

    name: str
    module: str
    help: str


#: Every delegated subcommand: name, the module whose ``main(argv)`` runs it, its help line.
#: To add one (``qqconn serve``, say), add a row here; nothing else needs to change.
DELEGATED: dict[str, Delegated] = {
    d.name: d
    for d in (
        Delegated(
            "fake-gateway",
            "qqconn.testing.serve",
            "run the fake QQ gateway on loopback, for trying a bot or adapter without QQ "
            "(arguments go to it: qqconn fake-gateway --help)",
        ),
        Delegated(
            "serve",
            "qqconn.webhook.cli",
            "receive events over QQ's webhook (HTTP callback) transport under uvicorn "
            "(arguments go to it: qqconn serve --help; needs qqconn[webhook])",
        ),
    )
}


def add_parsers(sub: Any) -> None:
    """List the delegated subcommands in ``qqconn --help`` (their arguments are their own)."""
    for d in DELEGATED.values():
        sub.add_parser(d.name, help=d.help, add_help=False)


def run_delegated(name: str, argv: Sequence[str]) -> int:
    """Run delegated subcommand ``name`` with ``argv``; exit 2 in one line if it is missing."""
    d = DELEGATED[name]
    try:
        module = importlib.import_module(d.module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if d.module == missing or d.module.startswith(missing + "."):
            print(
                f"qqconn {name}: not available in this installation ({d.module} is missing)",
                file=sys.stderr,
            )
        else:
            print(
                f"qqconn {name}: needs the Python package {missing!r}, which is not installed "
                f"(pip install {missing.split('.')[0]})",
                file=sys.stderr,
            )
        return EXIT_USAGE
    entry = getattr(module, "main", None)
    if not callable(entry):
        print(
            f"qqconn {name}: not available in this installation ({d.module} has no main())",
            file=sys.stderr,
        )
        return EXIT_USAGE
    status = entry(list(argv))
    return status if isinstance(status, int) else 0
