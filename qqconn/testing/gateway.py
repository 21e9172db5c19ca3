"""A faithful fake QQ Bot gateway, with fault injection, on loopback sockets.

Theory of operation
-------------------
:class:`FakeGateway` runs two servers on the caller's event loop, both on ``127.0.0.1`` with
ephemeral ports:

* a REST side (h11 over asyncio streams) with the token endpoint and ``/gateway[/bot]``;
* a WebSocket side (``websockets.asyncio.server``) speaking the gateway protocol of
  ``shared/qq-protocol.md`` §1: Hello first, Identify → READY, Heartbeat → ACK,
  Resume → replay + RESUMED.

A **session** is created by each successful Identify. It owns a strictly increasing ``s``
counter (READY takes the first value) and a replay buffer holding every dispatch frame it
accepted. A session is *attached* to at most one socket: the one that identified or last
resumed it. :meth:`FakeGateway.dispatch` always buffers the frame, and sends it only when the
session is attached to an open socket; a later Resume replays what the client missed.

Each socket has one **writer task** draining an ordered outbox, so frames, replays and the close
frames that follow them (op 9 then 4903, op 7 then 4009) always leave in the order they were
decided. The reader never awaits anything but the next message: it records the frame, decides,
and queues. A **watchdog** task ticks every 10 ms for the timed faults (heartbeat timeout,
periodic rotation, ``close_new_sockets``). The writer and the watchdog are cancelled when the
socket's TCP connection is gone, so nothing outlives its socket, and :meth:`FakeGateway.aclose`
cuts everything within about ``shutdown_grace_s`` + 1 s.

Everything the gateway sees and does is recorded with ``time.monotonic()`` stamps
(:class:`ConnectionRecord`, :class:`FrameRecord`, :class:`HttpRecord`). The fake never logs
the client secret or a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import string
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Final, Literal, Self, cast

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from qqconn._log import QuietLogger
from qqconn.protocol import OpCode
from qqconn.testing._http import H11Server, HttpReply, HttpRequest
from qqconn.testing.faults import MISSING, NO_OVERRIDE, Faults
from qqconn.testing.records import ConnectionRecord, FrameRecord, HttpRecord

__all__ = ["CLOSE_REASONS", "TOKEN_PATH", "WS_PATH", "FakeGateway"]

log = QuietLogger(structlog.get_logger("qqconn.testing"))

WS_PATH: Final = "/websocket"
TOKEN_PATH: Final = "/app/getAppAccessToken"

#: Reason text the gateway puts in the close frames it decides on its own (observed texts
#: where the protocol sheet has one, the official meaning otherwise).
CLOSE_REASONS: Final[dict[int, str]] = {
    1000: "",
    1001: "server shutting down",
    4001: "invalid opcode",
    4002: "invalid payload",
    4004: "authentication fail",
    4005: "already authenticated",
    4006: "invalid session id",
    4007: "seq error",
    4008: "payloads sent too fast",
    4009: "Session timed out",
    4010: "invalid shard",
    4011: "sharding required",
    4012: "invalid version",
    4013: "invalid intent",
    4014: "disallowed intents",
    4902: "reset by resume",
    4903: "create session error",
    4914: "bot offline, sandbox only",
    4915: "bot banned",
    4924: "session ip forbidden",
}

_TICK_S: Final = 0.01
_IDLE_TICK_S: Final = 0.1
_CONCURRENCY_WINDOW_S: Final = 5.0
_TOKEN_ALPHABET: Final = string.ascii_letters + string.digits + "-_"


def _compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _never() -> bool:
    return False


class _FakeServerConnection(ServerConnection):
    """A websockets server connection that can go mute (the ``silent`` fault).

    While ``is_muted()`` is true every byte websockets would write is discarded, including the
    pongs and close-frame replies it sends on its own, so the client faces a half-open server.
    """

    #: Every TCP connection of one gateway, handshake done or not (set by a per-gateway
    #: subclass, see ``FakeGateway._connection_class``), so shutdown can cut them all.
    registry: ClassVar[set[ServerConnection]] = set()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.is_muted: Callable[[], bool] = _never

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.discard(self)
        super().connection_lost(exc)

    def send_data(self) -> None:
        if self.is_muted():
            for _ in self.protocol.data_to_send():
                pass
            return
        super().send_data()


@dataclass(slots=True)
class _Out:
    """One item of a socket's outbox: a message, or a close frame."""

    kind: Literal["frame", "close"]
    data: str | bytes = ""
    op: int | None = None
    #: True for the gateway's own traffic (suppressed while silent); False for fault actions.
    auto: bool = True
    code: int = 1000
    reason: str = ""
    done: asyncio.Future[bool] | None = None


@dataclass(eq=False, slots=True)
class _Session:
    session_id: str
    shard: object
    intents: int
    seq: int = 0
    buffer: list[tuple[int, str]] = field(default_factory=list)
    sock: _Socket | None = None


@dataclass(eq=False, slots=True)
class _Socket:
    ws: _FakeServerConnection
    record: ConnectionRecord
    outbox: asyncio.Queue[_Out] = field(default_factory=asyncio.Queue)
    session: _Session | None = None
    attached_at: float | None = None
    last_beat_at: float = 0.0
    hello_sent: bool = False
    #: A close or drop was decided: later client frames are recorded, not acted on.
    closing: bool = False
    #: >0 while a fault action writes through a silent gateway.
    bypass: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.ws.state is State.OPEN and not self.closed.is_set()


class FakeGateway:
    """A fake QQ gateway (REST + WebSocket) on loopback, for integration tests.

    Use it as ``async with FakeGateway(...) as gw:``; it serves on the running loop until the
    block ends. ``gw.token_url``, ``gw.api_base`` and ``gw.ws_url`` are what a client needs;
    ``gw.faults`` switches misbehaviour on; ``gw.connections`` and ``gw.frames`` tell what
    happened. All waits are bounded; closing takes at most about ``shutdown_grace_s`` + 1 s,
    even with a hanging token request or a client that never answers the close handshake.

    Lenient where real clients differ (unknown top-level keys such as botgo's ``"Session"``,
    missing ``properties`` or ``shard``, heartbeats before Identify, binary frames holding
    JSON), strict where a client bug should show (Discord semantics where QQ is silent):
    a frame that is not a JSON object → 4002; an op the gateway does not take → 4001;
    a heartbeat ``d`` other than null or an integer → 4002; Identify or Resume on a socket
    that already has a session → 4005; Identify without integer ``intents`` → 4013;
    a token other than ``"QQBot <valid token>"`` → 4004.

    Everything runs on the loop that called :meth:`start`; call the methods from it.
    """

    def __init__(
        self,
        *,
        app_id: str = "1000",
        client_secret: str = "s3cret",
        heartbeat_interval_ms: int = 41250,
        token_ttl_s: float = 7200.0,
        token_refresh_window_s: float = 60.0,
        bot_user_id: str = "144115218676900000",
        bot_username: str = "qqconn-fake-bot",
        session_start_total: int = 1000,
        max_concurrency: int = 1,
        close_timeout_s: float = 1.0,
        shutdown_grace_s: float = 0.5,
        seed: int | None = None,
    ) -> None:
        self.app_id = app_id
        self._client_secret = client_secret
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.token_ttl_s = token_ttl_s
        self.token_refresh_window_s = token_refresh_window_s
        self.bot_user_id = bot_user_id
        self.bot_username = bot_username
        self.session_start_total = session_start_total
        #: Decremented by every successful Identify; reported by ``/gateway/bot``.
        self.session_start_remaining = session_start_total
        self.max_concurrency = max_concurrency
        self.close_timeout_s = close_timeout_s
        self.shutdown_grace_s = shutdown_grace_s
        self.faults = Faults()
        self._rng = random.Random(seed)

        self._tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self._current_token: str | None = None
        self._sessions: dict[str, _Session] = {}
        self._current_session: _Session | None = None
        self._identify_times: list[float] = []

        self._connections: list[ConnectionRecord] = []
        self._frames: list[FrameRecord] = []
        self._heartbeats: list[tuple[float, object]] = []
        self._http_requests: list[HttpRecord] = []
        self._sockets: set[_Socket] = set()
        self._tcp_connections: set[ServerConnection] = set()

        self._http = H11Server(self._route_http)
        self._ws_server: Server | None = None
        self._http_port = 0
        self._ws_port = 0
        self._state: Literal["new", "running", "closed"] = "new"

    def __repr__(self) -> str:
        # Deliberately without the secret or tokens.
        return f"<FakeGateway {self._state} api={self.api_base} ws={self.ws_url}>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Self:
        """Bind both servers on ephemeral loopback ports. Called by ``async with``."""
        if self._state != "new":
            raise RuntimeError(f"FakeGateway.start: already {self._state}")
        self._state = "running"
        self._http_port = await self._http.start()
        try:
            self._ws_server = await serve(
                self._handle_socket,
                "127.0.0.1",
                0,
                process_request=self._check_ws_path,
                create_connection=self._connection_class(),
                compression=None,
                open_timeout=2.0,
                ping_interval=None,
                close_timeout=self.close_timeout_s,
                max_size=None,
                server_header=None,
            )
        except BaseException:
            await self._http.aclose()
            raise
        self._ws_port = self._ws_server.sockets[0].getsockname()[1]
        log.debug("fake_gateway.started", api_base=self.api_base, ws_url=self.ws_url)
        return self

    def _connection_class(self) -> type[ServerConnection]:
        # A subclass per gateway, so its registry holds this gateway's connections only.
        attrs = {"registry": self._tcp_connections}
        return cast(type[ServerConnection], type("_Connection", (_FakeServerConnection,), attrs))

    async def aclose(self) -> None:
        """Close every socket (1001, or a drop after ``shutdown_grace_s``) and both servers.

        Bounded by ``shutdown_grace_s`` + 1 s: whatever has not finished closing by then,
        including half-done WebSocket handshakes and hanging HTTP requests, is aborted.
        """
        if self._state != "running":
            self._state = "closed"
            return
        self._state = "closed"
        assert self._ws_server is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_grace_s + 1.0
        self._ws_server.close(close_connections=False)  # stop listening
        closers = [
            asyncio.create_task(s.ws.close(1001, CLOSE_REASONS[1001]))
            for s in self._sockets
            if s.ws.state is State.OPEN and not self.faults.silent
        ]
        if closers:
            await asyncio.wait(closers, timeout=self.shutdown_grace_s)
        for conn in list(self._tcp_connections):
            conn.transport.abort()
        if closers:
            await asyncio.wait(closers, timeout=max(0.0, deadline - loop.time()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ws_server.wait_closed(), max(0.01, deadline - loop.time()))
        await self._http.aclose(timeout_s=max(0.01, deadline - loop.time()))
        log.debug("fake_gateway.closed", connections=len(self._connections))

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        """``http://127.0.0.1:<port>``: serves ``GET /gateway`` and ``GET /gateway/bot``."""
        return f"http://127.0.0.1:{self._http_port}"

    @property
    def token_url(self) -> str:
        """Where to POST ``{"appId", "clientSecret"}`` for an access token."""
        return f"{self.api_base}{TOKEN_PATH}"

    @property
    def ws_url(self) -> str:
        """The WebSocket URL ``/gateway`` hands out."""
        return f"ws://127.0.0.1:{self._ws_port}{WS_PATH}"

    # -- tokens ------------------------------------------------------------------------------

    def valid_token(self) -> str:
        """The token the token endpoint would hand out now (issuing one if needed)."""
        token, _ = self._token_for_request()
        return token

    def rotate_token(self, *, revoke_old: bool = True) -> str:
        """Issue a new current token; with ``revoke_old`` every earlier token stops working."""
        if revoke_old:
            self._tokens.clear()
        return self._issue_token(time.monotonic())

    def revoke_tokens(self) -> None:
        """Invalidate every token (the next request to the token endpoint issues a new one)."""
        self._tokens.clear()
        self._current_token = None

    def is_valid_token(self, token: str) -> bool:
        """True when ``token`` (bare, without ``QQBot ``) was issued, not revoked, not expired."""
        expiry = self._tokens.get(token)
        return expiry is not None and expiry > time.monotonic()

    def _issue_token(self, now: float) -> str:
        for old in [t for t, exp in self._tokens.items() if exp <= now]:
            del self._tokens[old]
        token = "".join(self._rng.choice(_TOKEN_ALPHABET) for _ in range(43))
        self._tokens[token] = now + self.token_ttl_s
        self._current_token = token
        return token

    def _token_for_request(self) -> tuple[str, float]:
        # The real endpoint returns the same token until its last 60 s; then it issues a new
        # one while the old one stays valid until it expires (qq-protocol §3.1).
        now = time.monotonic()
        token = self._current_token
        if token is None or self._tokens.get(token, now) - now <= self.token_refresh_window_s:
            token = self._issue_token(now)
        return token, self._tokens[token] - now

    def _auth_ok(self, raw: object) -> bool:
        if not isinstance(raw, str):
            return False
        if raw.startswith("QQBot "):
            return self.is_valid_token(raw[len("QQBot ") :])
        if self.faults.legacy_tokens:
            legacy_prefix = f"Bot {self.app_id}."
            if raw.startswith(legacy_prefix):
                return self.is_valid_token(raw[len(legacy_prefix) :])
            return self.is_valid_token(raw)
        return False

    # -- sessions and events -----------------------------------------------------------------

    @property
    def current_session_id(self) -> str | None:
        """The session of the most recent successful Identify (None before any)."""
        return self._current_session.session_id if self._current_session else None

    @property
    def session_ids(self) -> list[str]:
        """Every session still known (expired ones excluded), oldest first."""
        return list(self._sessions)

    def expire_session(self, session_id: str | None = None) -> None:
        """Forget a session (default: the current one): a Resume of it now gets 4006."""
        session = self._session(session_id)
        del self._sessions[session.session_id]
        if session is self._current_session:
            self._current_session = None
        if session.sock is not None:
            session.sock.session = None
            session.sock = None

    def session_seq(self, session_id: str | None = None) -> int:
        """The latest ``s`` of a session (default: the current one)."""
        return self._session(session_id).seq

    async def dispatch(self, t: str, d: Any = None, *, session_id: str | None = None) -> int:
        """Accept an op 0 event into a session (default: the current one) and return its ``s``.

        The frame ``{"op":0,"s","t","id":"<t>:<random>","d"}`` is buffered for replay, and sent
        at once if the session is attached to an open socket; this waits until it was written
        (or found unsendable). Raises ``LookupError`` when there is no such session.
        """
        seq, done = self._accept(t, d, session_id)
        if done is not None:
            await done
        return seq

    def dispatch_nowait(self, t: str, d: Any = None, *, session_id: str | None = None) -> int:
        """Like :meth:`dispatch` but without waiting for the write (for bursts); keeps order."""
        seq, _ = self._accept(t, d, session_id)
        return seq

    def accepted(self, session_id: str | None = None) -> list[int]:
        """The ``s`` of every dispatch a session accepted (default: the current one)."""
        return [s for s, _ in self._session(session_id).buffer]

    def _session(self, session_id: str | None) -> _Session:
        if session_id is None:
            if self._current_session is None:
                raise LookupError("FakeGateway: no current session (nobody identified yet)")
            return self._current_session
        try:
            return self._sessions[session_id]
        except KeyError:
            raise LookupError(f"FakeGateway: unknown session {session_id!r}") from None

    def _accept(
        self, t: str, d: Any, session_id: str | None
    ) -> tuple[int, asyncio.Future[bool] | None]:
        session = self._session(session_id)
        session.seq += 1
        event_id = f"{t}:{self._random_id()}"
        text = _compact({"op": 0, "s": session.seq, "t": t, "id": event_id, "d": d})
        session.buffer.append((session.seq, text))
        done = None
        if session.sock is not None and session.sock.is_open:
            done = self._enqueue_frame(session.sock, text, OpCode.DISPATCH)
        return session.seq, done

    def _random_id(self) -> str:
        return "".join(self._rng.choice(_TOKEN_ALPHABET) for _ in range(24))

    def _attach(self, sock: _Socket, session: _Session) -> None:
        old = session.sock
        if old is not None and old is not sock:
            old.session = None
        session.sock = sock
        sock.session = session
        sock.attached_at = time.monotonic()
        sock.record.session_id = session.session_id

    # -- recording ---------------------------------------------------------------------------

    @property
    def connections(self) -> Sequence[ConnectionRecord]:
        """Every WebSocket connection accepted so far, in opening order."""
        return self._connections

    @property
    def live_connections(self) -> list[ConnectionRecord]:
        """Connections whose TCP connection is not gone yet (closing ones included)."""
        return [c for c in self._connections if c.closed_at is None]

    @property
    def frames(self) -> Sequence[FrameRecord]:
        """Every frame in and out, on every connection, in order."""
        return self._frames

    @property
    def heartbeats(self) -> Sequence[tuple[float, object]]:
        """``(at, d)`` of every client heartbeat received."""
        return self._heartbeats

    @property
    def http_requests(self) -> Sequence[HttpRecord]:
        """Every REST request (token endpoint included), without bodies."""
        return self._http_requests

    @property
    def identifies(self) -> int:
        """Identify frames received, on all connections."""
        return sum(c.identify_count for c in self._connections)

    @property
    def resumes(self) -> int:
        """Resume frames received, on all connections."""
        return sum(c.resume_count for c in self._connections)

    async def wait_for(
        self, predicate: Callable[[], object], timeout: float = 5.0, *, what: str | None = None
    ) -> None:
        """Poll ``predicate`` every 10 ms until it is truthy; ``TimeoutError`` after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() >= deadline:
                name = what or getattr(predicate, "__name__", repr(predicate))
                raise TimeoutError(f"FakeGateway.wait_for: {name} still false after {timeout} s")
            await asyncio.sleep(_TICK_S)

    async def wait_for_connections(self, n: int, timeout: float = 5.0) -> ConnectionRecord:
        """Wait until ``n`` connections were accepted in total; return the n-th."""
        await self.wait_for(
            lambda: len(self._connections) >= n, timeout, what=f"{n} connection(s) accepted"
        )
        return self._connections[n - 1]

    def _record(
        self, sock: _Socket, direction: Literal["in", "out"], op: int | None, data: str | bytes
    ) -> None:
        binary = isinstance(data, bytes)
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        frame = FrameRecord(
            at=time.monotonic(),
            direction=direction,
            op=op,
            payload_text=text,
            connection=sock.record.index,
            binary=binary,
        )
        sock.record.frames.append(frame)
        self._frames.append(frame)

    # -- fault actions -----------------------------------------------------------------------

    async def send_reconnect(self, close_after_s: float = 0.2, *, index: int | None = None) -> int:
        """Send op 7 to the open socket(s), then close 4009 "Session timed out" each one the
        client has not closed within ``close_after_s``. Returns the number of sockets hit."""
        socks = self._targets(index)
        await self._rotate(socks, close_after_s, auto=False)
        return len(socks)

    async def close(self, code: int, reason: str = "", *, index: int | None = None) -> int:
        """Close the open socket(s) with a close frame carrying ``code`` and ``reason``."""
        socks = self._targets(index)
        await self._await_all([self._enqueue_close(s, code, reason, auto=False) for s in socks])
        return len(socks)

    async def drop(self, *, index: int | None = None) -> int:
        """Abort the open socket(s)' TCP connection with no close frame (the client sees 1006)."""
        socks = self._targets(index)
        for s in socks:
            self._abort(s)
        await self._wait_closed(socks, 1.0)
        return len(socks)

    async def send_invalid_session(
        self,
        resumable: bool = False,
        *,
        close_code: int | None = 4903,
        reason: str | None = None,
        index: int | None = None,
    ) -> int:
        """Send op 9 ``d=resumable``, then close with ``close_code`` (None: leave it open)."""
        socks = self._targets(index)
        done: list[asyncio.Future[bool]] = []
        for s in socks:
            payload = _compact({"op": OpCode.INVALID_SESSION, "d": resumable})
            done.append(self._enqueue_frame(s, payload, OpCode.INVALID_SESSION, auto=False))
            if close_code is not None:
                text = CLOSE_REASONS.get(close_code, "") if reason is None else reason
                done.append(self._enqueue_close(s, close_code, text, auto=False))
        await self._await_all(done)
        return len(socks)

    async def send_raw(self, data: str | bytes, *, index: int | None = None) -> int:
        """Send anything: ``str`` as a text message, ``bytes`` as a binary one."""
        socks = self._targets(index)
        op = self._op_of(data)
        await self._await_all([self._enqueue_frame(s, data, op, auto=False) for s in socks])
        return len(socks)

    def _targets(self, index: int | None) -> list[_Socket]:
        socks = sorted(
            (s for s in self._sockets if s.is_open and not s.closing), key=lambda s: s.record.index
        )
        if index is None:
            return socks
        for s in socks:
            if s.record.index == index:
                return [s]
        raise LookupError(f"FakeGateway: connection {index} is not open")

    async def _rotate(self, socks: list[_Socket], close_after_s: float, *, auto: bool) -> None:
        payload = _compact({"op": OpCode.RECONNECT})
        await self._await_all(
            [self._enqueue_frame(s, payload, OpCode.RECONNECT, auto=auto) for s in socks]
        )
        await self._wait_closed(socks, close_after_s)
        still_open = [s for s in socks if s.is_open and not s.closing]
        await self._await_all(
            [self._enqueue_close(s, 4009, CLOSE_REASONS[4009], auto=auto) for s in still_open]
        )

    async def _await_all(self, futures: list[asyncio.Future[bool]]) -> None:
        if futures:
            # Bounded: a close is cut by websockets after close_timeout_s.
            await asyncio.wait(futures, timeout=self.close_timeout_s + 2.0)

    @staticmethod
    async def _wait_closed(socks: list[_Socket], timeout: float) -> None:
        waiters = [asyncio.create_task(s.closed.wait()) for s in socks if not s.closed.is_set()]
        if not waiters:
            return
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.ALL_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    @staticmethod
    def _op_of(data: str | bytes) -> int | None:
        try:
            msg = json.loads(data)
        except (ValueError, RecursionError):
            return None
        op = msg.get("op") if isinstance(msg, dict) else None
        return op if _is_int(op) else None

    # -- outbox ------------------------------------------------------------------------------

    def _enqueue_frame(
        self,
        sock: _Socket,
        data: str | bytes,
        op: int | None,
        *,
        auto: bool = True,
    ) -> asyncio.Future[bool]:
        done = asyncio.get_running_loop().create_future()
        sock.outbox.put_nowait(_Out("frame", data, op, auto, done=done))
        return done

    def _enqueue_close(
        self, sock: _Socket, code: int, reason: str, *, auto: bool = True
    ) -> asyncio.Future[bool]:
        sock.closing = True
        done = asyncio.get_running_loop().create_future()
        sock.outbox.put_nowait(_Out("close", code=code, reason=reason, auto=auto, done=done))
        return done

    def _close_with(self, sock: _Socket, code: int) -> None:
        self._enqueue_close(sock, code, CLOSE_REASONS.get(code, ""))

    def _abort(self, sock: _Socket) -> None:
        sock.closing = True
        sock.ws.transport.abort()

    def _muted(self, sock: _Socket) -> bool:
        return self.faults.silent and sock.bypass == 0

    async def _write_loop(self, sock: _Socket) -> None:
        # Runs until the socket's handler cancels it (the socket is gone).
        while True:
            item = await sock.outbox.get()
            ok = False
            try:
                ok = await self._write(sock, item)
            finally:
                if item.done is not None and not item.done.done():
                    item.done.set_result(ok)

    async def _write(self, sock: _Socket, item: _Out) -> bool:
        if sock.ws.state is not State.OPEN:
            return False
        if item.auto and self.faults.silent:
            return False
        if not item.auto:
            sock.bypass += 1
        try:
            if item.kind == "close":
                await sock.ws.close(item.code, item.reason)
            else:
                self._record(sock, "out", item.op, item.data)
                await sock.ws.send(item.data)
        except ConnectionClosed:
            return False
        except (UnicodeEncodeError, TypeError, ValueError) as exc:
            # A frame the test asked for that cannot be sent (e.g. a lone surrogate): say so,
            # and keep this socket's writer alive.
            log.warning("fake_gateway.unsendable_frame", error=f"{type(exc).__name__}: {exc}"[:200])
            return False
        finally:
            if not item.auto:
                sock.bypass -= 1
        return True

    # -- WebSocket side ----------------------------------------------------------------------

    def _check_ws_path(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0].rstrip("/") != WS_PATH:
            return connection.respond(404, "Not Found\n")
        return None

    async def _handle_socket(self, connection: ServerConnection) -> None:
        assert isinstance(connection, _FakeServerConnection)
        now = time.monotonic()
        record = ConnectionRecord(index=len(self._connections), opened_at=now)
        sock = _Socket(ws=connection, record=record, last_beat_at=now)
        connection.is_muted = lambda: self._muted(sock)
        connection.connection_lost_waiter.add_done_callback(lambda _: self._finish(sock))
        self._connections.append(record)
        self._sockets.add(sock)
        log.debug("fake_gateway.socket_opened", index=record.index)
        try:
            sock.tasks.append(asyncio.create_task(self._write_loop(sock)))
            sock.tasks.append(asyncio.create_task(self._watchdog(sock)))
            if self.faults.hello_delay_s > 0:
                sock.tasks.append(asyncio.create_task(self._delayed_hello(sock)))
            else:
                self._send_hello(sock)
            with contextlib.suppress(ConnectionClosed):
                async for message in connection:
                    self._on_message(sock, message)
        finally:
            if connection.state is State.CLOSED:
                self._finish(sock)
            for task in sock.tasks:
                task.cancel()
            await asyncio.gather(*sock.tasks, return_exceptions=True)
            while not sock.outbox.empty():
                item = sock.outbox.get_nowait()
                if item.done is not None and not item.done.done():
                    item.done.set_result(False)
            if sock.session is not None and sock.session.sock is sock:
                sock.session.sock = None
            self._sockets.discard(sock)

    def _finish(self, sock: _Socket) -> None:
        """Stamp the record when the TCP connection is gone (idempotent)."""
        if sock.closed.is_set():
            return
        sock.closed.set()
        rec = sock.record
        rec.closed_at = time.monotonic()
        proto = sock.ws.protocol
        if proto.close_sent is not None and proto.close_rcvd_then_sent is not True:
            rec.closed_by, rec.close_code = "server", proto.close_sent.code
            rec.close_reason = proto.close_sent.reason
        elif proto.close_rcvd is not None:
            rec.closed_by, rec.close_code = "client", proto.close_rcvd.code
            rec.close_reason = proto.close_rcvd.reason
        else:
            rec.closed_by, rec.close_code, rec.close_reason = "drop", 1006, ""
        log.debug(
            "fake_gateway.socket_closed",
            index=rec.index,
            close_code=rec.close_code,
            closed_by=rec.closed_by,
        )

    async def _delayed_hello(self, sock: _Socket) -> None:
        await asyncio.sleep(self.faults.hello_delay_s)
        if not sock.closing:
            self._send_hello(sock)

    def _send_hello(self, sock: _Socket) -> None:
        interval = self.faults.hello_interval
        if interval is NO_OVERRIDE:
            interval = self.heartbeat_interval_ms
        d = {} if interval is MISSING else {"heartbeat_interval": interval}
        sock.hello_sent = True
        sock.record.hello_sent = True
        sock.record.hello_interval = interval
        self._enqueue_frame(sock, _compact({"op": OpCode.HELLO, "d": d}), OpCode.HELLO)

    async def _watchdog(self, sock: _Socket) -> None:
        """The timed faults of one socket; cancelled with it."""
        f = self.faults
        if f.close_new_sockets_left > 0:
            f.close_new_sockets_left -= 1
            sock.tasks.append(
                asyncio.create_task(
                    self._close_new_socket(
                        sock, f.close_new_sockets_after_s, f.close_new_sockets_code
                    )
                )
            )
        while True:
            # Fine-grained only while a timed fault is armed: 1,000 idle sockets waking every
            # 10 ms made the fake itself the bottleneck of the many-connections benchmark.
            armed = f.heartbeat_timeout_s is not None or f.reconnect_every_s is not None
            await asyncio.sleep(_TICK_S if armed else _IDLE_TICK_S)
            if f.silent or sock.closing:
                continue
            now = time.monotonic()
            if (
                f.heartbeat_timeout_s is not None
                and now - sock.last_beat_at > f.heartbeat_timeout_s
            ):
                log.debug("fake_gateway.heartbeat_timeout", index=sock.record.index)
                self._close_with(sock, 4009)
                return
            if (
                f.reconnect_every_s is not None
                and sock.attached_at is not None
                and now - sock.attached_at >= f.reconnect_every_s
            ):
                log.debug("fake_gateway.rotation", index=sock.record.index)
                await self._rotate([sock], f.reconnect_close_after_s, auto=True)
                return

    async def _close_new_socket(self, sock: _Socket, after_s: float, code: int | None) -> None:
        await asyncio.sleep(after_s)
        if sock.closing or not sock.is_open:
            return
        if code is None:
            self._abort(sock)
        else:
            self._enqueue_close(sock, code, CLOSE_REASONS.get(code, ""), auto=False)

    def _on_message(self, sock: _Socket, message: str | bytes) -> None:
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            msg = None
        op = msg.get("op") if isinstance(msg, dict) else None
        op = op if _is_int(op) else None
        self._record(sock, "in", op, message)
        if op == OpCode.HEARTBEAT:
            assert isinstance(msg, dict)
            self._heartbeats.append((time.monotonic(), msg.get("d")))
            sock.last_beat_at = time.monotonic()
        elif op == OpCode.IDENTIFY:
            sock.record.identify_count += 1
        elif op == OpCode.RESUME:
            sock.record.resume_count += 1

        if sock.closing or self.faults.silent:
            return
        if not sock.hello_sent and self.faults.drop_early_frames:
            self._abort(sock)
            return
        if not isinstance(msg, dict):
            self._close_with(sock, 4002)
        elif op == OpCode.HEARTBEAT:
            self._on_heartbeat(sock, msg.get("d"))
        elif op == OpCode.IDENTIFY:
            self._on_identify(sock, msg.get("d"))
        elif op == OpCode.RESUME:
            self._on_resume(sock, msg.get("d"))
        else:
            self._close_with(sock, 4001)

    def _on_heartbeat(self, sock: _Socket, d: object) -> None:
        if d is not None and not _is_int(d):
            self._close_with(sock, 4002)
        elif self.faults.ack:
            self._enqueue_frame(sock, _compact({"op": OpCode.HEARTBEAT_ACK}), OpCode.HEARTBEAT_ACK)

    def _on_identify(self, sock: _Socket, d: object) -> None:
        f = self.faults
        if f.identify_close is not None:
            self._close_with(sock, f.identify_close)
            return
        if sock.session is not None:
            self._close_with(sock, 4005)
            return
        data = d if isinstance(d, dict) else {}
        if not self._auth_ok(data.get("token")):
            self._close_with(sock, 4004)
            return
        intents = data.get("intents")
        if not isinstance(intents, int) or isinstance(intents, bool) or intents < 0:
            self._close_with(sock, 4013)
            return
        if f.allowed_intents is not None and intents & ~f.allowed_intents:
            payload = _compact({"op": OpCode.INVALID_SESSION, "d": False})
            self._enqueue_frame(sock, payload, OpCode.INVALID_SESSION)
            self._close_with(sock, f.intents_close_code)
            return
        now = time.monotonic()
        if f.enforce_session_limit:
            recent = [t for t in self._identify_times if now - t < _CONCURRENCY_WINDOW_S]
            if self.session_start_remaining <= 0 or len(recent) >= self.max_concurrency:
                self._close_with(sock, 4008)
                return
        self._identify_times = [
            t for t in self._identify_times if now - t < _CONCURRENCY_WINDOW_S
        ] + [now]
        self.session_start_remaining = max(0, self.session_start_remaining - 1)
        shard = data.get("shard", [0, 1])
        session_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        session = _Session(session_id=session_id, shard=shard, intents=intents, seq=1)
        self._sessions[session_id] = session
        self._current_session = session
        self._attach(sock, session)
        ready = {
            "op": OpCode.DISPATCH,
            "s": session.seq,
            "t": "READY",
            "d": {
                "version": 1,
                "session_id": session_id,
                "user": {"id": self.bot_user_id, "username": self.bot_username, "bot": True},
                "shard": shard,
            },
        }
        self._enqueue_frame(sock, _compact(ready), OpCode.DISPATCH)
        log.debug("fake_gateway.ready", index=sock.record.index, session_id=session_id)

    def _on_resume(self, sock: _Socket, d: object) -> None:
        mode = self.faults.resume
        if sock.session is not None:
            self._close_with(sock, 4005)
            return
        if mode != "ok":
            self._refuse_resume(sock, mode)
            return
        data = d if isinstance(d, dict) else {}
        if not self._auth_ok(data.get("token")):
            self._close_with(sock, 4004)
            return
        session_id = data.get("session_id")
        session = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None:
            self._close_with(sock, 4006)
            return
        seq = data.get("seq")
        seq = 0 if seq is None else seq
        if not isinstance(seq, int) or isinstance(seq, bool):
            self._close_with(sock, 4002)
            return
        if seq > session.seq:
            self._close_with(sock, 4007)
            return
        self._attach(sock, session)
        for s, text in session.buffer:
            if s > seq:
                self._enqueue_frame(sock, text, OpCode.DISPATCH)
        resumed = {"op": OpCode.DISPATCH, "s": session.seq, "t": "RESUMED", "d": ""}
        self._enqueue_frame(sock, _compact(resumed), OpCode.DISPATCH)
        log.debug("fake_gateway.resumed", index=sock.record.index, session_id=session_id)

    def _refuse_resume(self, sock: _Socket, mode: str) -> None:
        if mode == "op9":
            payload = _compact({"op": OpCode.INVALID_SESSION, "d": False})
            self._enqueue_frame(sock, payload, OpCode.INVALID_SESSION)
        elif mode == "accept_then_close":
            self._close_with(sock, 1000)
        else:
            self._close_with(sock, int(mode))

    # -- REST side ---------------------------------------------------------------------------

    async def _route_http(self, request: HttpRequest) -> HttpReply | None:
        reply = self._answer_http(request)
        self._http_requests.append(
            HttpRecord(
                at=time.monotonic(),
                method=request.method,
                path=request.path,
                status=None if reply is None else reply.status,
            )
        )
        return reply

    def _answer_http(self, request: HttpRequest) -> HttpReply | None:
        if request.path == TOKEN_PATH:
            if request.method != "POST":
                return _json_reply(405, {"code": 405, "message": "method not allowed"})
            return self._answer_token(request)
        if request.path in ("/gateway", "/gateway/bot"):
            if request.method != "GET":
                return _json_reply(405, {"code": 405, "message": "method not allowed"})
            return self._answer_gateway(request)
        return _json_reply(404, {"code": 404, "message": "not found"})

    def _answer_token(self, request: HttpRequest) -> HttpReply | None:
        mode = self.faults.token_endpoint
        if mode == "hang":
            return None
        if mode == "http500":
            return _json_reply(500, {"code": 500, "message": "internal server error"})
        if mode == "error_body":
            return _json_reply(200, {"code": 100017, "message": "接口调用超过频率限制"})
        invalid = _json_reply(200, {"code": 100007, "message": "appid invalid"})
        if "application/json" not in request.headers.get("content-type", ""):
            return invalid
        try:
            doc = json.loads(request.body)
        except ValueError:
            return invalid
        if (
            not isinstance(doc, dict)
            or doc.get("appId") != self.app_id
            or doc.get("clientSecret") != self._client_secret
        ):
            return invalid
        token, remaining_s = self._token_for_request()
        return _json_reply(200, {"access_token": token, "expires_in": str(int(remaining_s))})

    def _answer_gateway(self, request: HttpRequest) -> HttpReply | None:
        mode = self.faults.gateway_endpoint
        if mode == "hang":
            return None
        if mode == "http500":
            return _json_reply(500, {"code": 500, "message": "internal server error"})
        if not self._auth_ok_http(request.headers.get("authorization", "")):
            return _json_reply(401, {"message": "token not exist or expire", "code": 11244})
        if request.path == "/gateway":
            return _json_reply(200, {"url": self.ws_url})
        return _json_reply(
            200,
            {
                "url": self.ws_url,
                "shards": 1,
                "session_start_limit": {
                    "total": self.session_start_total,
                    "remaining": self.session_start_remaining,
                    "reset_after": 86_400_000,
                    "max_concurrency": self.max_concurrency,
                },
            },
        )

    def _auth_ok_http(self, header: str) -> bool:
        return header.startswith("QQBot ") and self.is_valid_token(header[len("QQBot ") :])


def _json_reply(status: int, doc: object) -> HttpReply:
    return HttpReply(status, _compact(doc).encode("utf-8"))
