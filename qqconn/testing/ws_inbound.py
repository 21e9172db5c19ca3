"""Frames in: what the fake gateway's WebSocket side does with each frame a client sends.

:func:`on_message` records the frame, then answers it as docs/protocol.md §1 says: Heartbeat
→ ACK, Identify → READY (or the close the faults ask for), Resume → replay + RESUMED. It
decides by asking the pure books (:mod:`qqconn.testing.sessions`) and queues on the socket's
outbox; it never awaits.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from qqconn._log import get_logger
from qqconn.protocol import OpCode
from qqconn.testing.payloads import compact
from qqconn.testing.sessions import shard_id_of
from qqconn.testing.sockets import Socket

if TYPE_CHECKING:
    from qqconn.testing.ws import WebSocketSide

__all__ = ["on_message"]

log = get_logger("qqconn.testing")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def on_message(side: WebSocketSide, sock: Socket, message: str | bytes) -> None:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        msg = None
    op = msg.get("op") if isinstance(msg, dict) else None
    op = op if _is_int(op) else None
    side.record(sock, "in", op, message)
    if op == OpCode.HEARTBEAT:
        assert isinstance(msg, dict)
        side.heartbeats.append((time.monotonic(), msg.get("d")))
        sock.last_beat_at = time.monotonic()
    elif op == OpCode.IDENTIFY:
        sock.record.identify_count += 1
    elif op == OpCode.RESUME:
        sock.record.resume_count += 1

    if sock.closing or side.fault(sock, "silent"):
        return
    if not sock.hello_sent and side.fault(sock, "drop_early_frames"):
        sock.abort()
        return
    if not isinstance(msg, dict):
        side.close_with(sock, 4002)
    elif op == OpCode.HEARTBEAT:
        _on_heartbeat(side, sock, msg.get("d"))
    elif op == OpCode.IDENTIFY:
        _on_identify(side, sock, msg.get("d"))
    elif op == OpCode.RESUME:
        _on_resume(side, sock, msg.get("d"))
    else:
        side.close_with(sock, 4001)


def _on_heartbeat(side: WebSocketSide, sock: Socket, d: object) -> None:
    if d is not None and not _is_int(d):
        side.close_with(sock, 4002)
    elif side.fault(sock, "ack"):
        sock.enqueue_frame(compact({"op": OpCode.HEARTBEAT_ACK}), OpCode.HEARTBEAT_ACK)


def _auth_ok(side: WebSocketSide, sock: Socket, raw: object) -> bool:
    return side.gw._token_book.gateway_auth(
        raw, time.monotonic(), app_id=side.gw.app_id, legacy=side.fault(sock, "legacy_tokens")
    )


def _on_identify(side: WebSocketSide, sock: Socket, d: object) -> None:
    book = side.gw._book
    identify_close = side.fault(sock, "identify_close")
    if identify_close is not None:
        side.close_with(sock, identify_close)
        return
    if sock.session is not None:
        side.close_with(sock, 4005)
        return
    data = d if isinstance(d, dict) else {}
    if not _auth_ok(side, sock, data.get("token")):
        side.close_with(sock, 4004)
        return
    intents = book.intents_of(data)
    if intents is None:
        side.close_with(sock, 4013)
        return
    allowed = side.fault(sock, "allowed_intents")
    if allowed is not None and intents & ~allowed:
        payload = compact({"op": OpCode.INVALID_SESSION, "d": False})
        sock.enqueue_frame(payload, OpCode.INVALID_SESSION)
        side.close_with(sock, side.fault(sock, "intents_close_code"))
        return
    now = time.monotonic()
    shard = data.get("shard", [0, 1])
    shard_id = shard_id_of(shard) or 0
    why = book.start_refused(now, shard_id)
    if side.gw.faults.enforce_session_limit and why is not None:
        # Loudly: logged, kept for the test, and closed the way QQ refuses (4008).
        log.warning("fake_gateway.session_start_refused", shard=shard_id, why=why)
        book.refused_log.append((now, shard_id, why))
        side.close_with(sock, 4008)
        return
    session = book.create(now, shard=shard, intents=intents)
    side.attach(sock, session)
    ready = {
        "op": OpCode.DISPATCH,
        "s": session.seq,
        "t": "READY",
        "d": {
            "version": 1,
            "session_id": session.session_id,
            "user": {"id": side.gw.bot_user_id, "username": side.gw.bot_username, "bot": True},
            "shard": shard,
        },
    }
    sock.enqueue_frame(compact(ready), OpCode.DISPATCH)
    log.debug("fake_gateway.ready", index=sock.index, session_id=session.session_id)


def _on_resume(side: WebSocketSide, sock: Socket, d: object) -> None:
    mode = side.fault(sock, "resume")
    if sock.session is not None:
        side.close_with(sock, 4005)
        return
    if mode != "ok":
        _refuse_resume(side, sock, mode)
        return
    data = d if isinstance(d, dict) else {}
    if not _auth_ok(side, sock, data.get("token")):
        side.close_with(sock, 4004)
        return
    verdict = side.gw._book.judge_resume(data)
    if isinstance(verdict, int):
        side.close_with(sock, verdict)
        return
    session, seq = verdict
    side.attach(sock, session)
    for text in session.missed(seq):
        sock.enqueue_frame(text, OpCode.DISPATCH)
    resumed = {"op": OpCode.DISPATCH, "s": session.seq, "t": "RESUMED", "d": ""}
    sock.enqueue_frame(compact(resumed), OpCode.DISPATCH)
    log.debug("fake_gateway.resumed", index=sock.index, session_id=session.session_id)


def _refuse_resume(side: WebSocketSide, sock: Socket, mode: str) -> None:
    if mode == "op9":
        payload = compact({"op": OpCode.INVALID_SESSION, "d": False})
        sock.enqueue_frame(payload, OpCode.INVALID_SESSION)
    elif mode == "accept_then_close":
        side.close_with(sock, 1000)
    else:
        side.close_with(sock, int(mode))
