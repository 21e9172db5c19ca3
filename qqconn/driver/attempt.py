"""One connection attempt's I/O: token, gateway URL, WebSocket, the reader, sends, the close.

An :class:`Attempt` is started by the machine's ``OpenSocket`` and lives on one task: it fetches
the token and the gateway URL, opens the socket, reads it until it closes and reports each
frame as an event. Its ``finally`` closes the socket within ``close_timeout_s``, whatever the
peer does, so nothing of a socket outlives its attempt. It decides nothing: every frame, failure
and close goes to the machine through the :class:`~qqconn.driver.feed.Feeder`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State as WsState

from qqconn import commands as cmd
from qqconn import events as ev
from qqconn import protocol as proto
from qqconn.driver.permits import IdentifyLimiter
from qqconn.driver.tokens import Secret, TokenSource, tls_context
from qqconn.errors import CredentialsRefused, RemoteProtocolError
from qqconn.machine import DETAIL_CHARS
from qqconn.policy import Policy

if TYPE_CHECKING:
    from qqconn.driver.feed import Feeder

__all__ = ["Attempt", "RunContext"]


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every attempt of one ``run()`` shares: who we are, where to connect, with what."""

    app_id: str
    intents: int
    shard: tuple[int, int]
    api_base: str
    policy: Policy
    http: httpx.AsyncClient
    tokens: TokenSource
    tg: asyncio.TaskGroup
    #: the identify limiter this shard's Identifies ask (shared by every shard of the app)
    permits: IdentifyLimiter


class Attempt:
    """One connection attempt: its task, its socket, its token, the close it was asked for."""

    def __init__(self, number: int, refresh_token: bool, run: RunContext, feeder: Feeder) -> None:
        self.number = number
        self.refresh_token = refresh_token
        self._run = run
        self._feeder = feeder
        self.task: asyncio.Task[None] | None = None
        self.ws: ClientConnection | None = None
        self.token: Secret | None = None
        self.close_code = 1000
        self.close_reason = ""
        self.closing = False

    def start(self) -> None:
        """Start the attempt's task in the run's task group."""
        self.task = self._run.tg.create_task(self._main(), name=f"qqconn-attempt-{self.number}")

    def close(self, code: int, reason: str) -> None:
        """End the attempt: its socket is closed with ``code`` by the task's ``finally``."""
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        self.close_reason = reason
        # The reader feeds its own SocketClosed; it is already on its way out.
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    # -- sends -------------------------------------------------------------------------------

    def send_identify(self) -> None:
        """Send op 2 Identify with this attempt's token; once it has left, the limiter's
        window runs from then (docs/behaviour.md rule 17)."""
        run = self._run
        self._send_soon(
            "identify", lambda: proto.identify_payload(self._token(), run.intents, run.shard)
        )

    def send_resume(self, session_id: str, seq: int | None) -> None:
        """Send op 6 Resume of ``session_id`` from ``seq``."""
        self._send_soon("resume", lambda: proto.resume_payload(self._token(), session_id, seq))

    def send_heartbeat(self, seq: int | None) -> None:
        """Send op 1 Heartbeat; its success or failure is reported to the machine.

        No task per heartbeat: while the socket is open the send runs at once, in this frame,
        and a frame that fits the socket's buffer is written before this returns (the usual
        case). Only a send that has to wait (the peer is not reading) goes on to a task.
        """
        ws = self.ws
        if ws is None or self.closing:
            return
        if ws.state is not WsState.OPEN:  # closing: the library waits for the close (a task)
            self._send_soon("heartbeat", lambda: proto.heartbeat_payload(seq), report=True)
            return
        try:
            payload = proto.heartbeat_payload(seq)
        except Exception:  # a bug here ends this connection, never the host
            self._feeder.internal_error(self.number)
            return
        send = self._send("heartbeat", payload, True)
        try:
            waiting_on = send.send(None)
        except StopIteration:
            return  # written (or its failure reported) already
        except Exception:  # a bug here ends this connection, never the host
            self._feeder.internal_error(self.number)
            return
        self._run.tg.create_task(_carry_on(send, waiting_on), name="qqconn-send-heartbeat")

    def _token(self) -> str:
        assert self.token is not None
        return self.token.reveal()

    def _send_soon(self, what: str, build: Callable[[], str], *, report: bool = False) -> None:
        if self.ws is None or self.closing:
            return
        try:
            payload = build()
        except Exception:  # a bug here ends this connection, never the host
            self._feeder.internal_error(self.number)
            return
        self._run.tg.create_task(self._send(what, payload, report), name=f"qqconn-send-{what}")

    async def _send(self, what: str, payload: str, report: bool) -> None:
        assert self.ws is not None
        feeder = self._feeder
        try:
            await self.ws.send(payload)
        except Exception as exc:
            feeder.log.warning(
                "qqconn.send_failed", what=what, error=f"{type(exc).__name__}: {exc}"[:DETAIL_CHARS]
            )
            if report:
                feeder.feed(ev.HeartbeatSendFailed(self.number, feeder.clock(), type(exc).__name__))
            return
        if what == "identify":
            try:
                await self._run.permits.identify_sent(self._run.shard[0])
            except Exception as exc:  # the store is away: the grant's own window still holds
                feeder.log.warning(
                    "qqconn.identify_limiter_unavailable",
                    error=f"{type(exc).__name__}: {exc}"[:DETAIL_CHARS],
                )
        if report:
            feeder.feed(ev.HeartbeatSent(self.number, feeder.clock()))

    # -- the attempt's task ------------------------------------------------------------------

    async def _main(self) -> None:
        feeder = self._feeder
        try:
            ws = await self._open()
            if ws is None:
                return
            self.ws = ws
            feeder.feed(ev.SocketOpened(self.number, feeder.clock()))
            feeder.obs.connection_opened()
            await self._read(ws)
        except Exception:  # a bug here ends this connection, never the host
            feeder.internal_error(self.number)
        finally:
            if self.ws is not None:
                await self._close_ws(self.ws)
            feeder.forget(self)

    async def _open(self) -> ClientConnection | None:
        """Token, gateway URL, WebSocket. Reports ConnectFailed and returns None on failure."""
        run, feeder = self._run, self._feeder
        stage, url = "token", run.tokens.url
        try:
            feeder.feed(ev.ConnectProgressed(self.number, feeder.clock(), stage, url))
            self.token = await run.tokens.get(refresh=self.refresh_token)
            stage, url = "gateway", f"{run.api_base}/gateway/bot"
            feeder.feed(ev.ConnectProgressed(self.number, feeder.clock(), stage, url))
            response = await run.http.get(
                url,
                headers={
                    "Authorization": f"QQBot {self.token.reveal()}",
                    "X-Union-Appid": run.app_id,
                },
            )
            gateway = proto.parse_gateway_bot(response.status_code, response.content)
            if gateway.limit is not None:
                run.permits.observe(gateway.limit)
            ws_url = gateway.url
            stage, url = "handshake", run.tokens.scrub(ws_url)  # reported: never a secret
            feeder.feed(ev.ConnectProgressed(self.number, feeder.clock(), stage, url))
            return await websockets.connect(
                ws_url,
                ssl=tls_context() if ws_url.startswith("wss://") else None,
                open_timeout=run.policy.connect_timeout_s,
                close_timeout=run.policy.close_timeout_s,
                ping_interval=None,  # liveness is the machine's: heartbeats and ACKs
                max_size=run.policy.max_frame_bytes,
                compression=None,
                user_agent_header="qqconn/0.1",
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            detail = run.tokens.scrub(f"{type(exc).__name__}: {exc}")[:DETAIL_CHARS]
            feeder.log.warning("qqconn.connect_failed", stage=stage, url=url, error=detail)
            refused = isinstance(exc, CredentialsRefused)
            feeder.feed(ev.ConnectFailed(self.number, feeder.clock(), stage, detail, refused, url))
            return None

    async def _read(self, ws: ClientConnection) -> None:
        n = self.number
        feeder = self._feeder
        feed, execute, clock, log = feeder.feed, feeder.execute, feeder.clock, feeder.log
        machine, obs = feeder.machine, feeder.obs
        handle_dispatch, put, seen = (
            machine.handle_dispatch,
            feeder.host.deliver,
            obs.frame_received,
        )
        deliver = cmd.DeliverDispatch
        code: int | None = None
        reason = ""
        sent: int | None = None
        try:
            while True:
                message = await ws.recv()
                now = clock()
                seen(now)
                try:
                    frame = proto.parse_frame(message)
                except RemoteProtocolError as exc:
                    log.warning("qqconn.bad_frame", error=str(exc))
                    feed(ev.FrameRejected(n, now, str(exc)[:DETAIL_CHARS]))
                    if self.closing:
                        return
                    continue
                if type(frame) is proto.Dispatch:  # the machine's fast path: one call, no event
                    command = handle_dispatch(n, now, frame)
                    if type(command) is deliver:
                        put(command)
                        if frame.seq is None:
                            log.warning("qqconn.dispatch_without_seq", t=frame.type)
                    elif command is not None:
                        execute(command)
                    continue
                acks = machine.acks
                feed(_event_for(frame, n, now))
                if machine.acks != acks and machine.last_ack_latency_s is not None:
                    obs.heartbeat_acked(machine.last_ack_latency_s)  # every ACK, not a sample
                if self.closing:  # the machine ended this attempt (op 7, op 9, ...): leave now
                    return
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                code, reason = exc.rcvd.code, exc.rcvd.reason
            if exc.sent is not None:
                sent = exc.sent.code
        except OSError as exc:
            reason = type(exc).__name__
        feed(ev.SocketClosed(n, clock(), code, reason, sent_code=sent))

    async def _close_ws(self, ws: ClientConnection) -> None:
        """Close within ``Policy.close_bound_s``, whatever the peer does."""
        try:
            async with asyncio.timeout(self._run.policy.close_bound_s):
                await ws.close(self.close_code, self.close_reason)
        except (TimeoutError, OSError, ConnectionClosed):
            pass
        except asyncio.CancelledError:
            ws.transport.abort()
            raise
        finally:
            if ws.transport is not None and not ws.transport.is_closing():
                ws.transport.abort()


async def _carry_on(coro: Coroutine[Any, Any, None], waiting_on: object) -> None:
    """Run the rest of a coroutine that was started outside any task and suspended on
    ``waiting_on``, as this task's own (cancellation reaches it too)."""
    await _Rest(coro, waiting_on)


class _Rest:
    """An awaitable that hands a suspended coroutine's pending wait to the awaiting task, then
    drives the coroutine on to its end: what the task would have done had it started it."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, None], first: object) -> None:
        self._coro, self._first = coro, first

    def __await__(self) -> Generator[Any, Any, None]:
        coro, value = self._coro, self._first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like: into the coroutine
                try:
                    value = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = coro.send(sent)
                except StopIteration:
                    return


def _event_for(frame: proto.Inbound, n: int, now: float) -> ev.Event:
    """The event a (non-dispatch) frame of attempt ``n`` is to the machine."""
    match frame:
        case proto.HeartbeatAck():
            return ev.HeartbeatAcked(n, now)
        case proto.Hello(interval_ms=raw):
            return ev.HelloReceived(n, now, raw)
        case proto.Ready(session_id=sid, seq=seq, data=data, event_id=event_id):
            return ev.ReadyReceived(n, now, sid, seq, proto.Dispatch(seq, "READY", data, event_id))
        case proto.Resumed(seq=seq):
            return ev.ResumedReceived(n, now, seq)
        case proto.Reconnect():
            return ev.ReconnectRequested(n, now)
        case proto.InvalidSession(resumable=resumable):
            return ev.InvalidSessionReceived(n, now, resumable)
        case proto.Heartbeat():
            return ev.HeartbeatRequested(n, now)
    raise AssertionError(f"unhandled frame {frame!r}")  # pragma: no cover
