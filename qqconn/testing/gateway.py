"""A faithful fake QQ Bot gateway, with fault injection, on loopback sockets.

Theory of operation
-------------------
:class:`FakeGateway` runs two servers on the caller's event loop, both on ``127.0.0.1`` with
ephemeral ports, and keeps the books they share. It is a façade over four parts:

* :mod:`qqconn.testing.sessions` — pure bookkeeping: tokens, sessions, ``s`` counters, replay
  buffers, who may Identify and who may Resume (no sockets, no asyncio, no clock);
* :mod:`qqconn.testing.ws` and :mod:`qqconn.testing.sockets` — the WebSocket side
  (``websockets.asyncio.server``) speaking the gateway protocol of docs/protocol.md §1;
* :mod:`qqconn.testing.rest` — the REST side (h11 over asyncio streams): the token endpoint,
  ``/gateway[/bot]`` and the message APIs adapters reply through;
* :mod:`qqconn.testing.payloads` — the bytes it writes (frames, realistic event data, REST
  answer bodies).

:meth:`FakeGateway.dispatch` always buffers the frame, and sends it only when the session is
attached to an open socket; a later Resume replays what the client missed. Everything the
gateway sees and does is recorded with ``time.monotonic()`` stamps (:class:`ConnectionRecord`,
:class:`FrameRecord`, :class:`HttpRecord`, :class:`ApiCall`). The fake never logs the client
secret or a token, and never records one. :meth:`FakeGateway.aclose` cuts everything within
about ``shutdown_grace_s`` + 1 s.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, Literal, Self

from qqconn._log import get_logger
from qqconn.protocol import OpCode
from qqconn.testing import payloads
from qqconn.testing._http import H11Server, HttpReply, HttpRequest
from qqconn.testing.defaults import DEFAULT_APP_ID, DEFAULT_CLIENT_SECRET
from qqconn.testing.faults import Faults, _Sentinel
from qqconn.testing.gateway_settings import GatewaySettings
from qqconn.testing.records import ApiCall, ConnectionRecord, FrameRecord, HttpRecord, MessageRoute
from qqconn.testing.rest import TOKEN_PATH, ApiAnswer, RestSide
from qqconn.testing.sessions import Session, SessionBook, TokenBook
from qqconn.testing.sockets import Socket, wait_closed
from qqconn.testing.ws import CLOSE_REASONS, WS_PATH, WebSocketSide, op_of

__all__ = ["CLOSE_REASONS", "TOKEN_PATH", "WS_PATH", "FakeGateway"]

log = get_logger("qqconn.testing")

#: Poll step of :meth:`FakeGateway.wait_for` and the watchdog tick while a timed fault is
#: armed. Read when a gateway is built (``bench/gateway_proc.py --tick`` patches it first).
_TICK_S: Final = 0.01

#: Default of ``dispatch(d=...)``: a realistic ``d`` for the event type.
_REALISTIC: Final[Any] = _Sentinel("REALISTIC")


def is_loopback(host: str) -> bool:
    """True for an IPv4/IPv6 loopback address literal: the only hosts the fake serves (a name
    such as ``localhost`` may resolve to two families, each with its own ephemeral port)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FakeGateway(GatewaySettings):
    """A fake QQ gateway (REST + WebSocket) on loopback, for integration tests.

    Use it as ``async with FakeGateway(...) as gw:``; it serves on the running loop until the
    block ends. ``gw.token_url``, ``gw.api_base`` and ``gw.ws_url`` are what a client needs,
    ``gw.app_id`` and ``gw.client_secret`` the credentials it accepts; ``gw.faults`` switches
    misbehaviour on; ``gw.connections``, ``gw.frames`` and ``gw.api_calls`` tell what happened.
    All waits are bounded; closing takes at most about ``shutdown_grace_s`` + 1 s, even with a
    hanging token request or a client that never answers the close handshake.

    Lenient where real clients differ (unknown top-level keys such as botgo's ``"Session"``,
    missing ``properties`` or ``shard``, heartbeats before Identify, binary frames holding
    JSON), strict where a client bug should show (Discord semantics where QQ is silent):
    a frame that is not a JSON object → 4002; an op the gateway does not take → 4001;
    a heartbeat ``d`` other than null or an integer → 4002; Identify or Resume on a socket
    that already has a session → 4005; Identify without integer ``intents`` → 4013;
    a token other than ``"QQBot <valid token>"`` → 4004.

    Both servers listen on ``host`` (loopback only: ``127.0.0.1`` unless told ``::1`` or
    another loopback address), on ``http_port`` / ``ws_port`` (0: an ephemeral port).

    Everything runs on the loop that called :meth:`start`; call the methods from it.
    """

    def __init__(
        self,
        *,
        app_id: str = DEFAULT_APP_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
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
        host: str = "127.0.0.1",
        http_port: int = 0,
        ws_port: int = 0,
    ) -> None:
        if not is_loopback(host):
            raise ValueError(f"FakeGateway: host must be a loopback address, got {host!r}")
        self.app_id = app_id
        self._host = host
        self._ports = (http_port, ws_port)
        self._client_secret = client_secret
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.bot_user_id = bot_user_id
        self.bot_username = bot_username
        self.close_timeout_s = close_timeout_s
        self.shutdown_grace_s = shutdown_grace_s
        self.faults = Faults()
        self._rng = random.Random(seed)
        self._tick_s: float = _TICK_S
        #: What ``/gateway[/bot]`` hands out instead of the fake's own WebSocket URL (a
        #: :class:`~qqconn.testing.proxy.FaultProxy`'s, say). None: its own.
        self.advertised_ws_url: str | None = None
        self._token_book = TokenBook(
            self._rng, ttl_s=token_ttl_s, refresh_window_s=token_refresh_window_s
        )
        self._book: SessionBook[Socket] = SessionBook(
            self._rng, session_start_total=session_start_total, max_concurrency=max_concurrency
        )
        #: What ``/gateway/bot`` answers as ``shards`` (the recommended shard count).
        self.recommended_shards = 1
        self._ws = WebSocketSide(self)
        self._rest = RestSide(self)
        self._http = H11Server(self._rest.route)
        self._http_port = 0
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
        self._http_port = await self._http.start(self._host, self._ports[0])
        try:
            await self._ws.start(self._host, self._ports[1])
        except BaseException:
            await self._http.aclose()
            raise
        log.debug("fake_gateway.started", api_base=self.api_base, ws_url=self.ws_url)
        return self

    async def aclose(self) -> None:
        """Close every socket (1001, or a drop after ``shutdown_grace_s``) and both servers.

        Bounded by ``shutdown_grace_s`` + 1 s: whatever has not finished closing by then,
        including half-done WebSocket handshakes and hanging HTTP requests, is aborted.
        """
        if self._state != "running":
            self._state = "closed"
            return
        self._state = "closed"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_grace_s + 1.0
        await self._ws.aclose(deadline)
        await self._http.aclose(timeout_s=max(0.01, deadline - loop.time()))
        log.debug("fake_gateway.closed", connections=len(self._ws.connections))

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- tokens ------------------------------------------------------------------------------

    def valid_token(self) -> str:
        """The token the token endpoint would hand out now (issuing one if needed)."""
        token, _ = self._token_book.for_request(time.monotonic())
        return token

    def rotate_token(self, *, revoke_old: bool = True) -> str:
        """Issue a new current token; with ``revoke_old`` every earlier token stops working."""
        return self._token_book.rotate(time.monotonic(), revoke_old=revoke_old)

    def revoke_tokens(self) -> None:
        """Invalidate every token (the next request to the token endpoint issues a new one)."""
        self._token_book.revoke_all()

    def is_valid_token(self, token: str) -> bool:
        """True when ``token`` (bare, without ``QQBot ``) was issued, not revoked, not expired."""
        return self._token_book.is_valid(token, time.monotonic())

    # -- sessions and events -----------------------------------------------------------------

    @property
    def current_session_id(self) -> str | None:
        """The session of the most recent successful Identify (None before any)."""
        current = self._book.current
        return current.session_id if current else None

    @property
    def session_ids(self) -> list[str]:
        """Every session still known (expired ones excluded), oldest first."""
        return list(self._book.sessions)

    def expire_session(self, session_id: str | None = None) -> None:
        """Forget a session (default: the current one): a Resume of it now gets 4006."""
        session = self._book.expire(session_id)
        if session.sock is not None:
            session.sock.session = None
            session.sock = None

    def session_seq(self, session_id: str | None = None) -> int:
        """The latest ``s`` of a session (default: the current one)."""
        return self._book.get(session_id).seq

    def event_data(self, t: str, **overrides: Any) -> dict[str, Any]:
        """A realistic ``d`` for event type ``t`` (what :meth:`dispatch` sends by default),
        with ``overrides`` replacing top-level keys: ``gw.event_data("C2C_MESSAGE_CREATE",
        content="hi")``. Every one has an ``id``; see :func:`qqconn.testing.payloads.default_data`.
        """
        return payloads.default_data(
            t, self._rng, now_unix=time.time(), bot_user_id=self.bot_user_id, **overrides
        )

    async def dispatch(self, t: str, d: Any = _REALISTIC, *, session_id: str | None = None) -> int:
        """Accept an op 0 event into a session (default: the current one) and return its ``s``.

        The frame ``{"op":0,"s","t","id":"<t>:<random>","d"}`` is buffered for replay, and sent
        at once if the session is attached to an open socket; this waits until it was written
        (or found unsendable). Without ``d`` the event carries :meth:`event_data` for ``t``
        (ids, author, content, timestamp); ``d`` is sent exactly as given otherwise (``None``
        sends ``null``). Raises ``LookupError`` when there is no such session.
        """
        seq, done = self._accept(t, d, session_id)
        if done is not None:
            await done
        return seq

    def dispatch_nowait(self, t: str, d: Any = _REALISTIC, *, session_id: str | None = None) -> int:
        """Like :meth:`dispatch` but without waiting for the write (for bursts); keeps order."""
        seq, _ = self._accept(t, d, session_id)
        return seq

    def shard_session_id(self, shard_id: int) -> str | None:
        """The session shard ``shard_id`` holds now (its newest Identify), or None."""
        session = self._book.by_shard.get(shard_id)
        return None if session is None else session.session_id

    def guild_shard(self, guild_id: int | str) -> int:
        """The shard a guild's events are routed to: ``(guild_id >> 22) % shards``."""
        return self._book.route(int(guild_id))

    async def dispatch_guild(
        self, t: str, guild_id: int | str, d: Any = _REALISTIC
    ) -> tuple[int, int]:
        """Dispatch a guild event to the session of the shard the guild routes to
        (:meth:`guild_shard`); returns ``(shard_id, s)``. Without ``d``, a realistic ``d``
        whose ``guild_id`` is this guild. ``LookupError`` when that shard has no session."""
        shard_id = self.guild_shard(guild_id)
        session = self._book.by_shard.get(shard_id)
        if session is None:
            raise LookupError(f"FakeGateway: shard {shard_id} has no session")
        if d is _REALISTIC:
            d = self.event_data(t, guild_id=str(guild_id))
        return shard_id, await self.dispatch(t, d, session_id=session.session_id)

    def accepted(self, session_id: str | None = None) -> list[int]:
        """The ``s`` of every dispatch a session accepted (default: the current one)."""
        return [s for s, _ in self._book.get(session_id).buffer]

    def _accept(
        self, t: str, d: Any, session_id: str | None
    ) -> tuple[int, asyncio.Future[bool] | None]:
        session = self._book.get(session_id)
        if d is _REALISTIC:
            d = self.event_data(t)
        seq, text = self._book.accept(session, t, d)
        done = None
        if session.sock is not None and session.sock.is_open:
            done = session.sock.enqueue_frame(text, OpCode.DISPATCH)
        return seq, done

    # Kept for harnesses that reach into the books (bench/gateway_proc.py).
    @property
    def _sessions(self) -> dict[str, Session[Socket]]:
        return self._book.sessions

    def _session(self, session_id: str | None) -> Session[Socket]:
        return self._book.get(session_id)

    # -- recording ---------------------------------------------------------------------------

    @property
    def connections(self) -> Sequence[ConnectionRecord]:
        """Every WebSocket connection accepted so far, in opening order."""
        return self._ws.connections

    @property
    def live_connections(self) -> list[ConnectionRecord]:
        """Connections whose TCP connection is not gone yet (closing ones included)."""
        return list(self._ws.live.values())

    @property
    def frames(self) -> Sequence[FrameRecord]:
        """Every frame in and out, on every connection, in order."""
        return self._ws.frames

    @property
    def heartbeats(self) -> Sequence[tuple[float, object]]:
        """``(at, d)`` of every client heartbeat received."""
        return self._ws.heartbeats

    @property
    def http_requests(self) -> Sequence[HttpRecord]:
        """Every REST request (token endpoint included), without bodies."""
        return self._rest.http_requests

    @property
    def api_calls(self) -> Sequence[ApiCall]:
        """Every call to a message API (authorized or not), in order, tokens masked."""
        return self._rest.api_calls

    def replies(self, route: MessageRoute | None = None) -> list[ApiCall]:
        """Authorized message API calls (optionally of one route): what the bot sent."""
        return [c for c in self._rest.api_calls if c.authorized and route in (None, c.route)]

    @property
    def identifies(self) -> int:
        """Identify frames received, on all connections."""
        return sum(c.identify_count for c in self._ws.connections)

    @property
    def resumes(self) -> int:
        """Resume frames received, on all connections."""
        return sum(c.resume_count for c in self._ws.connections)

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
            await asyncio.sleep(self._tick_s)

    async def wait_for_connections(self, n: int, timeout: float = 5.0) -> ConnectionRecord:
        """Wait until ``n`` connections were accepted in total; return the n-th."""
        await self.wait_for(
            lambda: len(self._ws.connections) >= n, timeout, what=f"{n} connection(s) accepted"
        )
        return self._ws.connections[n - 1]

    async def wait_for_replies(
        self, n: int, *, route: MessageRoute | None = None, timeout: float = 5.0
    ) -> list[ApiCall]:
        """Wait until ``n`` authorized message API calls (of ``route``) arrived; return them."""
        await self.wait_for(
            lambda: len(self.replies(route)) >= n, timeout, what=f"{n} {route or 'message'} reply"
        )
        return self.replies(route)

    # -- REST answers ------------------------------------------------------------------------

    def answer_messages(
        self, answer: ApiAnswer, *, route: MessageRoute | None = None, times: int | None = None
    ) -> None:
        """Answer message API calls with ``answer``: for one ``route`` or all (None), for the
        next ``times`` calls, or from now on (None, replacing the earlier standing answer).

        Per call the route's queued ``times`` answers come first (in order), then its standing
        answer, then the same for all routes, then a realistic success. Unauthorized calls
        always get 401 and consume nothing."""
        self._rest.set_answer(answer, route, times)

    def clear_answers(self) -> None:
        """Back to realistic success answers on every message route."""
        self._rest.clear_answers()

    # Kept as the override point of harnesses that add routes (bench/gateway_proc.py).
    def _answer_http(self, request: HttpRequest) -> HttpReply | None:
        return self._rest.answer(request)

    def _auth_ok_http(self, header: str) -> bool:
        return self._rest.authorizes(header)

    # -- fault actions -----------------------------------------------------------------------

    async def send_reconnect(self, close_after_s: float = 0.2, *, index: int | None = None) -> int:
        """Send op 7 to the open socket(s), then close 4009 "Session timed out" each one the
        client has not closed within ``close_after_s``. Returns the number of sockets hit."""
        socks = self._ws.targets(index)
        await self._ws.rotate(socks, close_after_s, auto=False)
        return len(socks)

    async def close(self, code: int, reason: str = "", *, index: int | None = None) -> int:
        """Close the open socket(s) with a close frame carrying ``code`` and ``reason``."""
        socks = self._ws.targets(index)
        await self._ws.await_all([s.enqueue_close(code, reason, auto=False) for s in socks])
        return len(socks)

    async def drop(self, *, index: int | None = None) -> int:
        """Abort the open socket(s)' TCP connection with no close frame (the client sees 1006)."""
        socks = self._ws.targets(index)
        for s in socks:
            s.abort()
        await wait_closed(socks, 1.0)
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
        socks = self._ws.targets(index)
        await self._ws.invalid_session(socks, resumable, close_code, reason)
        return len(socks)

    async def send_raw(self, data: str | bytes, *, index: int | None = None) -> int:
        """Send anything: ``str`` as a text message, ``bytes`` as a binary one."""
        socks = self._ws.targets(index)
        op = op_of(data)
        await self._ws.await_all([s.enqueue_frame(data, op, auto=False) for s in socks])
        return len(socks)
