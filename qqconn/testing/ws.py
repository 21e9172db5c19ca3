"""The WebSocket side of the fake gateway: the gateway protocol of docs/protocol.md §1.

Hello first, Identify → READY, Heartbeat → ACK, Resume → replay + RESUMED. The reader never
awaits anything but the next message: it records the frame, decides (asking the pure
:mod:`qqconn.testing.sessions` books), and queues on the socket's outbox
(:mod:`qqconn.testing.sockets`). A **watchdog** task per socket ticks for the timed faults
(heartbeat timeout, periodic rotation, ``close_new_sockets``). The writer and the watchdog are
cancelled when the socket's TCP connection is gone, so nothing outlives its socket.

Every fault switch is read through :meth:`Faults.value` with the socket's index, so per-socket
faults (``faults.for_socket``, ``faults.for_next_sockets``) apply to their socket only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any, Final, Literal

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from qqconn._log import get_logger
from qqconn.protocol import OpCode
from qqconn.testing.faults import MISSING, NO_OVERRIDE
from qqconn.testing.payloads import compact
from qqconn.testing.records import ConnectionRecord, FrameRecord
from qqconn.testing.sessions import Session
from qqconn.testing.sockets import FakeServerConnection, Outgoing, Socket, wait_closed
from qqconn.testing.ws_inbound import on_message

if TYPE_CHECKING:
    from qqconn.testing.gateway import FakeGateway

__all__ = ["CLOSE_REASONS", "WS_PATH", "WebSocketSide"]

log = get_logger("qqconn.testing")

WS_PATH: Final = "/websocket"

#: Reason text the gateway puts in the close frames it decides on its own (observed texts
#: where docs/protocol.md §2 has one, the official meaning otherwise).
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

#: Watchdog tick while no timed fault is armed: 1,000 idle sockets waking every 10 ms made the
#: fake itself the bottleneck of the many-connections benchmark.
IDLE_TICK_S: Final = 0.1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def op_of(data: str | bytes) -> int | None:
    """The integer ``op`` of a message, or None when it is not a JSON object with one."""
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
        return None
    op = msg.get("op") if isinstance(msg, dict) else None
    return op if _is_int(op) else None


class WebSocketSide:
    """The gateway's WebSocket server; state shared with the façade lives on ``gw``."""

    def __init__(self, gw: FakeGateway) -> None:
        self.gw = gw
        self.server: Server | None = None
        self.port = 0
        self.sockets: set[Socket] = set()
        #: The records of connections whose TCP connection is not gone, by index (in order):
        #: ``live_connections`` is polled often and ``connections`` only grows.
        self.live: dict[int, ConnectionRecord] = {}
        self.tcp_connections: set[ServerConnection] = set()
        self.connections: list[ConnectionRecord] = []
        self.frames: list[FrameRecord] = []
        self.heartbeats: list[tuple[float, object]] = []

    def fault(self, sock: Socket, name: str) -> Any:
        return self.gw.faults.value(name, sock.index)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        self.server = await serve(
            self._handle_socket,
            host,
            port,
            process_request=self._check_path,
            create_connection=FakeServerConnection.connection_class(self.tcp_connections),
            compression=None,
            open_timeout=2.0,
            ping_interval=None,
            close_timeout=self.gw.close_timeout_s,
            max_size=None,
            server_header=None,
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def aclose(self, deadline: float) -> None:
        """Close every socket (1001, or a drop after ``shutdown_grace_s``); done by ``deadline``."""
        assert self.server is not None
        loop = asyncio.get_running_loop()
        self.server.close(close_connections=False)  # stop listening
        closers = [
            asyncio.create_task(s.ws.close(1001, CLOSE_REASONS[1001]))
            for s in self.sockets
            if s.ws.state is State.OPEN and not self.fault(s, "silent")
        ]
        if closers:
            await asyncio.wait(closers, timeout=self.gw.shutdown_grace_s)
        for conn in list(self.tcp_connections):
            conn.transport.abort()
        if closers:
            await asyncio.wait(closers, timeout=max(0.0, deadline - loop.time()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), max(0.01, deadline - loop.time()))

    # -- sockets -----------------------------------------------------------------------------

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0].rstrip("/") != WS_PATH:
            return connection.respond(404, "Not Found\n")
        return None

    async def _handle_socket(self, connection: ServerConnection) -> None:
        assert isinstance(connection, FakeServerConnection)
        now = time.monotonic()
        record = ConnectionRecord(index=len(self.connections), opened_at=now)
        self.gw.faults.socket_opened(record.index)
        sock = Socket(ws=connection, record=record, last_beat_at=now)
        connection.is_muted = lambda: self._muted(sock)
        connection.connection_lost_waiter.add_done_callback(lambda _: self._finish(sock))
        self.connections.append(record)
        self.live[record.index] = record
        self.sockets.add(sock)
        log.debug("fake_gateway.socket_opened", index=record.index)
        try:
            sock.tasks.append(asyncio.create_task(self._write_loop(sock)))
            sock.tasks.append(asyncio.create_task(self._watchdog(sock)))
            if self.fault(sock, "hello_delay_s") > 0:
                sock.tasks.append(asyncio.create_task(self._delayed_hello(sock)))
            else:
                self._send_hello(sock)
            with contextlib.suppress(ConnectionClosed):
                async for message in connection:
                    on_message(self, sock, message)
        finally:
            if connection.state is State.CLOSED:
                self._finish(sock)
            self._drop_session_after_client_close(sock)
            for task in sock.tasks:
                task.cancel()
            await asyncio.gather(*sock.tasks, return_exceptions=True)
            sock.fail_pending()
            if sock.session is not None and sock.session.sock is sock:
                sock.session.sock = None
            self.sockets.discard(sock)

    def _finish(self, sock: Socket) -> None:
        """Stamp the record when the TCP connection is gone (idempotent)."""
        if sock.closed.is_set():
            return
        sock.closed.set()
        rec = sock.record
        rec.closed_at = time.monotonic()
        self.live.pop(rec.index, None)
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

    def _drop_session_after_client_close(self, sock: Socket) -> None:
        """A client's own 1000/1001 ends its session (``drop_session_on_client_close``)."""
        rec, session = sock.record, sock.session
        if (
            session is None
            or rec.closed_by != "client"
            or rec.close_code not in (1000, 1001)
            or not self.fault(sock, "drop_session_on_client_close")
        ):
            return
        if self.gw._book.sessions.get(session.session_id) is session and session.sock is sock:
            self.gw._book.expire(session.session_id)
            log.debug("fake_gateway.session_dropped", index=sock.index, code=rec.close_code)

    async def _delayed_hello(self, sock: Socket) -> None:
        await asyncio.sleep(self.fault(sock, "hello_delay_s"))
        if not sock.closing:
            self._send_hello(sock)

    async def _hello_after_silence(self, sock: Socket) -> None:
        """Hello for a socket opened while ``silent`` was on, once it is lifted."""
        while self.fault(sock, "silent"):
            await asyncio.sleep(self.gw._tick_s)
        if not sock.closing and sock.is_open:
            self._send_hello(sock)

    def _heartbeat_timeout(self, sock: Socket) -> float | None:
        """How long this socket may go without a heartbeat before the gateway closes it."""
        explicit = self.fault(sock, "heartbeat_timeout_s")
        if explicit is not None:
            return float(explicit)
        intervals = self.fault(sock, "heartbeat_timeout_intervals")
        if intervals is None or not sock.hello_sent:
            return None
        announced = sock.record.hello_interval
        ms: float = self.gw.heartbeat_interval_ms
        if (
            isinstance(announced, (int, float))
            and not isinstance(announced, bool)
            and 100 <= announced <= 600_000
        ):
            ms = announced
        return float(intervals) * ms / 1000

    def _send_hello(self, sock: Socket) -> None:
        if self.fault(sock, "silent") and self.fault(sock, "hello_after_silence"):
            sock.tasks.append(asyncio.create_task(self._hello_after_silence(sock)))
            return
        interval = self.fault(sock, "hello_interval")
        if interval is NO_OVERRIDE:
            interval = self.gw.heartbeat_interval_ms
        d = {} if interval is MISSING else {"heartbeat_interval": interval}
        sock.hello_sent = True
        sock.last_beat_at = time.monotonic()  # the heartbeat clock starts with Hello
        sock.record.hello_sent = True
        sock.record.hello_interval = interval
        sock.enqueue_frame(compact({"op": OpCode.HELLO, "d": d}), OpCode.HELLO)

    async def _watchdog(self, sock: Socket) -> None:
        """The timed faults of one socket; cancelled with it."""
        f = self.gw.faults
        if f.close_new_sockets_left > 0:
            f.close_new_sockets_left -= 1
            after_s, code = f.close_new_sockets_after_s, f.close_new_sockets_code
            task = asyncio.create_task(self._close_new_socket(sock, after_s, code))
            f.close_new_sockets_pending += 1
            # A done callback, not a finally: a task cancelled before its first step never
            # runs its body.
            task.add_done_callback(lambda _task: f.spend_close_new_socket())
            sock.tasks.append(task)
        while True:
            timeout_s = self._heartbeat_timeout(sock)
            armed = (
                self.fault(sock, "heartbeat_timeout_s") is not None
                or self.fault(sock, "reconnect_every_s") is not None
            )
            tick = self.gw._tick_s if armed else IDLE_TICK_S
            if timeout_s is not None:
                tick = min(tick, max(self.gw._tick_s, timeout_s / 10))
            await asyncio.sleep(tick)
            if self.fault(sock, "silent") or sock.closing:
                continue
            timeout_s = self._heartbeat_timeout(sock)
            every_s = self.fault(sock, "reconnect_every_s")
            now = time.monotonic()
            if timeout_s is not None and now - sock.last_beat_at > timeout_s:
                log.debug("fake_gateway.heartbeat_timeout", index=sock.index)
                self.close_with(sock, 4009)
                return
            attached_at = sock.attached_at
            if every_s is not None and attached_at is not None and now - attached_at >= every_s:
                log.debug("fake_gateway.rotation", index=sock.index)
                after_s = self.fault(sock, "reconnect_close_after_s")
                await self.rotate([sock], after_s, auto=True)
                return

    async def _close_new_socket(self, sock: Socket, after_s: float, code: int | None) -> None:
        await asyncio.sleep(after_s)
        if not sock.closing and sock.is_open:
            if code is None:
                sock.abort()
            else:
                sock.enqueue_close(code, CLOSE_REASONS.get(code, ""), auto=False)
        # Done (and counted spent) only when the socket is gone: until then the close may
        # still be on its way to the client. The socket's teardown cancels this wait.
        await sock.closed.wait()

    def attach(self, sock: Socket, session: Session[Socket]) -> None:
        left = self.gw._book.attach(session, sock)
        if left is not None:
            left.session = None
        sock.session = session
        sock.attached_at = time.monotonic()
        sock.record.session_id = session.session_id

    # -- frames out --------------------------------------------------------------------------

    def record(
        self, sock: Socket, direction: Literal["in", "out"], op: int | None, data: str | bytes
    ) -> None:
        binary = isinstance(data, bytes)
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        frame = FrameRecord(
            at=time.monotonic(),
            direction=direction,
            op=op,
            payload_text=text,
            connection=sock.index,
            binary=binary,
        )
        sock.record.frames.append(frame)
        self.frames.append(frame)

    def close_with(self, sock: Socket, code: int) -> None:
        sock.enqueue_close(code, CLOSE_REASONS.get(code, ""))

    def _muted(self, sock: Socket) -> bool:
        return bool(self.fault(sock, "silent")) and sock.bypass == 0

    async def _write_loop(self, sock: Socket) -> None:
        # Runs until the socket's handler cancels it (the socket is gone).
        while True:
            item = await sock.outbox.get()
            ok = False
            try:
                ok = await self._write(sock, item)
            finally:
                if item.done is not None and not item.done.done():
                    item.done.set_result(ok)

    async def _write(self, sock: Socket, item: Outgoing) -> bool:
        if sock.ws.state is not State.OPEN:
            return False
        if item.auto and self.fault(sock, "silent"):
            return False
        if not item.auto:
            sock.bypass += 1
        try:
            if item.kind == "close":
                await sock.ws.close(item.code, item.reason)
            else:
                self.record(sock, "out", item.op, item.data)
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

    # -- fault actions -----------------------------------------------------------------------

    def targets(self, index: int | None) -> list[Socket]:
        """The open sockets (by index order), or the one with ``index``; ``LookupError``."""
        socks = sorted(
            (s for s in self.sockets if s.is_open and not s.closing), key=lambda s: s.index
        )
        if index is None:
            return socks
        for s in socks:
            if s.index == index:
                return [s]
        raise LookupError(f"FakeGateway: connection {index} is not open")

    async def rotate(self, socks: list[Socket], close_after_s: float, *, auto: bool) -> None:
        """op 7, then close 4009 each socket the client did not close within ``close_after_s``."""
        payload = compact({"op": OpCode.RECONNECT})
        await self.await_all([s.enqueue_frame(payload, OpCode.RECONNECT, auto=auto) for s in socks])
        await wait_closed(socks, close_after_s)
        still_open = [s for s in socks if s.is_open and not s.closing]
        await self.await_all(
            [s.enqueue_close(4009, CLOSE_REASONS[4009], auto=auto) for s in still_open]
        )

    async def await_all(self, futures: list[asyncio.Future[bool]]) -> None:
        if futures:
            # Bounded: a close is cut by websockets after close_timeout_s.
            await asyncio.wait(futures, timeout=self.gw.close_timeout_s + 2.0)

    async def invalid_session(
        self, socks: list[Socket], resumable: bool, close_code: int | None, reason: str | None
    ) -> None:
        done: list[asyncio.Future[bool]] = []
        for s in socks:
            payload = compact({"op": OpCode.INVALID_SESSION, "d": resumable})
            done.append(s.enqueue_frame(payload, OpCode.INVALID_SESSION, auto=False))
            if close_code is not None:
                text = CLOSE_REASONS.get(close_code, "") if reason is None else reason
                done.append(s.enqueue_close(close_code, text, auto=False))
        await self.await_all(done)
