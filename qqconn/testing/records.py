"""What the fake gateway saw and did: frames, connections and HTTP requests, with timestamps.

Every timestamp is ``time.monotonic()`` seconds, so tests and benchmarks can subtract them
(reconnect latency = next ``opened_at`` - previous ``closed_at``). Records are appended by the
gateway as things happen; treat them as read-only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ApiCall",
    "ClosedBy",
    "ConnectionRecord",
    "Direction",
    "FrameRecord",
    "HttpRecord",
    "MessageRoute",
]

#: The message APIs an adapter calls to reply (see :mod:`qqconn.testing.rest`): ``"group"``
#: ``POST /v2/groups/{group_openid}/messages``, ``"c2c"`` ``POST /v2/users/{openid}/messages``,
#: ``"channel"`` ``POST /channels/{channel_id}/messages``, ``"dm"`` ``POST /dms/{guild_id}/messages``.
MessageRoute = Literal["group", "c2c", "channel", "dm"]

#: ``"in"``: client → gateway; ``"out"``: gateway → client.
Direction = Literal["in", "out"]

#: Who ended a socket: ``"server"`` sent the first close frame, ``"client"`` sent the first
#: close frame, ``"drop"``: the TCP connection ended with no close frame from either side.
ClosedBy = Literal["server", "client", "drop"]


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """One WebSocket message, as text (binary messages are decoded as UTF-8 with replacement).

    ``op`` is the frame's integer ``op``, or None when the message was not a JSON object with
    one (malformed frames, :meth:`FakeGateway.send_raw` payloads without an op).
    """

    at: float
    direction: Direction
    op: int | None
    payload_text: str
    #: ``ConnectionRecord.index`` of the socket that carried it.
    connection: int = -1
    binary: bool = False

    def json(self) -> Any:
        """The payload parsed as JSON (raises ``ValueError`` for malformed frames)."""
        return json.loads(self.payload_text)


@dataclass(slots=True)
class ConnectionRecord:
    """One WebSocket connection accepted by the fake gateway (index counts from 0)."""

    index: int
    opened_at: float
    closed_at: float | None = None
    #: Code of the close frame that ended the socket (the server's when it closed first, the
    #: client's when the client did), 1006 for a drop, None while open.
    close_code: int | None = None
    close_reason: str | None = None
    closed_by: ClosedBy | None = None
    #: ``heartbeat_interval`` announced in Hello (``MISSING`` if the key was omitted); None
    #: with ``hello_sent`` False when no Hello went out.
    hello_interval: object = None
    hello_sent: bool = False
    #: Identify / Resume frames received on this socket (acted on or not).
    identify_count: int = 0
    resume_count: int = 0
    #: Session attached by the last successful Identify or Resume on this socket.
    session_id: str | None = None
    frames: list[FrameRecord] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        """True until the TCP connection is gone."""
        return self.closed_at is None

    def sent(self, op: int | None = None) -> list[FrameRecord]:
        """Frames the gateway sent on this socket, optionally only those with ``op``."""
        return [f for f in self.frames if f.direction == "out" and (op is None or f.op == op)]

    def received(self, op: int | None = None) -> list[FrameRecord]:
        """Frames the client sent on this socket, optionally only those with ``op``."""
        return [f for f in self.frames if f.direction == "in" and (op is None or f.op == op)]


@dataclass(frozen=True, slots=True)
class HttpRecord:
    """One HTTP request to the REST side. ``status`` is None when the gateway never answered
    (the ``"hang"`` faults). Bodies are not recorded: the token request carries the secret."""

    at: float
    method: str
    path: str
    status: int | None


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One request to a message API (a reply), as the fake received and answered it.

    Tokens never appear: the ``authorization`` header reads ``"QQBot ***"`` and any issued
    token inside another header or the body is replaced by ``***``.
    """

    at: float
    route: MessageRoute
    method: str
    path: str
    #: The path's id: the group openid, user openid, channel id or DM guild id.
    target: str
    #: Request headers, names lower-cased, tokens masked.
    headers: Mapping[str, str]
    #: The JSON body as parsed (tokens masked), or None when it was not JSON.
    body: Any
    #: True when ``Authorization`` carried a token the fake issued and still honours.
    authorized: bool
    #: What the fake answered: HTTP status and JSON body.
    status: int
    answer: Any

    @property
    def content(self) -> str | None:
        """The reply's ``content``, when the body is an object that has one."""
        value = self.body.get("content") if isinstance(self.body, dict) else None
        return value if isinstance(value, str) else None
