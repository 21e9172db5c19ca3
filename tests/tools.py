"""System tools some tests need: find them, or skip saying why (fail under CI=true).

``make tools`` (run by ``make test``) installs them where it can. Where it cannot, a test that
needs one is skipped with a reason naming the tool, what it is for and how to get it; with
``CI=true`` the same test fails instead, because a skipped test shown as a pass hides a
missing install step.

    path = tools.require("dot")        # in a test or fixture: the path, or skip/fail
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pytest

__all__ = ["TOOLS", "Tool", "find", "in_ci", "require"]


@dataclass(frozen=True, slots=True)
class Tool:
    """A program some tests run: the names it goes by, what it is for, how to install it."""

    names: tuple[str, ...]
    purpose: str
    package: str


TOOLS: dict[str, Tool] = {
    "dot": Tool(("dot",), "draws the SVG statechart", "graphviz"),
    "chromium": Tool(
        ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"),
        "the headless browser of the status-page test",
        "chromium",
    ),
    "redis-server": Tool(
        ("redis-server",), "the Redis the shard limiter and checkpoint tests run", "redis-server"
    ),
}


def in_ci() -> bool:
    """Is this a CI run (``CI`` set to true, as CI services do)?"""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def find(tool: str) -> str | None:
    """The path of ``tool`` (a key of :data:`TOOLS`) on PATH, or None."""
    for name in TOOLS[tool].names:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def require(tool: str) -> str:
    """The path of ``tool``; when it is missing, skip the calling test with the reason, or
    fail it under CI=true."""
    path = find(tool)
    if path is not None:
        return path
    spec = TOOLS[tool]
    reason = (
        f"{spec.names[0]} is not installed ({spec.purpose}): install the {spec.package}"
        " package (`make tools` does it where it can and prints how otherwise)"
    )
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)
