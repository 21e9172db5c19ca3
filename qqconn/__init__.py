"""qqconn: keeps a QQ Bot gateway connection alive, and knows — and says — when it cannot.

One declarative state machine (:mod:`qqconn.machine`) decides; the asyncio driver package
(:mod:`qqconn.driver`) observes sockets and obeys. See the README for the tour.

Names are imported on first use, so that importing ``qqconn.testing`` (and the pytest
plugin every test run loads) costs nothing until a test asks for qqconn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qqconn.driver.host import StateChange
    from qqconn.driver.manager import ConnectionManager
    from qqconn.driver.permits import LocalIdentifyLimiter
    from qqconn.driver.shards import BotShards
    from qqconn.driver.tokens import Secret
    from qqconn.errors import (
        ConfigError,
        FatalError,
        LocalProtocolError,
        QQConnError,
        RemoteProtocolError,
    )
    from qqconn.machine import ConnectionMachine, State
    from qqconn.policy import Policy
    from qqconn.protocol import Dispatch, Intents

_HOMES = {
    "ConnectionManager": "qqconn.driver.manager",
    "BotShards": "qqconn.driver.shards",
    "LocalIdentifyLimiter": "qqconn.driver.permits",
    "Secret": "qqconn.driver.tokens",
    "StateChange": "qqconn.driver.host",
    "ConfigError": "qqconn.errors",
    "FatalError": "qqconn.errors",
    "LocalProtocolError": "qqconn.errors",
    "QQConnError": "qqconn.errors",
    "RemoteProtocolError": "qqconn.errors",
    "ConnectionMachine": "qqconn.machine",
    "State": "qqconn.machine",
    "Policy": "qqconn.policy",
    "Dispatch": "qqconn.protocol",
    "Intents": "qqconn.protocol",
}

__all__ = [
    "BotShards",
    "ConfigError",
    "ConnectionMachine",
    "ConnectionManager",
    "Dispatch",
    "FatalError",
    "Intents",
    "LocalIdentifyLimiter",
    "LocalProtocolError",
    "Policy",
    "QQConnError",
    "RemoteProtocolError",
    "Secret",
    "State",
    "StateChange",
]
assert sorted(__all__) == sorted(_HOMES)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'qqconn' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
