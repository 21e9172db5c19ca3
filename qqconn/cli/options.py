"""What every subcommand shares: exit statuses, the usage error, and option parsers.

Nothing here imports the driver, websockets or httpx: ``qqconn status`` must stay cheap enough
for a health probe, and ``--help`` must not pay for a connection it will never open.
"""

from __future__ import annotations

import argparse
import math
import os
import tomllib
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from qqconn.policy import Policy

__all__ = [
    "DEFAULT_INTENTS",
    "DEFAULT_STATE_REFRESH_S",
    "ENV_APP_ID",
    "EXIT_FATAL_PERMANENT",
    "EXIT_FATAL_RETRYABLE",
    "EXIT_NOT_ALIVE",
    "EXIT_OK",
    "EXIT_STDOUT_CLOSED",
    "EXIT_USAGE",
    "HELP_API_BASE",
    "HELP_TOKEN_URL",
    "Parser",
    "UsageError",
    "load_policy",
    "parse_shard",
    "positive_float",
]

EXIT_OK = 0
#: ``status``: the connection is not alive (or the file is stale); ``diagram``: cannot render.
EXIT_NOT_ALIVE = 1
EXIT_USAGE = 2
#: stdout was closed by its reader (a pipe's far end went away).
EXIT_STDOUT_CLOSED = 1
#: sysexits.h EX_TEMPFAIL: try again later.
EXIT_FATAL_RETRYABLE = 75
#: sysexits.h EX_CONFIG: restarting will not help until someone changes something.
EXIT_FATAL_PERMANENT = 78

ENV_APP_ID = "QQ_APP_ID"
DEFAULT_INTENTS = "PUBLIC_GUILD_MESSAGES"
#: The driver's defaults, repeated so that ``--help`` does not import the driver (a test keeps
#: them equal to ``qqconn.driver.DEFAULT_API_BASE`` / ``DEFAULT_TOKEN_URL``).
HELP_API_BASE = "https://api.sgroup.qq.com"
HELP_TOKEN_URL = "https://bots.qq.com/app/getAppAccessToken"
#: ``run`` rewrites the state file at least this often (``--state-refresh``), so ``status`` can
#: tell a hung process from a quiet, healthy one; ``status`` builds its freshness bound on it.
DEFAULT_STATE_REFRESH_S = 10.0


class UsageError(Exception):
    """A usage or configuration problem: one line on stderr, exit status 2, nothing started."""


class Parser(argparse.ArgumentParser):
    """argparse, but errors raise UsageError (so main() decides the exit status and message)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def positive_float(option: str, *, allow_zero: bool = False) -> Callable[[str], float]:
    """An argparse ``type=`` for a finite number > 0 (or ≥ 0), named ``option`` in messages."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(
                f"must be {'≥ 0' if allow_zero else '> 0'}, got {text!r}"
            )
        return value

    parse.__name__ = option  # argparse names the type in its messages
    return parse


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard ID/COUNT`` → ``(ID, COUNT)`` with ``0 ≤ ID < COUNT``."""
    parts = text.split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        shard = (int(parts[0]), int(parts[1]))
    except ValueError:
        raise UsageError(f"--shard: expected ID/COUNT such as 0/1, got {text!r}") from None
    if not 0 <= shard[0] < shard[1]:
        raise UsageError(f"--shard: need 0 ≤ ID < COUNT, got {text!r}")
    return shard


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read a TOML file's ``[policy]`` table into a :class:`~qqconn.Policy`.

    Raises :class:`UsageError` naming the file and the offending key for an unreadable file,
    invalid TOML, an unknown table or key, or a bad value.
    """
    from qqconn.errors import ConfigError
    from qqconn.policy import Policy

    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not valid TOML: {exc}") from None
    unknown = [key for key in doc if key != "policy"]
    if unknown:
        raise UsageError(
            f"--config {path}: unknown key or table {unknown[0]!r} (only [policy] is read)"
        )
    table = doc.get("policy", {})
    if not isinstance(table, dict):
        raise UsageError(f"--config {path}: 'policy' must be a table ([policy])")
    try:
        return Policy.from_mapping(table)
    except ConfigError as exc:
        raise UsageError(f"--config {path}: policy.{exc}") from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--config {path}: [policy]: {exc}") from None
