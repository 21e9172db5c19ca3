"""The QQ gateway wire format: opcodes, outbound payloads, and inbound frame parsing.

Pure functions over JSON text; no I/O. The facts come from docs/protocol.md:
the envelope is ``{"op", "d", "s", "t", "id"}``, Hello carries the heartbeat interval in
milliseconds, RESUMED carries ``d: ""``, op 9 carries a boolean "can resume".

Parsing is strict about what qqconn relies on and lenient about everything else: a frame
qqconn cannot use raises :class:`~qqconn.errors.RemoteProtocolError` with the frame shortened,
so the caller can log it; unknown top-level keys are ignored.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from qqconn.errors import CredentialsRefused, RemoteProtocolError

__all__ = [
    "Dispatch",
    "GatewayBot",
    "Heartbeat",
    "HeartbeatAck",
    "Hello",
    "Inbound",
    "Intents",
    "InvalidSession",
    "OpCode",
    "Ready",
    "Reconnect",
    "Resumed",
    "SessionStartLimit",
    "heartbeat_payload",
    "identify_payload",
    "parse_frame",
    "parse_gateway_bot",
    "parse_gateway_response",
    "parse_token_response",
    "resume_payload",
    "shorten",
]


class OpCode(enum.IntEnum):
    """Gateway opcodes (QQ reuses Discord's numbering)."""

    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    RESUME = 6
    RECONNECT = 7
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11


class Intents(enum.IntFlag):
    """Intent bits of the QQ gateway (docs/protocol.md §4)."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    DIRECT_MESSAGE = 1 << 12
    OPEN_FORUMS_EVENT = 1 << 18
    AUDIO_OR_LIVE_CHANNEL_MEMBER = 1 << 19
    ENTER_AIO = 1 << 23
    GROUP_MEMBERS = 1 << 24
    GROUP_AND_C2C_EVENT = 1 << 25
    INTERACTION = 1 << 26
    MESSAGE_AUDIT = 1 << 27
    FORUMS_EVENT = 1 << 28
    AUDIO_ACTION = 1 << 29
    PUBLIC_GUILD_MESSAGES = 1 << 30

    @classmethod
    def parse(cls, text: str) -> int:
        """Parse ``"GUILDS|PUBLIC_GUILD_MESSAGES"``, ``"GUILDS,DIRECT_MESSAGE"`` or ``"1073741825"``."""
        text = text.strip()
        if not text:
            raise ValueError("intents: empty")
        if text.isdigit():
            value = int(text)
            if value <= 0 or value >= 1 << 31:
                raise ValueError(f"intents: {value} is not a valid intent mask")
            return value
        value = 0
        for part in text.replace(",", "|").split("|"):
            name = part.strip().upper()
            if name not in cls.__members__:
                raise ValueError(f"intents: unknown intent name {part.strip()!r}")
            value |= cls.__members__[name].value
        return value


# -- outbound ----------------------------------------------------------------------------


def identify_payload(
    token: str, intents: int, shard: tuple[int, int], properties: dict[str, str] | None = None
) -> str:
    """Op 2 Identify. ``token`` is the bare access token; the ``QQBot`` prefix is added here."""
    d: dict[str, Any] = {
        "token": f"QQBot {token}",
        "intents": intents,
        "shard": [shard[0], shard[1]],
        "properties": properties if properties is not None else {"$os": "linux", "$sdk": "qqconn"},
    }
    return json.dumps({"op": OpCode.IDENTIFY.value, "d": d}, separators=(",", ":"))


def resume_payload(token: str, session_id: str, seq: int | None) -> str:
    """Op 6 Resume, on a new socket after its Hello. Uses the prefixed token (docs/protocol.md §1.4)."""
    d = {"token": f"QQBot {token}", "session_id": session_id, "seq": seq if seq is not None else 0}
    return json.dumps({"op": OpCode.RESUME.value, "d": d}, separators=(",", ":"))


def heartbeat_payload(seq: int | None) -> str:
    """Op 1 Heartbeat: ``d`` is the last ``s`` received, ``null`` before any."""
    return json.dumps({"op": OpCode.HEARTBEAT.value, "d": seq}, separators=(",", ":"))


# -- inbound -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """Op 10. ``interval_ms`` is the raw value; the machine validates it."""

    interval_ms: object


@dataclass(frozen=True, slots=True)
class Ready:
    """Op 0 ``t=READY``: the session to keep for Resume."""

    session_id: str
    seq: int | None
    data: dict[str, Any]
    event_id: str | None


@dataclass(frozen=True, slots=True)
class Resumed:
    """Op 0 ``t=RESUMED`` (``d`` is ``""``)."""

    seq: int | None


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Op 0 with any other ``t``. ``seq`` is None when the frame carried no usable ``s``."""

    seq: int | None
    type: str
    data: Any
    event_id: str | None


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    """Op 11."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Op 1 sent by the server: asks for a heartbeat now (Discord semantics; never observed)."""


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Op 7: the server asks the client to reconnect."""


@dataclass(frozen=True, slots=True)
class InvalidSession:
    """Op 9. ``resumable`` is ``d`` when it is the boolean ``true``; anything else means no."""

    resumable: bool


Inbound = Hello | Ready | Resumed | Dispatch | HeartbeatAck | Heartbeat | Reconnect | InvalidSession

SHORTEN_AT = 200


def shorten(frame: str | bytes, limit: int = SHORTEN_AT) -> str:
    """Return a printable prefix of ``frame`` for logs: at most ``limit`` characters."""
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…(+{len(text) - limit} chars)"


def _seq(value: object) -> int | None:
    # bool is an int subclass; a JSON true is not a sequence number.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def parse_frame(frame: str | bytes) -> Inbound:
    """Parse one inbound WebSocket message into a typed frame.

    Raises :class:`RemoteProtocolError` (with the frame shortened) for binary frames, non-JSON
    text, a non-object, a missing or non-integer ``op``, an unknown op, or a payload of the wrong
    shape for its op. A dispatch whose ``s`` is missing or not a non-negative integer is still
    returned, with ``seq=None``, so its data is not lost.
    """
    if isinstance(frame, bytes):
        raise RemoteProtocolError(f"binary frame ({len(frame)} bytes): {shorten(frame)}")
    try:
        msg = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(
            f"not JSON ({exc.__class__.__name__}): {shorten(frame)}"
        ) from None
    if not isinstance(msg, dict):
        raise RemoteProtocolError(f"not a JSON object: {shorten(frame)}")
    op = msg.get("op")
    if type(op) is not int:  # not bool, not float: exactly an integer
        raise RemoteProtocolError(f"missing or non-integer op: {shorten(frame)}")
    if op == 0:  # OpCode.DISPATCH; the int literal is the hot path (an enum compare costs 7×)
        return _parse_dispatch(msg, frame)
    if op == OpCode.HEARTBEAT_ACK:
        return HeartbeatAck()
    if op == OpCode.HELLO:
        d = msg.get("d")
        return Hello(interval_ms=d.get("heartbeat_interval") if isinstance(d, dict) else None)
    if op == OpCode.RECONNECT:
        return Reconnect()
    if op == OpCode.INVALID_SESSION:
        return InvalidSession(resumable=msg.get("d") is True)
    if op == OpCode.HEARTBEAT:
        return Heartbeat()
    raise RemoteProtocolError(f"unknown op {op}: {shorten(frame)}")


def _parse_dispatch(msg: dict[str, Any], frame: str) -> Inbound:
    t = msg.get("t")
    seq = _seq(msg.get("s"))
    d = msg.get("d")
    event_id = msg.get("id")
    if not isinstance(event_id, str):
        event_id = None
    if t == "READY":
        if (
            not isinstance(d, dict)
            or not isinstance(d.get("session_id"), str)
            or not d["session_id"]
        ):
            raise RemoteProtocolError(f"READY without a session_id: {shorten(frame)}")
        return Ready(session_id=d["session_id"], seq=seq, data=d, event_id=event_id)
    if t == "RESUMED":
        return Resumed(seq=seq)
    if not isinstance(t, str) or not t:
        raise RemoteProtocolError(f"dispatch without an event type: {shorten(frame)}")
    return Dispatch(seq, t, d, event_id)  # positional: measurably cheaper per event


# -- REST responses ----------------------------------------------------------------------


#: Token-endpoint error codes that mean "these credentials are wrong" (not "try later"):
#: 100007 "appid invalid" (docs/protocol.md §3.1). Others, such as 100017 (rate limited), are
#: transient.
CREDENTIAL_ERROR_CODES = frozenset({100007})

#: OpenAPI error codes that mean "this access token is not (or no longer) accepted": 11244
#: "token not exist or expire" (docs/protocol.md §3.1). On ``/gateway/bot`` they refuse the
#: credentials like HTTP 401/403 do (docs/behaviour.md rule 20).
TOKEN_ERROR_CODES = frozenset({11244})

#: An ``expires_in`` above this (ten days; real tokens live 7200 s) is not believed.
MAX_TOKEN_LIFETIME_S = 10 * 86400


def parse_token_response(status: int, body: bytes) -> tuple[str, float]:
    """Parse ``getAppAccessToken``'s answer into ``(access_token, expires_in_s)``.

    ``expires_in`` may be a string (the docs' example) or a number. Errors arrive as HTTP 200
    bodies with ``code``/``message`` and no token. The error text never includes the token.
    """
    if status in (401, 403):
        raise CredentialsRefused(f"token endpoint answered HTTP {status}")
    if status != 200:
        raise RemoteProtocolError(f"token endpoint answered HTTP {status}")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        # Not even a prefix of the body: a truncated answer may hold the token.
        raise RemoteProtocolError(f"token endpoint answered non-JSON ({len(body)} bytes)") from None
    if not isinstance(doc, dict):
        raise RemoteProtocolError("token endpoint answered a non-object")
    token = doc.get("access_token")
    if not isinstance(token, str) or not token:
        code = doc.get("code")
        message = doc.get("message")
        error = CredentialsRefused if code in CREDENTIAL_ERROR_CODES else RemoteProtocolError
        raise error(
            f"token endpoint refused: code={shorten(repr(code), 40)} message={shorten(str(message), 80)!r}"
        )
    raw = doc.get("expires_in")
    try:
        expires_in = float(raw) if isinstance(raw, (int, float, str)) and raw is not True else -1.0
    except (ValueError, OverflowError):
        expires_in = -1.0
    if not expires_in > 0 or expires_in != expires_in or expires_in > MAX_TOKEN_LIFETIME_S:
        raise RemoteProtocolError(
            f"token endpoint gave an unusable expires_in: {shorten(repr(raw), 40)}"
        )
    return token, expires_in


@dataclass(frozen=True, slots=True)
class SessionStartLimit:
    """``/gateway/bot``'s ``session_start_limit`` (docs/protocol.md §3.2): session starts per
    24 h (``total``), still allowed now (``remaining``), milliseconds until ``remaining`` is
    reset (``reset_after_ms``), and starts allowed per identify window (``max_concurrency``)."""

    total: int
    remaining: int
    reset_after_ms: int
    max_concurrency: int


@dataclass(frozen=True, slots=True)
class GatewayBot:
    """What ``GET /gateway/bot`` says: the WebSocket URL, the recommended shard count and the
    session start limit (None for each when ``/gateway`` was asked, or the field is unusable)."""

    url: str
    shards: int | None
    limit: SessionStartLimit | None


def _count_field(doc: dict[str, Any], key: str, minimum: int) -> int | None:
    value = doc.get(key)
    if type(value) is int and minimum <= value < 1 << 53:
        return value
    return None


def parse_gateway_bot(status: int, body: bytes) -> GatewayBot:
    """Parse ``GET /gateway/bot`` (or ``/gateway``): url, recommended shards, session limit.

    Raises :class:`RemoteProtocolError` without a usable ws(s) URL. An unusable ``shards`` or
    ``session_start_limit`` (absent, not whole numbers, ``max_concurrency`` below 1) is None:
    the caller keeps what it knew."""
    url = parse_gateway_response(status, body)
    doc = json.loads(body)
    shards = _count_field(doc, "shards", 1)
    raw = doc.get("session_start_limit")
    limit = None
    if isinstance(raw, dict):
        total = _count_field(raw, "total", 0)
        remaining = _count_field(raw, "remaining", 0)
        reset = _count_field(raw, "reset_after", 0)
        mc = _count_field(raw, "max_concurrency", 1)
        if total is not None and remaining is not None and reset is not None and mc is not None:
            limit = SessionStartLimit(total, remaining, reset, mc)
    return GatewayBot(url, shards, limit)


def _error_code(body: bytes) -> object:
    """The ``code`` of a JSON error body, or None."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    code = doc.get("code") if isinstance(doc, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def parse_gateway_response(status: int, body: bytes) -> str:
    """Parse ``GET /gateway`` or ``/gateway/bot`` into the WebSocket URL.

    HTTP 401/403, or an error body whose ``code`` says the token is not accepted
    (:data:`TOKEN_ERROR_CODES`), raise :class:`CredentialsRefused`: the token is refreshed
    once before the attempt counts (docs/behaviour.md rule 20)."""
    if status in (401, 403) or _error_code(body) in TOKEN_ERROR_CODES:
        raise CredentialsRefused(f"gateway endpoint answered HTTP {status}: {shorten(body, 80)}")
    if status != 200:
        raise RemoteProtocolError(f"gateway endpoint answered HTTP {status}: {shorten(body, 80)}")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise RemoteProtocolError(
            f"gateway endpoint answered non-JSON: {shorten(body, 80)}"
        ) from None
    url = doc.get("url") if isinstance(doc, dict) else None
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        raise RemoteProtocolError(f"gateway endpoint gave no ws(s) url: {shorten(body, 80)}")
    return url
