"""The webhook (HTTP callback) transport: QQ posts signed events; qqconn verifies and delivers.

* :mod:`qqconn.webhook.core` — sans-I/O: the signing key (``keys``), request verdicts and
  refusal kinds (``verify``), the dedupe window (``dedupe``), the receiver's lifecycle table
  (``lifecycle``), each in a module of its own, every name importable from ``core``;
* :mod:`qqconn.webhook.store` — a file that keeps the dedupe window across restarts;
* :mod:`qqconn.webhook.asgi` — :class:`WebhookApp`, the ASGI application (mount it anywhere);
* :mod:`qqconn.webhook.receiver` — :class:`WebhookReceiver` (the WebSocket manager's shape,
  serving the app under uvicorn) and :func:`transport` (either, from configuration);
* :mod:`qqconn.webhook.cli` — ``qqconn serve``.

Names are imported on first use, so importing the core does not import uvicorn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qqconn.webhook.asgi import WebhookApp, WebhookStats
    from qqconn.webhook.core import (
        DedupeStore,
        DedupeWindow,
        RefusalKind,
        RequestVerifier,
        SigningKey,
    )
    from qqconn.webhook.receiver import QQ_CALLBACK_PORTS, WebhookReceiver, transport
    from qqconn.webhook.store import FileDedupeStore

_HOMES = {
    "DedupeStore": "qqconn.webhook.core",
    "DedupeWindow": "qqconn.webhook.core",
    "RefusalKind": "qqconn.webhook.core",
    "RequestVerifier": "qqconn.webhook.core",
    "SigningKey": "qqconn.webhook.core",
    "FileDedupeStore": "qqconn.webhook.store",
    "WebhookApp": "qqconn.webhook.asgi",
    "WebhookStats": "qqconn.webhook.asgi",
    "QQ_CALLBACK_PORTS": "qqconn.webhook.receiver",
    "WebhookReceiver": "qqconn.webhook.receiver",
    "transport": "qqconn.webhook.receiver",
}

__all__ = [
    "QQ_CALLBACK_PORTS",
    "DedupeStore",
    "DedupeWindow",
    "FileDedupeStore",
    "RefusalKind",
    "RequestVerifier",
    "SigningKey",
    "WebhookApp",
    "WebhookReceiver",
    "WebhookStats",
    "transport",
]
assert sorted(__all__) == sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'qqconn.webhook' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
