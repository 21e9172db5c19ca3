"""Test seams shipped with qqconn: a faithful fake QQ gateway with fault injection.

``FakeGateway`` serves the token endpoint, ``/gateway[/bot]`` and the WebSocket gateway on
loopback; ``gw.faults`` makes it misbehave; ``gw.connections`` / ``gw.frames`` record what
happened. The ``fake_gateway`` pytest fixture (``qqconn.testing.pytest_plugin``) yields one.

Names are imported on first use, so loading the pytest plugin (a submodule) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qqconn.testing.faults import MISSING, NO_OVERRIDE, Faults
    from qqconn.testing.gateway import CLOSE_REASONS, FakeGateway
    from qqconn.testing.records import ConnectionRecord, FrameRecord, HttpRecord

__all__ = [
    "CLOSE_REASONS",
    "MISSING",
    "NO_OVERRIDE",
    "ConnectionRecord",
    "FakeGateway",
    "Faults",
    "FrameRecord",
    "HttpRecord",
]

_HOME = {
    "CLOSE_REASONS": "qqconn.testing.gateway",
    "FakeGateway": "qqconn.testing.gateway",
    "MISSING": "qqconn.testing.faults",
    "NO_OVERRIDE": "qqconn.testing.faults",
    "Faults": "qqconn.testing.faults",
    "ConnectionRecord": "qqconn.testing.records",
    "FrameRecord": "qqconn.testing.records",
    "HttpRecord": "qqconn.testing.records",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'qqconn.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
