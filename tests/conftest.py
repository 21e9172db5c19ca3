"""Shared fixtures. Keep this small: helpers used by one test module live in that module."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from structlog.testing import CapturingLogger

from qqconn.machine import ConnectionMachine
from qqconn.policy import Policy


@pytest.fixture
def capturing_logger() -> CapturingLogger:
    """A structlog logger that records every call (``.calls``) and prints nothing."""
    return CapturingLogger()


@pytest.fixture
def make_machine(
    capturing_logger: CapturingLogger,
) -> Callable[..., ConnectionMachine]:
    """Build a :class:`ConnectionMachine` with a seeded RNG that logs to ``capturing_logger``."""

    def make(policy: Policy | None = None, *, seed: int = 0) -> ConnectionMachine:
        return ConnectionMachine(policy, rng=random.Random(seed), logger=capturing_logger)

    return make


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--soak-seconds``: how long tests/test_soak.py soaks (``make soak`` passes a long one)."""
    parser.addoption(
        "--soak-seconds",
        type=float,
        default=50.0,
        help="total seconds for tests/test_soak.py (one manager, then fifty); default: the short in-suite run",
    )
    parser.addoption(
        "--soak-fifty-seconds",
        type=float,
        default=None,
        help="seconds for the fifty-manager soak alone (default: its share of --soak-seconds)",
    )
    parser.addoption(
        "--crash-kills",
        type=int,
        default=8,
        help="SIGKILLs of tests/test_crash_soak.py's random-seed run (make soak asks for 60)",
    )
