"""Test seams shipped with qqconn: a faithful fake QQ gateway with fault injection.

``FakeGateway`` serves the token endpoint, ``/gateway[/bot]``, the message APIs adapters reply
through, and the WebSocket gateway on loopback; ``gw.faults`` makes it misbehave (globally or
per socket); ``gw.connections`` / ``gw.frames`` / ``gw.api_calls`` record what happened.
``fast_policy()`` is a :class:`~qqconn.Policy` with test-suite timings. The ``fake_gateway``
pytest fixture (``qqconn.testing.pytest_plugin``) yields a started gateway; ``python -m
qqconn.testing.serve`` runs one on its own.

Names are imported on first use, so loading the pytest plugin (a submodule) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qqconn.testing.defaults import (
        DEFAULT_APP_ID,
        DEFAULT_CLIENT_SECRET,
        FAST_POLICY_VALUES,
        FIXTURE_HEARTBEAT_INTERVAL_MS,
        fast_policy,
    )
    from qqconn.testing.faults import MISSING, NO_OVERRIDE, PER_SOCKET, Faults
    from qqconn.testing.gateway import CLOSE_REASONS, FakeGateway
    from qqconn.testing.records import (
        ApiCall,
        ConnectionRecord,
        FrameRecord,
        HttpRecord,
        MessageRoute,
    )
    from qqconn.testing.rest import ApiAnswer

__all__ = [
    "CLOSE_REASONS",
    "DEFAULT_APP_ID",
    "DEFAULT_CLIENT_SECRET",
    "FAST_POLICY_VALUES",
    "FIXTURE_HEARTBEAT_INTERVAL_MS",
    "MISSING",
    "NO_OVERRIDE",
    "PER_SOCKET",
    "ApiAnswer",
    "ApiCall",
    "ConnectionRecord",
    "FakeGateway",
    "Faults",
    "FrameRecord",
    "HttpRecord",
    "MessageRoute",
    "fast_policy",
]

_HOME = {
    "CLOSE_REASONS": "qqconn.testing.gateway",
    "FakeGateway": "qqconn.testing.gateway",
    "DEFAULT_APP_ID": "qqconn.testing.defaults",
    "DEFAULT_CLIENT_SECRET": "qqconn.testing.defaults",
    "FAST_POLICY_VALUES": "qqconn.testing.defaults",
    "FIXTURE_HEARTBEAT_INTERVAL_MS": "qqconn.testing.defaults",
    "fast_policy": "qqconn.testing.defaults",
    "MISSING": "qqconn.testing.faults",
    "NO_OVERRIDE": "qqconn.testing.faults",
    "PER_SOCKET": "qqconn.testing.faults",
    "Faults": "qqconn.testing.faults",
    "ApiCall": "qqconn.testing.records",
    "ConnectionRecord": "qqconn.testing.records",
    "FrameRecord": "qqconn.testing.records",
    "HttpRecord": "qqconn.testing.records",
    "MessageRoute": "qqconn.testing.records",
    "ApiAnswer": "qqconn.testing.rest",
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
