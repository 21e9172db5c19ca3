"""The driver: the one package that touches asyncio, websockets and HTTP.

It observes (frames, closes, timers, HTTP answers), stamps each observation with the time and
feeds it to the :class:`~qqconn.machine.ConnectionMachine` as an event, then carries out the
commands that come back. It decides nothing: no counters, no retries, no sleeps of its own.

One module per concern:

* :mod:`~qqconn.driver.manager`: :class:`ConnectionManager`, configuration and lifecycle.
* :mod:`~qqconn.driver.feed`: feeding the machine, carrying out its commands, the loop timers.
* :mod:`~qqconn.driver.attempt`: one attempt's I/O (token, gateway URL, socket, reader, sends).
* :mod:`~qqconn.driver.host`: the host lane (callbacks, in order, off the reader).
* :mod:`~qqconn.driver.tokens`: :class:`Secret`, access tokens, the TLS context.
* :mod:`~qqconn.driver.statefile`: the atomic, mode-0600 state file.
"""

from __future__ import annotations

from qqconn.driver.host import StateChange
from qqconn.driver.manager import DEFAULT_API_BASE, ConnectionManager
from qqconn.driver.tokens import DEFAULT_TOKEN_URL, Secret, tls_context

__all__ = [
    "DEFAULT_API_BASE",
    "DEFAULT_TOKEN_URL",
    "ConnectionManager",
    "Secret",
    "StateChange",
    "tls_context",
]
