"""qqconn: keeps a QQ Bot gateway connection alive, and knows — and says — when it cannot.

One declarative state machine (:mod:`qqconn.machine`) decides; one asyncio driver
(:mod:`qqconn.driver`) observes sockets and obeys. See the README for the tour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qqconn.errors import (
    ConfigError,
    FatalError,
    LocalProtocolError,
    QQConnError,
    RemoteProtocolError,
)
from qqconn.machine import ConnectionMachine, State
from qqconn.policy import Policy
from qqconn.protocol import Intents

if TYPE_CHECKING:
    from qqconn.driver import ConnectionManager

__all__ = [
    "ConfigError",
    "ConnectionMachine",
    "ConnectionManager",
    "FatalError",
    "Intents",
    "LocalProtocolError",
    "Policy",
    "QQConnError",
    "RemoteProtocolError",
    "State",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The driver pulls in websockets and httpx; import it only when it is asked for.
    if name == "ConnectionManager":
        from qqconn.driver import ConnectionManager

        return ConnectionManager
    raise AttributeError(f"module 'qqconn' has no attribute {name!r}")
